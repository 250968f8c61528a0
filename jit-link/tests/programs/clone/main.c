/* clone() with only SIGCHLD makes a copy of the process, as fork does, but runs no fork
 * handlers (googletest's "threadsafe" death tests start their children so). The child calls
 * a function nothing has called yet, which a lazy JIT compiles in the child. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int atfork_ran;
static void in_child(void) { atfork_ran = 1; }

int first_called_in_child(int x) { return x * 3 + atfork_ran; }

static int child_main(void *arg) {
    int value = *(int *)arg;
    printf("child: %d\n", first_called_in_child(value));
    fflush(stdout);
    return 7;
}

int main(void) {
    pthread_atfork(NULL, NULL, in_child);
    static char stack[256 * 1024];
    int value = 14;
    fflush(stdout);
    pid_t pid = clone(child_main, stack + sizeof stack, SIGCHLD, &value);
    if (pid < 0) {
        perror("clone");
        return 1;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("parent: child exited %d, atfork handler ran here: %d\n", WEXITSTATUS(status), atfork_ran);
    return 0;
}
