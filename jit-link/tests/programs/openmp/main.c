/* OpenMP from gcc -fopenmp: parallel loops with reductions, a thread-local counter per
 * worker, and the runtime's API, on four threads. The output does not depend on scheduling. */
#include <omp.h>
#include <stdio.h>

static __thread long mine;

int main(int argc, char **argv) {
    (void)argv;
    double sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(4) schedule(static)
    for (int i = 1; i <= 1000000; i++) {
        mine++;
        sum += 1.0 / ((double)i * i);
    }
    long counted = 0, threads = 0;
#pragma omp parallel num_threads(4) reduction(+ : counted, threads)
    {
        counted += mine;
        threads += omp_get_num_threads() == 4;
    }
    printf("sum %.12f, iterations %ld, threads agree %ld, args %d\n", sum, counted, threads, argc);
    return (int)(threads + argc);
}
