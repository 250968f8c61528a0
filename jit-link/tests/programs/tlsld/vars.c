#include <stdio.h>
#include <string.h>
#include "tls.h"

__thread int hits = 1;
__thread long total = 100;
__thread char name[16] = "unnamed";

void count(int n) {
    hits++;
    total += n;
}

long value(const char *who) {
    return hits + total + (long)strlen(who) + (long)strlen(name);
}

long report(const char *who) {
    printf("%s: hits %d total %ld (%s)\n", who, hits, total, name);
    return hits + total;
}

__attribute__((constructor)) static void hello_vars(void) { puts("vars"); }
