#include <cstdio>
#include <stdexcept>

#include "api.h"

struct Circle : Shape {
  double area() const override { return 3.14159 * 2 * 2; }
  void validate(int x) const override {
    try {
      host_check(x);
    } catch (const std::invalid_argument &e) {
      std::printf("circle saw: %s\n", e.what());
      throw std::runtime_error("circle rethrows");
    }
  }
};

static Shape *make() { return new Circle; }
static struct Registrar {
  Registrar() { register_factory("circle", make); }
} registrar;
