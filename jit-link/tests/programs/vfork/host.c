/* Loads library.so (argv[1]) and has it vfork; prints the child's status (host_value(6)) and
 * whether the parent saw the child's write (natively it does; under orcjit a vfork child is
 * a copy, see jit_layers::vfork). */
#include <dlfcn.h>
#include <stdio.h>

int host_value(int x) {
    int s = 0;
    for (int i = 0; i < x * 10; i++) s += (i * i) % 7;
    return s % 100;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        printf("%s\n", dlerror());
        return 1;
    }
    int (*spawn)(void) = (int (*)(void))dlsym(lib, "spawn_and_report");
    int r = spawn();
    printf("child exited %d, parent saw its write: %d\n", r / 10, r % 10);
    return 0;
}
