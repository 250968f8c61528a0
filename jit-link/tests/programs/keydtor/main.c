/* A thread's pthread_key_create destructors run when it exits, after its thread-local
 * variables are destroyed (those of the JIT's own runtime too). Here one calls a function
 * nothing has called yet, which a lazy JIT compiles then (googletest's thread-local storage
 * does this). The two functions live in modules of their own, compiled apart. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_key_t key;
static int seen[4];

int first_called_at_thread_exit(int slot); /* at_exit.c */
int first_called_in_thread(int slot);      /* in_thread.c */

static void on_thread_exit(void *value) {
    int slot = *(int *)value;
    seen[slot] = first_called_at_thread_exit(slot);
}

static void *thread_main(void *arg) {
    int slot = *(int *)arg;
    pthread_setspecific(key, arg);
    /* Pauses let the JIT's idle workers fall asleep, so that its calls wait for them. */
    usleep(20000);
    long ret = first_called_in_thread(slot);
    usleep(20000);
    return (void *)ret;
}

int main(void) {
    pthread_key_create(&key, on_thread_exit);
    int slots[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        void *ret;
        pthread_create(&t, NULL, thread_main, &slots[i]);
        pthread_join(t, &ret);
        printf("thread %d returned %ld, its key destructor saw %d\n", i, (long)ret, seen[i]);
    }
    return 0;
}
