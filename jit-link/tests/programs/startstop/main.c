/* A command table filled by the objects that define commands, each entry in section "cmds",
 * walked between the linker's __start_cmds and __stop_cmds (GNU ld's encapsulation symbols),
 * as C plugin registries and Rust's linkme crate do. */
#include <stdio.h>

#include "cmd.h"

static int twice(int x) { return 2 * x; }
static int square(int x) { return x * x; }
CMD(twice, twice);
CMD(square, square);

extern const struct cmd __start_cmds[], __stop_cmds[];

/* Linked with more.c, as one graph when linked as objects: its strong banner takes the place
 * of this weak one, its more_count answers the weak reference, and it calls scale here. */
__attribute__((weak)) const char *banner(void) { return "main's banner"; }
extern int more_count(void) __attribute__((weak));
int scale(int x) { return 10 * x; }

/* Run in link order with the other objects' (between.c's, more.c's), also when the objects
 * of the table are linked as one graph; destructors in reverse. */
__attribute__((constructor)) static void hello(void) { puts("main.c: constructor"); }
__attribute__((destructor)) static void bye(void) { puts("main.c: destructor"); }

int main(void) {
    for (const struct cmd *c = __start_cmds; c < __stop_cmds; c++)
        printf("%s(7) = %d\n", c->name, c->fn(7));
    printf("%d commands\n", (int)(__stop_cmds - __start_cmds));
    printf("%s\n", banner());
    if (more_count)
        printf("more.c counts %d\n", more_count());
    return 0;
}
