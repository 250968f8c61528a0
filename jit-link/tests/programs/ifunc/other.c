/* Calls main.c's indirect function, and defines one whose first call races from threads. */
int scale(int x);
int (*scale_seen_by_other)(int) = scale;

static int add_one_impl(int x) { return x + 1; }
static void *pick_add_one(void) { return (void *)add_one_impl; }
int add_one(int x) __attribute__((ifunc("pick_add_one")));

int other_calls(int x) { return scale(add_one(x)); }
