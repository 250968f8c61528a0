/* Text: a sort whose comparator libc calls back, and a recursive-descent evaluator. */
#include <stdlib.h>
#include <string.h>
#include "lazy_threads.h"

static const char *const words[] = {"pear", "apple", "fig", "banana", "cherry", "kiwi", "lime", "date",
                                    "grape", "melon", "plum", "quince", "mango", "olive", "lemon", "peach"};

static int by_name(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

uint64_t sort_and_hash(unsigned seed) {
    const char *picked[12];
    for (unsigned i = 0; i < 12; i++) picked[i] = words[(i * (seed + 3) + seed) % 16];
    qsort(picked, 12, sizeof picked[0], by_name);
    uint64_t h = seed;
    for (unsigned i = 0; i < 12; i++)
        for (const char *c = picked[i]; *c; c++) h = mix(h, (uint64_t)*c);
    return h;
}

static long expr(const char **s);

static long primary(const char **s) {
    if (**s == '(') {
        (*s)++;
        long v = expr(s);
        (*s)++; /* ')' */
        return v;
    }
    long v = 0;
    while (**s >= '0' && **s <= '9') v = v * 10 + (*(*s)++ - '0');
    return v;
}

static long term(const char **s) {
    long v = primary(s);
    while (**s == '*' || **s == '/') {
        char op = *(*s)++;
        long r = primary(s);
        v = op == '*' ? v * r : (r ? v / r : 0);
    }
    return v;
}

static long expr(const char **s) {
    long v = term(s);
    while (**s == '+' || **s == '-') {
        char op = *(*s)++;
        long r = term(s);
        v = op == '+' ? v + r : v - r;
    }
    return v;
}

long evaluate(const char *expression) { return expr(&expression); }

const char *const expressions[THREADS] = {
    "1+2*3",           "(1+2)*3",         "((7*8)-(9/3))*2", "100/(3+2)-7*(2-5)",
    "((((1+1)*2)+1)*3)", "2*2*2*2*2*2*2*2-1", "(5-9)*(4-8)+(3*(2+(1*7)))", "123456/(2*3*4)+(((9)))",
};
