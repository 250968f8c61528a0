// A table of named functions filled by the objects that define them, each entry in section
// "entries", walked between __start_entries and __stop_entries.
#include <cstdio>
#include <string>

struct entry {
    const char *name;
    std::string (*fn)(int);
};

#define ENTRY(n, f) \
    static const entry entry_##n __attribute__((used, section("entries"), aligned(sizeof(void *)))) = {#n, f}

// An inline function with a static local: one COMDAT copy for both objects.
inline int shared_counter() {
    static int n = 0;
    return ++n;
}

extern thread_local int depth;

// Same name in both objects (an ODR clash, as in real programs): the first definition of its
// inline members is the one both use, natively too.
struct Announce {
    Announce(const char *who) { std::printf("constructing %s\n", who); }
    ~Announce() { std::printf("destroying\n"); }
};
