#include <stdio.h>

/* Linked between the two: its constructor runs between theirs, as natively. */
__attribute__((constructor)) static void hello(void) { puts("between"); }
