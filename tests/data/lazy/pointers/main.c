/* Compares the addresses modules A, B and main take of the same functions, uses them as keys
 * of a table, and calls through each. */
#include <stdint.h>
#include <stdio.h>
#include "lazy_pointers.h"

int main_fn(int x) { return x + 1000; }

static const char *const names[FUNCTIONS] = {"f", "a_fn", "a_hidden", "b_fn", "main_fn"};

/* A tiny map from function pointer to a count: equal pointers share a key. */
static fn keys[64];
static int counts[64];
static int nkeys;

static void count(fn p) {
    for (int i = 0; i < nkeys; i++)
        if (keys[i] == p) {
            counts[i]++;
            return;
        }
    keys[nkeys] = p;
    counts[nkeys++] = 1;
}

int main(void) {
    b_fill();
    fn mine[FUNCTIONS] = {f, a_fn, get_a_hidden(), b_fn, main_fn};
    int status = 0;
    for (int i = 0; i < FUNCTIONS; i++) {
        fn seen[6] = {a_table[i], b_table[i], a_code_pointer(i), b_code_pointer(i), mine[i], 0};
        seen[5] = i == 0 ? get_f() : i == 2 ? get_a_hidden() : mine[i];
        int equal = 1;
        for (int k = 1; k < 6; k++) equal &= seen[k] == seen[0];
        int sum = 0;
        for (int k = 0; k < 6; k++) {
            count(seen[k]);
            sum += seen[k](i + 10);
        }
        printf("%-8s all six pointers equal: %d; calls through them: %d\n", names[i], equal, sum);
        status += !equal;
    }
    printf("distinct keys: %d;", nkeys);
    for (int i = 0; i < nkeys; i++) printf(" %d", counts[i]);
    printf("\n");
    /* Equal pointers are the same integer too (hashable, orderable). */
    int ordered = (uintptr_t)a_table[0] == (uintptr_t)get_f() && !((uintptr_t)a_table[1] < (uintptr_t)b_table[1]) &&
                  !((uintptr_t)a_table[1] > (uintptr_t)b_table[1]);
    printf("as integers: %d\n", ordered);
    return status * 10 + nkeys;
}
