/* A profiling timer's handler interrupts code that is allocating. Under a lazy JIT a
 * handler's first call would compile it inside the signal, needing the allocator's lock that
 * the interrupted malloc may hold: the JIT compiles a handler when it is installed. Eight
 * handlers, each installed and first run in turn, installed with signal and with sigaction. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static volatile sig_atomic_t ticks;

#define HANDLER(n) \
    static void on_prof_##n(int sig) { ticks += sig == SIGPROF ? 1 : 1000; } \
    static void on_prof_info_##n(int sig, siginfo_t *info, void *context) { \
        (void)context; \
        ticks += sig == SIGPROF && info->si_signo == SIGPROF ? 1 : 1000; \
    }
HANDLER(0) HANDLER(1) HANDLER(2) HANDLER(3)

static void (*const plain[])(int) = {on_prof_0, on_prof_1, on_prof_2, on_prof_3};
static void (*const with_info[])(int, siginfo_t *, void *) = {on_prof_info_0, on_prof_info_1, on_prof_info_2, on_prof_info_3};

static void churn(int rounds) {
    for (int i = 0; i < rounds; i++) {
        char *blocks[64];
        for (int j = 0; j < 64; j++) {
            blocks[j] = malloc(16 + (size_t)(i * 7 + j * 13) % 4000);
            memset(blocks[j], j, 16);
        }
        for (int j = 0; j < 64; j++) free(blocks[j]);
    }
}

static void until_ticks(int n) {
    ticks = 0;
    struct itimerval every = {{0, 100}, {0, 100}};
    setitimer(ITIMER_PROF, &every, NULL);
    while (ticks < n) churn(10);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, NULL);
}

int main(void) {
    for (int i = 0; i < 4; i++) {
        signal(SIGPROF, plain[i]);
        until_ticks(5);
        printf("handler %d installed with signal: ticks %s\n", i, ticks < 1000 ? "counted" : "wrong");
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = with_info[i];
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigaction(SIGPROF, &sa, NULL);
        until_ticks(5);
        printf("handler %d installed with sigaction: ticks %s\n", i, ticks < 1000 ? "counted" : "wrong");
    }
    return 0;
}
