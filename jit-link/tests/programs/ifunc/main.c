/* Indirect functions (STT_GNU_IFUNC) as natively: an ifunc attribute with its own resolver
 * (which reads a variable, as glibc's resolvers read CPU features; not one a constructor
 * sets, since a native run's resolvers may run before constructors or after),
 * target_clones (whose resolver calls __cpu_indicator_init, from libgcc.a), a static one,
 * one defined in another object; arguments in every register that carries them survive the
 * first call, which runs the resolver (six integers, eight doubles, a variadic call's %al);
 * the first calls race from several threads; addresses compare equal across objects. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int scale(int x);
extern int (*scale_seen_by_other)(int);
int other_calls(int x);
double weigh(int a, int b, int c, int d, int e, int f, double g, double h, double i, double j, double k,
             double l, double m, double n);
int format(char *out, const char *fmt, ...);

int prefer_fast = 1;

static int scale_fast(int x) { return x * 3; }
static int scale_slow(int x) { return x + x + x + 1000; }
static int (*pick_scale(void))(int) { return prefer_fast ? scale_fast : scale_slow; }
int scale(int x) __attribute__((ifunc("pick_scale")));

static double weigh_impl(int a, int b, int c, int d, int e, int f, double g, double h, double i, double j, double k,
                         double l, double m, double n) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + g * 0.5 + h * 0.25 + i + j * 2 + k * 3 + l * 4 + m * 5 + n * 6;
}
static void *pick_weigh(void) { return (void *)weigh_impl; }
double weigh(int, int, int, int, int, int, double, double, double, double, double, double, double, double)
    __attribute__((ifunc("pick_weigh")));

static int format_impl(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsprintf(out, fmt, ap);
    va_end(ap);
    return n;
}
static void *pick_format(void) { return (void *)format_impl; }
int format(char *out, const char *fmt, ...) __attribute__((ifunc("pick_format")));

static int twice_impl(int x) { return 2 * x; }
static void *pick_twice(void) { return (void *)twice_impl; }
static int twice(int x) __attribute__((ifunc("pick_twice")));

__attribute__((target_clones("avx2", "sse4.2", "default"))) long total(const int *v, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s;
}

static void *race(void *arg) {
    long k = (long)arg;
    long sum = 0;
    for (int i = 0; i < 1000; i++) sum += other_calls(i + (int)k);
    return (void *)sum;
}

int main(void) {
    char buf[128];
    /* The variadic call comes first: its %al must reach vsprintf intact. */
    format(buf, "%d %.2f %s %.1f", 7, 2.5, "x", 0.125);
    printf("format: %s\n", buf);
    printf("scale %d weigh %.3f twice %d\n", scale(14), weigh(1, 2, 3, 4, 5, 6, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5),
           twice(21));
    int v[1000];
    for (int i = 0; i < 1000; i++) v[i] = i * 7 - 300;
    printf("total %ld\n", total(v, 1000));
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, race, (void *)i);
    long all = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        all += (long)r;
    }
    printf("threads %ld\n", all);
    printf("same address across objects: %d\n", scale_seen_by_other == scale);
    int (*fp)(int) = scale;
    printf("through a pointer %d\n", fp(5));
    return 0;
}
