#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor(101))) static void main_ctor_101(void) { puts("main.o constructor 101"); }
__attribute__((constructor)) static void main_ctor(void) { puts("main.o constructor (default priority)"); }
__attribute__((destructor(101))) static void main_dtor_101(void) { puts("main.o destructor 101"); }
__attribute__((destructor)) static void main_dtor(void) { puts("main.o destructor (default priority)"); }

/* A linker-made array: GNU ld defines __start_/__stop_ of sections named like C identifiers. */
__attribute__((section("orc_registry"), used)) static const char *const registry_a = "registry entry a";
__attribute__((section("orc_registry"), used)) static const char *const registry_b = "registry entry b";
extern const char *const __start_orc_registry[];
extern const char *const __stop_orc_registry[];

static void at_exit_1(void) { puts("atexit handler 1"); }
static void at_exit_2(void) { puts("atexit handler 2"); }

int main(void) {
    atexit(at_exit_1);
    atexit(at_exit_2);
    puts("main");
    for (const char *const *entry = __start_orc_registry; entry < __stop_orc_registry; entry++) puts(*entry);
    return 7;
}
