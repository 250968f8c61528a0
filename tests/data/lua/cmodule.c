/* A Lua C module, built as a shared library that calls the Lua API the interpreter defines
 * (functions, and `lua_ident`, a data symbol): arithmetic, strings, a userdata type with a
 * metatable, and calls from C back into Lua. */
#include <string.h>

#include "lauxlib.h"
#include "lua.h"

typedef struct {
  double x, y;
} Vec;

static int add(lua_State *L) {
  lua_pushinteger(L, luaL_checkinteger(L, 1) + luaL_checkinteger(L, 2));
  return 1;
}

static int greet(lua_State *L) {
  lua_pushfstring(L, "hello %s, %d times", luaL_checkstring(L, 1), (int)luaL_optinteger(L, 2, 1));
  return 1;
}

/* map(t, f): a new table of f(v) for each v in t, calling back into Lua. */
static int map(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_Integer n = luaL_len(L, 1);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushvalue(L, 2);
    lua_geti(L, 1, i);
    lua_call(L, 1, 1);
    lua_seti(L, -2, i);
  }
  return 1;
}

static int vec_new(lua_State *L) {
  Vec *v = lua_newuserdatauv(L, sizeof(Vec), 0);
  v->x = luaL_checknumber(L, 1);
  v->y = luaL_checknumber(L, 2);
  luaL_setmetatable(L, "cmodule.Vec");
  return 1;
}

static int vec_add(lua_State *L) {
  Vec *a = luaL_checkudata(L, 1, "cmodule.Vec");
  Vec *b = luaL_checkudata(L, 2, "cmodule.Vec");
  lua_pushnumber(L, a->x + b->x);
  lua_pushnumber(L, a->y + b->y);
  lua_pushcfunction(L, vec_new);
  lua_insert(L, -3);
  lua_call(L, 2, 1);
  return 1;
}

static int vec_tostring(lua_State *L) {
  Vec *v = luaL_checkudata(L, 1, "cmodule.Vec");
  lua_pushfstring(L, "(%f, %f)", v->x, v->y);
  return 1;
}

static const luaL_Reg functions[] = {{"add", add}, {"greet", greet}, {"map", map}, {"vec", vec_new}, {NULL, NULL}};

int luaopen_cmodule(lua_State *L) {
  luaL_newmetatable(L, "cmodule.Vec");
  lua_pushcfunction(L, vec_add);
  lua_setfield(L, -2, "__add");
  lua_pushcfunction(L, vec_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, functions);
  lua_pushboolean(L, strstr(lua_ident, "Lua") != NULL);
  lua_setfield(L, -2, "ident_ok");
  return 1;
}
