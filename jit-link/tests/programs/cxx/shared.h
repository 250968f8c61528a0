// Shared by both objects: an inline function with a static local and a template are
// emitted in COMDAT groups in each object; the program must see one of each.
#pragma once
#include <string>

inline int inline_counter() {
    static int n = 0;
    return ++n;
}

template <typename T>
T twice(T x) {
    return x + x;
}

struct Tracer {
    const char *name;
    explicit Tracer(const char *n);
    ~Tracer();
};

struct MyError {
    int code;
    std::string what;
};

void thrower(int kind);
int (*inline_counter_address())();
int twice_from_other(int x);
