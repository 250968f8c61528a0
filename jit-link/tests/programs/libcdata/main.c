/* Reads and writes libc's variables directly, as code compiled with gcc -fPIE (its default)
 * or clang -fdirect-access-external-data does: 32-bit PC-relative references to optarg,
 * optind, opterr and environ, which a native link serves with copy relocations. They must be
 * libc's own variables, not copies: setenv may move environ, getopt writes optind. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int count_env(const char *prefix) {
    int n = 0;
    for (char **e = environ; *e; e++) n += strncmp(*e, prefix, strlen(prefix)) == 0;
    return n;
}

int main(int argc, char **argv) {
    opterr = 0;
    char *opts[] = {argv[0], "-x", "-n", "value", "rest", NULL};
    int opt, unknown = 0;
    const char *name = "none";
    while ((opt = getopt(5, opts, "n:")) != -1) {
        if (opt == 'n') name = optarg;
        if (opt == '?') unknown++;
    }
    printf("getopt: name %s, unknown %d, optind %d, rest %s\n", name, unknown, optind, opts[optind]);
    int before = count_env("LIBCDATA_");
    for (int i = 0; i < 64; i++) {
        char key[32];
        snprintf(key, sizeof key, "LIBCDATA_%d", i);
        setenv(key, "1", 1);
    }
    printf("environ: %d then %d LIBCDATA_ entries, getenv %s\n", before, count_env("LIBCDATA_"), getenv("LIBCDATA_63"));
    clearenv();
    printf("after clearenv: environ %s\n", environ == NULL || *environ == NULL ? "empty" : "not empty");
    fprintf(stdout, "stdout is fd %d, stderr fd %d, args %d\n", fileno(stdout), fileno(stderr), argc);
    return 0;
}
