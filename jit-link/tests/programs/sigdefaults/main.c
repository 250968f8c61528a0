/* The signal state a program starts with: SIGPIPE, SIGSEGV and SIGBUS at their default
 * actions and no alternate signal stack, so a write to a closed pipe and raise(SIGSEGV) kill,
 * and the programs it starts inherit the defaults. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *disposition(int sig) {
    struct sigaction old;
    sigaction(sig, NULL, &old);
    if (old.sa_handler == SIG_DFL) return "default";
    if (old.sa_handler == SIG_IGN) return "ignored";
    return "handled";
}

/* Runs `body` in a child and says how the child ended. */
static void in_child(const char *what, void (*body)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        body();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        printf("%s: killed by %s\n", what, strsignal(WTERMSIG(status)));
    else
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
}

static void write_to_closed_pipe(void) {
    int fds[2];
    if (pipe(fds) != 0) _exit(3);
    close(fds[0]);
    for (int i = 0; i < 1000; i++) write(fds[1], "x", 1);
    _exit(2); /* only if SIGPIPE did not kill */
}

static void raise_segv(void) {
    raise(SIGSEGV);
    _exit(2);
}

static void exec_shell(void) {
    /* An ignored signal stays ignored across exec: then the shell survives its own SIGPIPE. */
    execl("/bin/sh", "sh", "-c", "kill -PIPE $$; echo the shell ignores SIGPIPE", (char *)NULL);
    _exit(4);
}

int main(void) {
    printf("SIGPIPE %s, SIGSEGV %s, SIGBUS %s\n", disposition(SIGPIPE), disposition(SIGSEGV), disposition(SIGBUS));
    stack_t ss;
    sigaltstack(NULL, &ss);
    printf("alternate signal stack: %s\n", (ss.ss_flags & SS_DISABLE) ? "none" : "set");
    in_child("writing to a closed pipe", write_to_closed_pipe);
    in_child("raise(SIGSEGV)", raise_segv);
    in_child("a shell sending itself SIGPIPE", exec_shell);
    return 0;
}
