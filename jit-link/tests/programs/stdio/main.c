// Non-PIC code reading libc's data directly: stdout/stderr/stdin (movq stdout(%rip) with
// R_X86_64_PC32, or movq stdout with R_X86_64_32S at -O0), a read-only libc constant, and
// libc functions whose addresses are taken as 32-bit immediates.
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

FILE *stdout_seen_by_other(void);
int call_through(int (*f)(const char *), const char *s);

static int by_length(const void *a, const void *b) {
    return (int)strlen(*(const char *const *)a) - (int)strlen(*(const char *const *)b);
}

int main(void) {
    fprintf(stdout, "hello through stdout\n");
    int r = fputs("hello through stderr\n", stderr);
    printf("fputs to stderr ok: %d\n", r >= 0);
    printf("fileno: stdin %d stdout %d stderr %d\n", fileno(stdin), fileno(stdout), fileno(stderr));
    printf("both objects see one stdout: %d\n", stdout_seen_by_other() == stdout);
    int zero = 1;
    for (int i = 0; i < 16; i++) zero &= in6addr_any.s6_addr[i] == 0;
    printf("in6addr_any is all zero: %d\n", zero);
    // A libc function's address taken in code, called through a pointer in another object.
    int (*volatile put)(const char *) = puts;
    call_through(put, "puts through a pointer");
    const char *words[] = {"ccc", "a", "bb"};
    qsort(words, 3, sizeof words[0], by_length);
    printf("sorted: %s %s %s\n", words[0], words[1], words[2]);
    fflush(stdout);
    return 5;
}
