/* dladdr on the program's own code, as a symbolizer or crash reporter calls it: a function's
 * address, an address inside main, and a libc function. Natively (linked -rdynamic) the
 * loader names the executable and the function; JIT'd code gets the same names. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

__attribute__((noinline)) int exported_function(int x) { return x + 1; }
__attribute__((noinline)) void *return_address(void) { return __builtin_return_address(0); }

static void show(const char *what, const void *addr, const void *start) {
    Dl_info info;
    int found = dladdr(addr, &info);
    const char *name = found && info.dli_sname ? info.dli_sname : "(none)";
    printf("%s: found %d, name %s, file named %d, at the start %d\n", what, found != 0, name,
           found && info.dli_fname && info.dli_fname[0], found && start && info.dli_saddr == start);
}

int main(void) {
    show("function", (const void *)exported_function, (const void *)exported_function);
    show("inside main", return_address(), 0);
    show("libc", (const void *)puts, 0);
    printf("%d\n", exported_function(41));
    return 0;
}
