/* A profiling-timer handler that calls functions the program never calls elsewhere, one new
 * one on each tick (through a table, and along a direct chain), while the program allocates
 * all the time: under a lazy JIT each would be compiled on its first call, inside the
 * handler, which may have interrupted malloc holding its lock. Installing the handler must
 * compile what it can reach first. Installed with sigaction, or (sysv.c) the System V way,
 * with __sysv_signal (what C11's `signal` is), which the handler repeats on each tick; the
 * action is reset when the signal arrives, so there the timer is armed for one tick at a time,
 * once the last one is handled. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define TICKS 64

static volatile sig_atomic_t ticks;
static volatile long acc;

#define HELPER(i) \
    __attribute__((noinline)) void helper##i(void) { acc += (i + 1) * (long)ticks; }
#define EIGHT(a) HELPER(a##0) HELPER(a##1) HELPER(a##2) HELPER(a##3) HELPER(a##4) HELPER(a##5) HELPER(a##6) HELPER(a##7)
EIGHT(1) EIGHT(2) EIGHT(3) EIGHT(4) EIGHT(5) EIGHT(6) EIGHT(7) EIGHT(8)
#define LIST(a) helper##a##0, helper##a##1, helper##a##2, helper##a##3, helper##a##4, helper##a##5, helper##a##6, helper##a##7
static void (*const helpers[TICKS])(void) = {LIST(1), LIST(2), LIST(3), LIST(4), LIST(5), LIST(6), LIST(7), LIST(8)};

__attribute__((noinline)) static void leaf(int t) { acc += t % 7; }
__attribute__((noinline)) static void middle(int t) { leaf(t + 1); }

static void on_tick(int sig) {
#ifdef SYSTEM_V
    __sysv_signal(sig, on_tick);
#endif
    (void)sig;
    int t = ticks;
    /* A tick after the last one, before main turns the timer off, counts nothing: the timer
     * counts the process's CPU time, a JIT's compiler threads' too, so under a JIT compiling
     * in the background the next tick may be pending already when the last handler returns. */
    if (t >= TICKS) return;
    helpers[t]();
    middle(t);
    ticks = t + 1;
}

int main(void) {
#ifdef SYSTEM_V
    __sysv_signal(SIGPROF, on_tick);
#else
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, 0);
#endif
#ifdef SYSTEM_V
    struct itimerval every = {{0, 0}, {0, 500}};
    int armed = 0;
#else
    struct itimerval every = {{0, 500}, {0, 500}};
#endif
    setitimer(ITIMER_PROF, &every, 0);
    long total = 0;
    while (ticks < TICKS) {
#ifdef SYSTEM_V
        if (ticks > armed) {
            armed = ticks;
            setitimer(ITIMER_PROF, &every, 0);
        }
#endif
        char *p = malloc(100 + (total & 1023));
        memset(p, 1, 64);
        total += p[3];
        free(p);
        free(malloc(5000));
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, 0);
    printf("%d ticks, acc %ld\n", TICKS, acc);
    return 0;
}
