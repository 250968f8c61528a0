/* Calls into the compiler's runtime library: CPU feature checks (__cpu_model and
 * __cpu_indicator_init, which only libgcc.a provides under a name dlsym finds; no explicit
 * __builtin_cpu_init, so its constructor must have run), and helpers libgcc_s exports
 * (128-bit division, complex multiplication and division, _Float16, powi). */
#include <complex.h>
#include <stdio.h>

__attribute__((noinline)) static unsigned __int128 div128(unsigned __int128 a, unsigned __int128 b) { return a / b; }
__attribute__((noinline)) static __int128 mod128(__int128 a, __int128 b) { return a % b; }
__attribute__((noinline)) static double complex cmul(double complex a, double complex b) { return a * b; }
__attribute__((noinline)) static float complex cdiv(float complex a, float complex b) { return a / b; }
__attribute__((noinline)) static _Float16 half(_Float16 a, _Float16 b) { return a * b + (_Float16)1.5; }
__attribute__((noinline)) static double powi(double x, int n) { return __builtin_powi(x, n); }

int main(void) {
    printf("sse2 %d avx %d avx2 %d avx512f %d popcnt %d\n", __builtin_cpu_supports("sse2"),
           __builtin_cpu_supports("avx"), __builtin_cpu_supports("avx2"), __builtin_cpu_supports("avx512f"),
           __builtin_cpu_supports("popcnt"));
    printf("intel %d amd %d\n", __builtin_cpu_is("intel"), __builtin_cpu_is("amd"));
    unsigned __int128 a = ((unsigned __int128)1 << 100) + 12345;
    printf("div %llu mod %lld\n", (unsigned long long)div128(a, 1000000007),
           (long long)mod128(-(__int128)a, 998244353));
    double complex c = cmul(1.0 + 2.0 * I, 3.0 - 1.0 * I);
    float complex d = cdiv(1.0f + 2.0f * I, 3.0f - 1.0f * I);
    printf("cmul %.1f %.1f cdiv %.2f %.2f\n", creal(c), cimag(c), crealf(d), cimagf(d));
    printf("half %.2f powi %.3f\n", (double)half(2.5, 3.0), powi(1.5, 5));
    return 0;
}
