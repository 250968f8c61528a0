-- Loads the C module tests/data/lua/cmodule.c (built into the directory given as the first
-- argument) with require, and uses it.
package.cpath = (...) .. "/?.so"
local m = require("cmodule")
print("ident", m.ident_ok)
print("add", m.add(40, 2))
print("greet", m.greet("orcjit", 3))
print("map", table.concat(m.map({1, 2, 3, 4}, function(x) return x * x end), ","))
print("vec", tostring(m.vec(1, 2) + m.vec(0.5, 0.25)))
local ok, err = pcall(m.add, "x", 1)
print("error", ok, (err:gsub("^.-:%d+: ", "")))
print("same module", require("cmodule") == m)
