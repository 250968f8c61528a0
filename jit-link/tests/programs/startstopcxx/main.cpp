// Walks a table whose entries both objects define; run with more.cpp linked beside it.
#include <cstdio>

#include <stdexcept>
#include <thread>

#include "entry.h"

thread_local int depth = 0;
extern const entry __start_entries[], __stop_entries[];

static std::string hello(int x) { return "hello " + std::to_string(x + shared_counter()); }
ENTRY(hello, hello);
static Announce announce("main.o");

int main() {
    for (const entry *e = __start_entries; e < __stop_entries; e++) {
        try {
            std::printf("%s -> %s\n", e->name, e->fn(5).c_str());
        } catch (const std::exception &ex) {
            std::printf("%s threw: %s\n", e->name, ex.what());
        }
    }
    // Threads, one after another (the counter is not atomic), call every entry with an
    // argument small enough not to throw; each has a depth of its own.
    for (int i = 0; i < 3; i++) {
        std::string seen;
        std::thread([i, &seen] {
            for (const entry *e = __start_entries; e < __stop_entries; e++)
                seen += e->fn(i).substr(0, 5) + ";";
            seen += " depth " + std::to_string(depth);
        }).join();
        std::printf("%s\n", seen.c_str());
    }
    std::printf("counter %d, depth %d\n", shared_counter(), depth);
    return 0;
}
