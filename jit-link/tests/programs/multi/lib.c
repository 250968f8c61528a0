#include "common.h"

int counter;
const char *names[3] = {"alpha", "beta", "gamma"};
struct point origin = {3, -4};
long table[4] = {10, 20, 30, 40};

int add(int a, int b) { return a + b; }
int apply(int (*fn)(int, int), int a, int b) { return fn(a, b) * 2; }
int (*get_add(void))(int, int) { return add; }

static int (*const functions[2])(int, int) = {add, 0};
int (*const *table_of_functions(void))(int, int) { return functions; }

void bump(void) { counter += 2 + shared_common; }
int weak_value(void) { return 42; }

long sum_array(const long *a, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}
