/* Undefined behaviour that -fsanitize=undefined reports and recovers from: a signed
 * overflow in one function, a shift too large in main. The sanitizer's runtime, which a
 * native link adds, prints each report and the program goes on. */
#include <limits.h>
#include <stdio.h>

__attribute__((noinline)) int add(int a, int b) { return a + b; }

int main(int argc, char **argv) {
    (void)argv;
    int x = add(INT_MAX, argc);
    printf("x=%d\n", x);
    fflush(stdout);
    int s = 1 << (argc + 31);
    printf("s=%d\n", s);
    return 0;
}
