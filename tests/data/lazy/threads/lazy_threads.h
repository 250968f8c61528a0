/* What the modules of the threads program share. */
#include <stdint.h>

#define THREADS 8
#define OPS 6

typedef uint64_t (*task_fn)(uint64_t);

/* arith.c */
uint64_t mix(uint64_t h, uint64_t v);
uint64_t fib(unsigned n);
uint64_t gcd(uint64_t a, uint64_t b);
unsigned collatz_steps(uint64_t n);
int is_even(unsigned n);
uint64_t task0(uint64_t x);
uint64_t task1(uint64_t x);
uint64_t task2(uint64_t x);
uint64_t task3(uint64_t x);

/* table.c */
extern task_fn const per_thread[THREADS];
uint64_t apply_op(unsigned op, uint64_t a, uint64_t b);
int is_odd(unsigned n);
uint64_t task4(uint64_t x);
uint64_t task5(uint64_t x);
uint64_t task6(uint64_t x);
uint64_t task7(uint64_t x);

/* text.c */
uint64_t sort_and_hash(unsigned seed);
long evaluate(const char *expression);
extern const char *const expressions[THREADS];
