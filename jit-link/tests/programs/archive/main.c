/* A program linked against a static library (libparts.a of square.c, chain_a.c, chain_b.c,
 * dup.c, broken.c): only members that define a symbol something needs are linked, as a
 * static linker pulls them; chain_b.o is needed only by chain_a.o. dup.o defines a name main
 * defines too and broken.o calls a function that exists nowhere: neither is needed, so
 * neither is linked, and neither is an error. */
#include <stdio.h>

int square(int x);
int chain_a(int x);
int parts_counter;

int dup_name(void) { return 1; }

int main(int argc, char **argv) {
    (void)argv;
    parts_counter = argc;
    printf("square %d, chain %d, dup %d, counter %d\n", square(7), chain_a(3), dup_name(), parts_counter);
    return 0;
}
