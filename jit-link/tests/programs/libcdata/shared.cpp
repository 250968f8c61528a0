// std::shared_ptr's reference counts read libc's __libc_single_threaded (a byte libc clears
// when a second thread starts), and iostreams reach std::cout: PIE code compiled to reach
// external data directly (g++'s default) references both with 32-bit PC-relative relocations.
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

int main(int argc, char **) {
    auto shared = std::make_shared<std::vector<int>>(10, argc);
    std::vector<std::shared_ptr<std::vector<int>>> copies(8, shared);
    long sum = 0;
    std::thread([&] {
        for (auto &c : copies) sum += c->at(3);
    }).join();
    copies.clear();
    std::cout << "uses " << shared.use_count() << " sum " << sum << std::endl;
    return 0;
}
