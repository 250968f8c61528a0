/* More commands, in another object: one with a static function of the same name as one of
 * main.c's, one that calls main.c's scale. */
#include <stdio.h>

#include "cmd.h"

int scale(int x);

static int negate(int x) { return -x; }
static int twice(int x) { return x + x + 1; }
static int scaled(int x) { return scale(x); }
CMD(negate, negate);
CMD(odd, twice);
CMD(scaled, scaled);

const char *banner(void) { return "more's banner"; }
int more_count(void) { return 3; }

__attribute__((constructor)) static void hello(void) { puts("more.c: constructor"); }
__attribute__((destructor)) static void bye(void) { puts("more.c: destructor"); }
