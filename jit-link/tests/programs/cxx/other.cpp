#include <stdexcept>

#include "shared.h"

static Tracer other_global("other_global");
Tracer other_early __attribute__((init_priority(200)))("other_early (init_priority 200)");

void thrower(int kind) {
    switch (kind) {
        case 0:
            throw MyError{7, "seven"};
        case 1:
            throw std::runtime_error("boom");
        case 2:
            throw 42;
        default:
            break;
    }
}

int (*inline_counter_address())() {
    inline_counter();
    return &inline_counter;
}

int twice_from_other(int x) { return twice(x); }
