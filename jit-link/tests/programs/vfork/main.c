/* vfork(), as CPython's subprocess uses it: the child runs functions the parent has not
 * called yet (which a lazy JIT compiles in the child) before it execs or exits. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int first_called_in_child(int x);
const char *exec_argument(void);

static int wait_for(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void) {
    fflush(stdout);
    pid_t pid = vfork();
    if (pid < 0) {
        perror("vfork");
        return 1;
    }
    if (pid == 0) _exit(first_called_in_child(6));
    printf("child exited %d\n", wait_for(pid));

    fflush(stdout);
    pid = vfork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", exec_argument(), (char *)NULL);
        _exit(127);
    }
    printf("exec'd child exited %d\n", wait_for(pid));
    printf("parent: %d\n", first_called_in_child(2));
    return 0;
}
