/* A library that vforks, as CPython's _posixsubprocess extension does: its child calls the
 * program (JIT'd code, not called before) and writes a variable before it exits. */
#include <sys/wait.h>
#include <unistd.h>

int host_value(int x);

static int written_by_child;

int spawn_and_report(void) {
    pid_t pid = vfork();
    if (pid == 0) {
        written_by_child = 1;
        _exit(host_value(6));
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    return WEXITSTATUS(status) * 10 + written_by_child;
}
