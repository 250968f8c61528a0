/* Calls rarely() only with more than three arguments: static speculation compiles it ahead
 * anyway, and its compile fails (it calls a function nothing defines). */
#include <stdio.h>

int rarely(int n);

static int often(int n) { return n * n + 1; }

int main(int argc, char **argv) {
    (void)argv;
    int total = 0;
    for (int i = 0; i < 10; i++) total += often(i);
    if (argc > 3) total += rarely(argc);
    printf("total %d\n", total);
    return 0;
}
