/* The built-in demo program of `orcjit` (no arguments): two modules, compiled on the pool
 * when first needed, calling each other and libc. Regenerate the .ll files with:
 *   clang-19 -S -emit-llvm -O1 -fPIC demo_main.c demo_lib.c */
#include <stdio.h>

int is_prime(int n);
long fib(int n);

int main(void) {
  int count = 0, last = 0;
  for (int i = 2; i < 20000; i++)
    if (is_prime(i)) { count++; last = i; }
  printf("orcjit: compiled two LLVM IR modules on a thread pool, linked them, and ran main:\n");
  printf("  %d primes below 20000, the largest %d\n", count, last);
  printf("  fib(40) = %ld\n", fib(40));
  return 0;
}
