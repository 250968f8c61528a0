// A program whose plugin module is reached only by its static constructor (self-registration):
// nothing in main refers to it, as in many plugin registries.
#include <cstdio>
#include "registry.h"

Entry *registry_head = nullptr;

int main() {
  int n = 0;
  for (Entry *e = registry_head; e; e = e->next) {
    std::printf("registered: %s\n", e->name);
    n++;
  }
  std::printf("%d entries\n", n);
  return n == 2 ? 0 : 1;
}
