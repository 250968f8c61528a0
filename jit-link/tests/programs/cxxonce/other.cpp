#include <mutex>
#include <string>

std::once_flag table_once;
thread_local std::string thread_name = std::string("worker-") + "thread-";
static int table[16];
static int builds;

void build_table(int by) {
    ++builds;
    for (int i = 0; i < 16; i++) table[i] = i * by + 1;
}

int table_sum() {
    if (builds != 1) return -builds;
    int sum = 0;
    for (int v : table) sum += v > 0;
    return sum;
}

int name_length() { return static_cast<int>(thread_name.size()); }
