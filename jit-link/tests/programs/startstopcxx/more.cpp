// More entries, in another object: one throws past the walker's frames.
#include <cstdio>

#include <stdexcept>

#include "entry.h"

static std::string boom(int x) {
    depth++;
    if (x > 3) throw std::runtime_error("too big: " + std::to_string(x));
    return "fine " + std::to_string(x);
}
static std::string twice(int x) { return std::to_string(2 * x + shared_counter()); }
ENTRY(boom, boom);
ENTRY(twice, twice);
static Announce announce("more.o");
