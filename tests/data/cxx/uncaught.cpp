#include <cstdio>
#include <stdexcept>
int main() { std::puts("before"); throw std::runtime_error("boom"); }
