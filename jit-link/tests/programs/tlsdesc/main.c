/* TLS descriptors (-mtls-dialect=gnu2): variables read from regs.s through their descriptors
 * must leave every register but %rax as it was, in the main thread and in new ones. In each
 * thread the first access to each module is regs.s's: the resolver then calls into the
 * runtime, which allocates the thread's block and copies the template (other.c's is 8 KiB:
 * copied with vector registers). C code reads the variables through descriptors too. */
#include <pthread.h>
#include <stdio.h>

__thread int counter = 7;
extern __thread int counter_avx;
int filler_sum(void);
unsigned long tlsdesc_keeps_registers(int *value);
unsigned long tlsdesc_keeps_registers_avx(int *value);
int cpu_has_avx(void);

static void check(const char *who) {
    int value = 0;
    unsigned long changed = tlsdesc_keeps_registers(&value);
    printf("%s: value %d, registers changed %#lx\n", who, value, changed);
    if (cpu_has_avx()) {
        changed = tlsdesc_keeps_registers_avx(&value);
    } else {
        changed = 0; /* Neither run checks the upper halves: the same output. */
        value = counter_avx;
    }
    printf("%s (avx): value %d, registers changed %#lx\n", who, value, changed);
}

static void *thread(void *arg) {
    check(arg == (void *)1 ? "thread 1" : "thread 2");
    counter += (int)(long)arg;
    counter_avx -= (int)(long)arg;
    printf("thread %ld: %d %d %d\n", (long)arg, counter, counter_avx, filler_sum());
    return NULL;
}

int main(void) {
    check("main");
    pthread_t t;
    pthread_create(&t, NULL, thread, (void *)1);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, thread, (void *)2);
    pthread_join(t, NULL);
    counter_avx += 5;
    check("main again");
    return counter + counter_avx;
}
