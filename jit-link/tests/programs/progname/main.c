/* What a program knows of its own name and arguments, the way an exec of it would leave them:
 * argv (kept past main, read by an atexit handler), the name libc's err/warn/error print, and
 * glibc's program_invocation_name and program_invocation_short_name. */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char **saved_argv;
static int saved_argc;

static void report(void) {
    for (int i = 0; i < saved_argc; i++) printf("at exit: argv[%d] = %s\n", i, saved_argv[i]);
    printf("at exit: argv[%d] is %s\n", saved_argc, saved_argv[saved_argc] ? "set" : "NULL");
}

int main(int argc, char **argv) {
    saved_argv = argv;
    saved_argc = argc;
    atexit(report);
    printf("name is argv[0]: %d\n", strcmp(program_invocation_name, argv[0]) == 0);
    const char *slash = strrchr(argv[0], '/');
    printf("short name is its last part: %d\n", strcmp(program_invocation_short_name, slash ? slash + 1 : argv[0]) == 0);
    fflush(stdout);
    errno = ENOENT;
    warn("warn");
    warnx("warnx");
    error(0, EACCES, "error(%d)", argc);
    return 0;
}
