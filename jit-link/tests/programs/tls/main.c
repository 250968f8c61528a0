#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

extern __thread int shared_tls; /* defined in other.o: general dynamic, across objects */
__thread int main_tls = 100;     /* .tdata */
static __thread long main_static_tls; /* local dynamic */
int bump_shared(int by);
int *shared_tls_address(void);

struct result {
    int main_tls, shared;
    long static_tls;
    int same_address;
};

static void *worker(void *arg) {
    int id = (int)(long)arg;
    struct result *r = malloc(sizeof *r);
    for (int i = 0; i < 1000; i++) {
        main_tls++;
        main_static_tls += id;
        bump_shared(1);
    }
    r->main_tls = main_tls;
    r->shared = shared_tls;
    r->static_tls = main_static_tls;
    r->same_address = shared_tls_address() == &shared_tls;
    return r;
}

int main(void) {
    pthread_t threads[4];
    for (long i = 0; i < 4; i++) pthread_create(&threads[i], 0, worker, (void *)(i + 1));
    for (int i = 0; i < 4; i++) {
        struct result *r;
        pthread_join(threads[i], (void **)&r);
        printf("thread %d: main_tls=%d shared=%d static=%ld same_address=%d\n", i + 1, r->main_tls, r->shared,
               r->static_tls, r->same_address);
        free(r);
    }
    printf("main thread: main_tls=%d shared=%d static=%ld\n", main_tls, shared_tls, main_static_tls);
    return main_tls == 100 ? 0 : 1;
}
