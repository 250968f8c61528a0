#include "registry.h"
static Registrar first("first plugin");
static Registrar second("second plugin");
