/* Built natively as a shared library; every host_* symbol is the program's (main.c). */
#include <stdio.h>

extern int host_counter;
extern const char host_name[];
int host_add(int a, int b);

static char greeting[64];

__attribute__((constructor)) static void plugin_init(void) { host_counter = host_add(host_counter, 1); }

int plugin_run(int x) {
  host_counter += 1;
  return host_add(x, 100);
}

void *plugin_sees_host_add(void) { return (void *)host_add; }

const char *plugin_greet(void) {
  snprintf(greeting, sizeof greeting, "hello %s from the plugin", host_name);
  return greeting;
}
