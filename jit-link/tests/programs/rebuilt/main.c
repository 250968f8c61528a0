/* Rewrites the static library it was linked with (argv[1]) the way GNU ar rebuilds one: in
   place, shorter (ar opens it with O_TRUNC). Then calls, for the first time, a function that
   needs what only a member of that library defines: a lazy JIT compiles the function and links
   the member only now, from the bytes it read at the start. */
#include <stdio.h>
#include <unistd.h>

int late_value(int x);

__attribute__((noinline)) int use_late(int x) { return late_value(x); }

int main(int argc, char **argv) {
  if (argc < 2 || truncate(argv[1], 8) != 0) {
    perror("truncate");
    return 2;
  }
  printf("late %d\n", use_late(42));
  return 0;
}
