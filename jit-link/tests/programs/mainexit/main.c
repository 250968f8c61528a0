/* main ends its own thread with pthread_exit: the process lives on while the other threads
 * run, and ends as exit(0) (atexit handlers, stdio flushed) when the last one exits. */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

static sem_t main_left;

static void bye(void) { printf("atexit handler\n"); }

static void *worker(void *arg) {
    sem_wait(&main_left);
    long sum = 0;
    for (long i = 0; i < (long)arg; i++) sum += i % 7;
    printf("worker done: %ld\n", sum);
    return NULL;
}

int main(void) {
    atexit(bye);
    sem_init(&main_left, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, worker, (void *)100000L);
    pthread_detach(t);
    printf("main ends its thread\n");
    fflush(stdout);
    sem_post(&main_left);
    pthread_exit(NULL);
}
