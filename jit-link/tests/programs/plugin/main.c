/* A program that loads a plugin with dlopen, as interpreters load their C modules: the plugin
 * calls the program's functions and uses its data (natively, the program is linked with
 * -Wl,--export-dynamic), and the program finds its own symbols with dlsym. argv[1] is the
 * plugin (plugin.c, built with clang -shared). */
#include <dlfcn.h>
#include <stdio.h>

int host_counter = 5;
const char host_name[] = "host";
__attribute__((visibility("hidden"))) int host_hidden = 7;

int host_add(int a, int b) { return a + b + host_counter; }

static void *self_symbol(const char *name) {
  void *self = dlopen(NULL, RTLD_NOW);
  return self ? dlsym(self, name) : NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: main PLUGIN\n");
    return 2;
  }
  /* Before any library is loaded: the program's own symbols, by name. */
  printf("dlsym(RTLD_DEFAULT, host_add) is host_add: %d\n", dlsym(RTLD_DEFAULT, "host_add") == (void *)host_add);
  printf("dlsym(self, host_counter) is &host_counter: %d\n", self_symbol("host_counter") == (void *)&host_counter);
  printf("hidden symbol found: %d\n", dlsym(RTLD_DEFAULT, "host_hidden") != NULL);
  printf("libc's puts found: %d\n", dlsym(RTLD_DEFAULT, "puts") == (void *)puts);

  void *plugin = dlopen(argv[1], RTLD_NOW);
  if (!plugin) {
    printf("dlopen failed: %s\n", dlerror());
    return 1;
  }
  /* The plugin's constructor ran host_add and bumped host_counter. */
  printf("counter after the plugin's constructor: %d\n", host_counter);
  int (*run)(int) = (int (*)(int))dlsym(plugin, "plugin_run");
  void *(*seen)(void) = (void *(*)(void))dlsym(plugin, "plugin_sees_host_add");
  const char *(*greet)(void) = (const char *(*)(void))dlsym(plugin, "plugin_greet");
  if (!run || !seen || !greet) {
    printf("dlsym failed: %s\n", dlerror());
    return 1;
  }
  printf("plugin_run(10) = %d\n", run(10));
  printf("counter after plugin_run: %d\n", host_counter);
  printf("the plugin's host_add is the program's: %d\n", seen() == (void *)host_add);
  printf("%s\n", greet());
  dlclose(plugin);
  return host_counter;
}
