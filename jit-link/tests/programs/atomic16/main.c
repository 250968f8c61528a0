/* 16-byte atomics, which x86-64 code without -mcx16 leaves to libatomic (__atomic_load_16,
 * __atomic_store_16, __atomic_compare_exchange_16), from two threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

typedef struct {
    long count, sum;
} pair;

static _Atomic pair shared;

static void *add(void *arg) {
    for (long i = 1; i <= 10000; i++) {
        pair old = atomic_load(&shared), new;
        do {
            new.count = old.count + 1;
            new.sum = old.sum + i * (long)arg;
        } while (!atomic_compare_exchange_weak(&shared, &old, new));
    }
    return NULL;
}

int main(void) {
    atomic_store(&shared, ((pair){0, 0}));
    pthread_t a, b;
    pthread_create(&a, NULL, add, (void *)1);
    pthread_create(&b, NULL, add, (void *)2);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pair end = atomic_load(&shared);
    printf("count %ld, sum %ld\n", end.count, end.sum);
    return end.count == 20000 ? 0 : 1;
}
