/* Arithmetic: recursion, mutual recursion with table.c, four of the per-thread tasks. */
#include "lazy_threads.h"

uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0x100000001b3ull;
}

uint64_t fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

uint64_t gcd(uint64_t a, uint64_t b) { return b == 0 ? a : gcd(b, a % b); }

unsigned collatz_steps(uint64_t n) {
    unsigned steps = 0;
    while (n != 1) {
        n = (n & 1) ? 3 * n + 1 : n / 2;
        steps++;
    }
    return steps;
}

int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }

uint64_t task0(uint64_t x) { return fib((unsigned)(x % 20)) + 1; }
uint64_t task1(uint64_t x) { return gcd(x * 3 + 7, 1001) * 17 + apply_op(1, x, 5); }
uint64_t task2(uint64_t x) { return collatz_steps(x + 27) + task0(x + 1); }
uint64_t task3(uint64_t x) { return mix(x, 3) ^ (uint64_t)is_even((unsigned)x); }
