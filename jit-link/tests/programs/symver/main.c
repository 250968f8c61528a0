/* References pinned to one version of a libc symbol with .symver, as programs built to run on
 * older glibc do, and weak references to what nothing defines. */
#include <stdio.h>
#include <string.h>

extern void maybe_there(void) __attribute__((weak));
extern int maybe_data __attribute__((weak));

/* glibc 2.14 changed memcpy; the old version (memmove's behaviour) stays as memcpy@GLIBC_2.2.5. */
__asm__(".symver memcpy_old, memcpy@GLIBC_2.2.5");
void *memcpy_old(void *, const void *, size_t);

int main(void) {
    printf("weak function %s, weak data %s\n", maybe_there ? "present" : "absent", &maybe_data ? "present" : "absent");
    char buf[16] = "overlapping";
    memcpy_old(buf + 2, buf, 9); /* overlapping: defined for the old version */
    printf("%s\n", buf);
    return 0;
}
