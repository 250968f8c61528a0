/* Eight threads start together (a barrier) and call functions of every module: the same ones
 * from all threads, one of their own each, through pointers and recursion. */
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include "lazy_threads.h"

static pthread_barrier_t start;
static uint64_t results[THREADS][5];

static void *worker(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    pthread_barrier_wait(&start);
    uint64_t h = 1469598103934665603ull;
    for (unsigned i = 0; i < 300; i++) {
        h = mix(h, fib(8 + (i + id) % 10));
        h = mix(h, gcd(id * 7919 + i * 31 + 1, 1234567));
        h = mix(h, collatz_steps(i + id + 1));
        h = mix(h, apply_op((i + id) % OPS, i, id + 1));
        h = mix(h, (uint64_t)is_even(i + id));
        h = mix(h, per_thread[(i + id) % THREADS](i));
    }
    results[id][0] = h;
    results[id][1] = per_thread[id](id + 3);
    results[id][2] = sort_and_hash(id);
    results[id][3] = (uint64_t)evaluate(expressions[id]);
    results[id][4] = per_thread[THREADS - 1 - id](fib(id + 5));
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    for (unsigned i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)i) != 0) {
            perror("pthread_create");
            return 100;
        }
    }
    for (unsigned i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    uint64_t all = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        printf("thread %u: %016llx %llu %016llx %ld %llu\n", i, (unsigned long long)results[i][0],
               (unsigned long long)results[i][1], (unsigned long long)results[i][2], (long)results[i][3],
               (unsigned long long)results[i][4]);
        for (unsigned k = 0; k < 5; k++) all = mix(all, results[i][k]);
    }
    printf("all %016llx\n", (unsigned long long)all);
    return (int)(all % 97) + 3;
}
