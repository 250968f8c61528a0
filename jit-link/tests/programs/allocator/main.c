/* A program that defines malloc and free (wrapping glibc's own), as programs with their own
 * allocator do. Natively every library uses them too; under a JIT only JIT'd code can, and
 * orcjit warns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
static int allocations;
void *malloc(size_t n) { allocations++; return __libc_malloc(n); }
void free(void *p) { __libc_free(p); }
int main(void) {
  char *a = malloc(10);
  strcpy(a, "hi");
  char *b = strdup("copied by libc");
  printf("%s %s\n", a, b);
  free(a);
  free(b);
  printf("allocations seen: %d\n", allocations > 0);
  return 0;
}
