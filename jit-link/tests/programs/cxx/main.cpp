#include <cstdio>
#include <stdexcept>
#include <vector>

#include "shared.h"

Tracer::Tracer(const char *n) : name(n) { std::printf("construct %s\n", n); }
Tracer::~Tracer() { std::printf("destroy %s\n", name); }

static Tracer main_global("main_global");

int main() {
    int first = inline_counter();
    int second = inline_counter();
    std::printf("inline %d %d\n", first, second);
    std::printf("same inline function address: %d\n", inline_counter_address() == &inline_counter);
    std::printf("twice %d %d %s\n", twice(21), twice_from_other(4), twice(std::string("ab")).c_str());
    for (int kind = 0; kind < 4; kind++) {
        try {
            thrower(kind);
            std::printf("no throw %d\n", kind);
        } catch (const MyError &e) {
            std::printf("caught MyError %d %s\n", e.code, e.what.c_str());
        } catch (const std::runtime_error &e) {
            std::printf("caught runtime_error %s\n", e.what());
        } catch (int v) {
            std::printf("caught int %d\n", v);
        }
    }
    std::vector<int> v;
    for (int i = 0; i < 100; i++) v.push_back(i);
    std::printf("vector %zu\n", v.size());
    return inline_counter();
}
