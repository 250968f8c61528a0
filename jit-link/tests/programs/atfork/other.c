#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void note(const char *what);

/* Lines from handlers go straight to the file descriptor: quick_exit flushes nothing. */
void say(const char *line) {
    write(1, line, strlen(line));
    write(1, "\n", 1);
}

static void prepare_other(void) { note("prepare-other "); }
static void parent_other(void) { note("parent-other "); }
static void child_other(void) { note("child-other "); }
static void quick_other(void) { say("quick exit handler of other"); }

__attribute__((constructor)) static void early(void) {
    if (pthread_atfork(prepare_other, NULL, NULL) != 0) abort();
}

void register_other_handlers(void) {
    if (pthread_atfork(NULL, parent_other, child_other) != 0) abort();
    if (at_quick_exit(quick_other) != 0) abort();
}
