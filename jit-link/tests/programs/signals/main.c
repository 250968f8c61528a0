/* Process-directed signals (a timer's SIGALRM, a child's SIGCHLD) reach the program's own
 * thread, as natively, not a thread of the JIT: handlers compiled on their first call (a
 * lazy JIT compiles them when the signal arrives) and handlers that look at which thread
 * runs them. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, children, foreign;
static pthread_t main_thread;

static void on_alarm(int sig) {
    (void)sig;
    ticks++;
    if (!pthread_equal(pthread_self(), main_thread)) foreign++;
}

static void on_child(int sig) {
    (void)sig;
    children++;
    if (!pthread_equal(pthread_self(), main_thread)) foreign++;
}

int main(void) {
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, 0);

    struct itimerval every = {{0, 500}, {0, 5000}};
    setitimer(ITIMER_REAL, &every, 0);
    unsigned long work = 0;
    while (ticks < 100) {
        for (int i = 0; i < 100; i++) {
            char *p = malloc(32 + i);
            p[0] = (char)i;
            work += (unsigned char)p[0];
            free(p);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);

    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    while (!children) sigsuspend(&old);
    sigprocmask(SIG_SETMASK, &old, 0);
    waitpid(pid, 0, 0);
    printf("ticks %s, children %d, on other threads %d, work %s\n", ticks >= 100 ? ">= 100" : "< 100", children,
           foreign, work > 0 ? "done" : "none");
    return 0;
}
