/* fork(): the child gets copies of the parent's variables (globals, statics, thread-locals
 * and .bss), not the same memory; and the child runs functions the parent has not called
 * yet (which a lazy JIT compiles in the child, where the parent's threads do not exist). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int counter = 1;
static int hidden;
static char buffer[64] = "parent";
static __thread int per_thread = 5;

int bump(int by);
int only_in_child(int x);

int main(int argc, char **argv) {
    (void)argv;
    counter += bump(argc);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        counter = 42;
        hidden = 9;
        per_thread = 77;
        strcpy(buffer, "child");
        printf("child: %d %d %d %s %d\n", counter, hidden, per_thread, buffer, only_in_child(counter));
        fflush(stdout);
        _exit(only_in_child(3) % 100);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("parent: %d %d %d %s, child exited %d\n", counter, hidden, per_thread, buffer, WEXITSTATUS(status));
    return 0;
}
