/* Thread-local variables stay readable as long as natively: in a thread's
 * pthread_key_create destructors, which run after its thread_local objects are destroyed,
 * and in the main thread's atexit handlers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

extern __thread int counter; /* other.c */
void bump(void);

static pthread_key_t key;
static int seen[2];

static void key_destructor(void *value) {
    int slot = *(int *)value;
    seen[slot] = counter;
}

static void *thread_main(void *value) {
    pthread_setspecific(key, value);
    bump();
    bump();
    return NULL;
}

static void at_exit(void) {
    printf("atexit handler: the main thread's counter is %d\n", counter);
}

int main(void) {
    pthread_key_create(&key, key_destructor);
    int slots[2] = {0, 1};
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        pthread_create(&t, NULL, thread_main, &slots[i]);
        pthread_join(t, NULL);
        printf("thread %d: its key destructor saw counter %d\n", i, seen[i]);
    }
    bump();
    atexit(at_exit);
    return 0;
}
