// std::call_once and std::async from several threads: libstdc++'s call_once keeps the
// callable in its own thread-local variables (std::__once_callable, std::__once_call), which
// JIT'd code reaches through __tls_get_addr like any extern thread_local, here from the
// threads that run the once-functions. Plus a C++ thread_local with a dynamic initializer
// defined in the other object, and thread_local and static objects whose destructors print:
// at exit, libc destroys the exiting thread's thread-locals before the statics.
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern std::once_flag table_once;
extern thread_local std::string thread_name;  // dynamic initializer in other.o
void build_table(int by);
int table_sum();
int name_length();

struct Noisy {
    const char *name;
    explicit Noisy(const char *n) : name(n) { std::printf("construct %s\n", name); }
    ~Noisy() { std::printf("destroy %s\n", name); }
};
static Noisy static_noisy("static");
thread_local Noisy thread_noisy("thread_local");

int main(int argc, char **argv) {
    std::vector<std::thread> threads;
    std::vector<int> lengths(4);
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([t, &lengths] {
            std::call_once(table_once, build_table, t + 1);
            thread_name += std::to_string(t);
            lengths[t] = name_length();
        });
    }
    for (auto &t : threads) t.join();
    std::printf("table %s\n", table_sum() > 0 ? "built once" : "missing");
    for (int t = 0; t < 4; t++) std::printf("thread %d: name length %d\n", t, lengths[t]);

    std::once_flag local_once;
    int calls = 0;
    for (int i = 0; i < 3; i++) std::call_once(local_once, [&calls, i] { calls += 10 + i; });
    std::printf("local once: %d\n", calls);

    auto square = std::async(std::launch::async, [](int x) { return x * x; }, argc + 6);
    auto words = std::async(std::launch::deferred, [argv] { return std::string(argv[1]) + "!"; });
    std::printf("async %d, deferred %s, main name %s\n", square.get(), words.get().c_str(), thread_name.c_str());
    std::thread([] { std::printf("thread uses %s\n", thread_noisy.name); }).join();
    std::printf("main uses %s\n", thread_noisy.name);
    return 3;
}
