/* Module A takes the addresses of functions of A (one of them static), of B and of main, in
 * code and in static data. */
#include "lazy_pointers.h"

int f(int x) { return x * 3 + 1; }
int a_fn(int x) { return x - 7; }
static int a_hidden(int x) { return (x ^ 0x55) + 2; }

fn get_f(void) { return f; }
fn get_a_hidden(void) { return a_hidden; }

/* Not const: the compiler must not fold comparisons with its entries. */
fn a_table[FUNCTIONS] = {f, a_fn, a_hidden, b_fn, main_fn};

fn a_code_pointer(int i) {
    if (i == 0) return f;
    if (i == 1) return a_fn;
    if (i == 2) return a_hidden;
    if (i == 3) return b_fn;
    return main_fn;
}
