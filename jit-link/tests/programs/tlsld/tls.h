/* Thread-local variables shared by the objects of one program but hidden from other
 * modules: with -fPIC, clang reaches them with the local-dynamic model (R_X86_64_TLSLD and
 * R_X86_64_DTPOFF32: one __tls_get_addr call for the module's block, then each variable at
 * its offset), which needs them in the same TLS module as the code that uses them. */
#define HIDDEN __attribute__((visibility("hidden")))
HIDDEN extern __thread int hits;
HIDDEN extern __thread long total;
HIDDEN extern __thread char name[16];
void count(int n);
long value(const char *who);
long report(const char *who);
