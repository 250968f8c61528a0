/* A C++ host that loads plugins (circle.cpp, square.cpp, built as shared libraries, named on
 * the command line) with dlopen: each registers a factory from a static constructor, calling
 * the host while the loader runs it; exceptions cross between host and plugin code both ways.
 * Natively linked with -rdynamic. */
#include <dlfcn.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>

#include "api.h"

static std::map<std::string, Factory> &registry() {
  static std::map<std::string, Factory> r;
  return r;
}

void register_factory(const char *name, Factory f) {
  registry()[name] = f;
  std::printf("registered %s\n", name);
}

int host_check(int x) {
  if (x < 0) throw std::invalid_argument("negative from host");
  return x * 2;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!dlopen(argv[i], RTLD_NOW | RTLD_LOCAL)) {
      std::printf("dlopen: %s\n", dlerror());
      return 1;
    }
  }
  for (auto &[name, make] : registry()) {
    Shape *s = make();
    std::printf("%s area %.2f\n", name.c_str(), s->area());
    try {
      s->validate(-1);
    } catch (const std::exception &e) {
      std::printf("caught: %s\n", e.what());
    }
    delete s;
  }
  return static_cast<int>(registry().size());
}
