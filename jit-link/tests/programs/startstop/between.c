/* An object with no part in the table, linked between main.c and more.c: its constructor
 * runs between theirs (and its destructor between theirs), as in a static link, although
 * main.c and more.c are linked as one graph. */
#include <stdio.h>

__attribute__((constructor)) static void hello(void) { puts("between.c: constructor"); }
__attribute__((destructor)) static void bye(void) { puts("between.c: destructor"); }
