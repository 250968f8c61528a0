#include <stdio.h>

__attribute__((constructor(200))) static void other_ctor_200(void) { puts("other.o constructor 200"); }
__attribute__((constructor(101))) static void other_ctor_101(void) { puts("other.o constructor 101"); }
__attribute__((constructor)) static void other_ctor(void) { puts("other.o constructor (default priority)"); }
__attribute__((destructor(200))) static void other_dtor_200(void) { puts("other.o destructor 200"); }
__attribute__((destructor)) static void other_dtor(void) { puts("other.o destructor (default priority)"); }
