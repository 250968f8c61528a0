/* A table of this module's static functions, and the table of per-thread tasks (addresses of
 * functions in arith.c and here, in static data). */
#include "lazy_threads.h"

static uint64_t op_add(uint64_t a, uint64_t b) { return a + b; }
static uint64_t op_mul(uint64_t a, uint64_t b) { return a * b + 1; }
static uint64_t op_xor(uint64_t a, uint64_t b) { return (a ^ b) * 7; }
static uint64_t op_rot(uint64_t a, uint64_t b) { return (a << (b & 31)) | (a >> (64 - (b & 31) - 1)); }
static uint64_t op_fib(uint64_t a, uint64_t b) { return fib((unsigned)((a + b) % 16)); }
static uint64_t op_gcd(uint64_t a, uint64_t b) { return gcd(a + 100, b * 6); }

static uint64_t (*const ops[OPS])(uint64_t, uint64_t) = {op_add, op_mul, op_xor, op_rot, op_fib, op_gcd};

uint64_t apply_op(unsigned op, uint64_t a, uint64_t b) { return ops[op % OPS](a, b); }

int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }

uint64_t task4(uint64_t x) { return apply_op((unsigned)x, x, x + 1) + 4; }
uint64_t task5(uint64_t x) { return task3(x) + task1(x / 2); }
uint64_t task6(uint64_t x) { return (uint64_t)is_odd((unsigned)x * 3) + collatz_steps(x + 1) * 11; }
uint64_t task7(uint64_t x) { return x < 2 ? 1 : x * task7(x - 1) % 1000003; }

task_fn const per_thread[THREADS] = {task0, task1, task2, task3, task4, task5, task6, task7};
