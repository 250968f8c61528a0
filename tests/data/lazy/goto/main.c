/* Runs bytecode programs through the computed-goto interpreter (interp.c) and, translated to
 * direct-threaded code with the label addresses threaded.c published, through threaded.c. */
#include <stdio.h>
#include "lazy_goto.h"

/* n! for n = 10, counting down: prints every partial product. */
static const long factorial[] = {OP_PUSH, 1,  OP_PUSH, 10, /* acc n */
                                 /* 4: */ OP_SWAP, OP_OVER, OP_MUL, OP_DUP, OP_OUT, OP_SWAP, /* acc*n n */
                                 OP_PUSH, 1, OP_SUB, OP_DUP, OP_JNZ, 4, OP_DROP, OP_HALT};

/* Sum of 1..100, and the sums of the squares of 20..1 as they grow. */
static const long sum[] = {OP_PUSH, 0, OP_PUSH, 100, /* 4: */ OP_SWAP, OP_OVER, OP_ADD, OP_SWAP, OP_PUSH, 1,
                           OP_SUB,  OP_DUP, OP_JNZ, 4, OP_DROP, OP_DUP, OP_OUT, OP_HALT};
static const long squares[] = {OP_PUSH, 0, OP_PUSH, 20, /* 4: */ OP_SWAP, OP_OVER, OP_DUP, OP_MUL, OP_ADD, OP_DUP,
                               OP_OUT,  OP_SWAP, OP_PUSH, 1, OP_SUB, OP_DUP, OP_JNZ, 4, OP_DROP, OP_HALT};

/* Operands after each opcode (OP_JNZ's is a bytecode index). */
static int operands(long op) { return op == OP_PUSH || op == OP_JNZ; }

/* Translates bytecode to threaded code: label addresses from the global table, jump targets
 * as cell addresses. */
static void translate(const long *code, int len, cell *out) {
    int at[256];
    int n = 0;
    for (int i = 0; i < len; i += 1 + operands(code[i])) {
        at[i] = n;
        n += 1 + operands(code[i]);
    }
    for (int i = 0; i < len; i += 1 + operands(code[i])) {
        cell *c = &out[at[i]];
        c[0].label = threaded_ops[code[i]];
        if (code[i] == OP_PUSH) c[1].value = code[i + 1];
        if (code[i] == OP_JNZ) c[1].target = &out[at[code[i + 1]]];
    }
}

static long run(const char *name, const long *code, int len, long check) {
    long out[64], tout[64];
    int n = 0, tn = 0;
    long r = interpret(code, out, &n);
    cell threaded[256];
    translate(code, len, threaded);
    long tr = threaded_run(threaded, tout, &tn, 0);
    printf("%s: %ld (threaded %ld) out", name, r, tr);
    for (int i = 0; i < n; i++) printf(" %ld", out[i]);
    int same = n == tn;
    for (int i = 0; i < n && same; i++) same = out[i] == tout[i];
    printf("; threaded output the same: %d\n", same);
    return r + check;
}

#define LEN(a) (int)(sizeof(a) / sizeof((a)[0]))

int main(void) {
    threaded_run(0, 0, 0, 1);
    int published = 0;
    for (int i = 0; i < OP_COUNT; i++) published += threaded_ops[i] != 0;
    printf("labels published: %d\n", published);
    long total = run("factorial", factorial, LEN(factorial), 0);
    total += run("sum", sum, LEN(sum), 1);
    total += run("squares", squares, LEN(squares), 2);
    long out[4];
    int n = 0;
    static const long tiny[] = {OP_PUSH, 6, OP_PUSH, 7, OP_MUL, OP_HALT};
    printf("through a pointer in static data: %ld; it is the function: %d\n", interpret_entry(tiny, out, &n),
           interpret_entry == interpret);
    return (int)(total % 50);
}
