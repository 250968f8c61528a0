/* One more command, in another object. */
#include "cmd.h"

static int negate(int x) { return -x; }
CMD(negate, negate);
