#include <stdio.h>
#include <string.h>

#include "common.h"

/* Weak here, strong in lib.c: the strong one wins in both linkers. */
__attribute__((weak)) int weak_value(void) { return 1; }

static int local_helper(int x) { return x * 3; }

static const char *greeting = "hello from main.o";

int main(int argc, char **argv) {
    (void)argv;
    printf("%s (argc=%d)\n", greeting, argc);
    printf("add=%d apply=%d\n", add(2, 3), apply(add, 4, 5));
    printf("function pointers equal across objects: %d %d\n", get_add() == add, table_of_functions()[0] == add);
    for (int i = 0; i < 5; i++) bump();
    printf("counter=%d names=%s,%s,%s\n", counter, names[0], names[1], names[2]);
    printf("origin=%d,%d\n", origin.x, origin.y);
    printf("sum=%ld\n", sum_array(table, 4));
    shared_common = 9;
    printf("weak=%d local=%d strlen=%zu common=%d\n", weak_value(), local_helper(7), strlen(names[2]), shared_common);
    return counter + 3;
}
