/* Module B takes the same addresses: in code, in static data, and the static function of A
 * through A's getter. */
#include "lazy_pointers.h"

int b_fn(int x) { return x * x - 5; }

fn b_table[FUNCTIONS] = {f, a_fn, 0, b_fn, main_fn};

void b_fill(void) { b_table[2] = get_a_hidden(); }

fn b_code_pointer(int i) {
    if (i == 0) return f;
    if (i == 1) return a_fn;
    if (i == 2) return get_a_hidden();
    if (i == 3) return b_fn;
    return main_fn;
}
