/* Data larger than any JIT memory reservation (at most 2 GiB): a 5 GiB zero-filled array,
 * which only the medium and large code models allow (x86-64 psABI: large data sections,
 * `.lbss`, reached through 64-bit addresses). Beside it, initialized large data that points
 * at code and into the array, and a read-only table, so the linker relocates and protects
 * data placed apart. Only the pages touched become memory, as in a native run. */
#include <stdio.h>
#include <string.h>

#define HUGE (5UL << 30)
static char huge[HUGE];
/* Larger than the medium model's large-data threshold (64 KiB), so in `.ldata` there too. */
static long steps[16384] = {1, 2, 3};
static const int primes[8] = {2, 3, 5, 7, 11, 13, 17, 19};

static int square(int x) { return x * x; }
int (*volatile op)(int) = square;
char *volatile last = &huge[HUGE - 1];

int main(int argc, char **argv) {
    (void)argv;
    unsigned long step = HUGE / 64;
    for (unsigned long i = 0; i < HUGE; i += step)
        huge[i] = (char)(i / step + argc);
    *last = 42;
    long sum = 0;
    for (unsigned long i = 0; i < HUGE; i += step)
        sum += huge[i];
    steps[16383] = sum;
    printf("sum %ld last %d square %d primes %d steps %ld size %lu GiB\n", sum, huge[HUGE - 1], op(primes[7]),
           primes[0] + primes[7], steps[0] + steps[2] + steps[16383], sizeof huge >> 30);
    return 0;
}
