/* Calls into the Rust static library of lib.rs (see there). */
#include <stdio.h>
#include <stdint.h>
unsigned rs_word_counts(const char *);
uint64_t rs_threads(unsigned);
int rs_catch_panic(int);
int main(void) {
  printf("distinct %u\n", rs_word_counts("the cat saw the dog and the cat ran"));
  fflush(stdout);
  printf("threads %llu\n", (unsigned long long)rs_threads(4));
  printf("catch %d %d\n", rs_catch_panic(1), rs_catch_panic(5));
  return 0;
}
