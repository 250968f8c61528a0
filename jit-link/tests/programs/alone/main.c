/* A program that must find itself alone in its process, as natively: it counts its threads
 * (as Google Test's death tests do before they fork) in a constructor, in main, in a forked
 * child and at exit, and creates a user namespace, which the kernel refuses to a process of
 * several threads. It also asks dlsym for a function of an object nothing else refers to. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int threads(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

__attribute__((constructor)) static void ctor(void) { printf("constructor: %d thread(s)\n", threads()); }

static void at_exit(void) { printf("at exit: %d thread(s)\n", threads()); }

int main(void) {
    atexit(at_exit);
    printf("main: %d thread(s)\n", threads());
    int (*late)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "late_value");
    printf("late_value: %d, then %d thread(s)\n", late ? late(20) : -1, threads());
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("child: %d thread(s)\n", threads());
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    /* EINVAL means "several threads"; a kernel or sandbox that forbids user namespaces
     * answers EPERM or ENOSPC to a native build as well. */
    int r = unshare(CLONE_NEWUSER);
    printf("unshare(CLONE_NEWUSER): %s\n", r == 0 ? "ok" : errno == EINVAL ? "EINVAL" : "refused");
    return 0;
}
