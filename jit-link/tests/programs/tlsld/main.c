#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "tls.h"

static __thread int calls; /* this object's own, local-dynamic too */

static void *worker(void *arg) {
    long id = (long)arg;
    snprintf(name, sizeof name, "worker%ld", id);
    for (int i = 0; i <= id * 10; i++) {
        count(i);
        calls++;
    }
    hits += 1000;
    /* Read back through the other object, in this thread: its own copies. */
    return (void *)(value(name) * 100 + calls);
}

int main(int argc, char **argv) {
    (void)argv;
    pthread_t threads[4];
    for (long i = 0; i < 4; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
    long sum = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(threads[i], &r);
        printf("worker%d: %ld\n", i, (long)r);
        sum += (long)r;
    }
    strcpy(name, "main");
    count(argc);
    printf("threads %ld, main: hits %d total %ld calls %d\n", sum, hits, total, calls);
    return (int)(report(name) % 10);
}

__attribute__((constructor)) static void ctor(void) { puts("main"); }
