/* pthread_atfork and at_quick_exit, which glibc keeps in libc_nonshared.a (they pass the
 * caller's __dso_handle on to __register_atfork and __cxa_at_quick_exit), so a JIT must
 * define them. Handlers registered from two objects run in POSIX order: prepare handlers
 * most recent first, parent and child handlers in the order registered. quick_exit runs the
 * at_quick_exit handlers, most recent first, and not the atexit ones; it does not flush stdio. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char trail[256];
void note(const char *what) { strncat(trail, what, sizeof trail - strlen(trail) - 1); }

void register_other_handlers(void);
void say(const char *line);

static void prepare_main(void) { note("prepare-main "); }
static void parent_main(void) { note("parent-main "); }
static void child_main(void) { note("child-main "); }
static void quick_main(void) { say("quick exit handler of main"); }
static void at_exit_main(void) { say("atexit handler: must not run on quick_exit"); }

int main(int argc, char **argv) {
    (void)argv;
    register_other_handlers();
    if (pthread_atfork(prepare_main, parent_main, child_main) != 0) return 10;
    if (pthread_atfork(NULL, NULL, NULL) != 0) return 11;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 12;
    if (pid == 0) {
        printf("child: %s\n", trail);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("parent: %s(child status %d)\n", trail, WEXITSTATUS(status));
    if (at_quick_exit(quick_main) != 0 || atexit(at_exit_main) != 0) return 13;
    printf("quick_exit(%d)\n", argc + 1);
    fflush(stdout);
    quick_exit(argc + 1);
}
