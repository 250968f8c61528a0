/* A stack machine interpreter: computed goto through a static table of label addresses. */
#include "lazy_goto.h"

long interpret(const long *code, long *out, int *nout) {
    static const void *const labels[OP_COUNT] = {&&op_push, &&op_add,  &&op_sub, &&op_mul, &&op_dup, &&op_swap,
                                                 &&op_over, &&op_drop, &&op_jnz, &&op_out, &&op_halt};
    long stack[64];
    int sp = 0;
    const long *pc = code;
    long t;
#define NEXT goto *labels[*pc++]
    NEXT;
op_push:
    stack[sp++] = *pc++;
    NEXT;
op_add:
    sp--;
    stack[sp - 1] += stack[sp];
    NEXT;
op_sub:
    sp--;
    stack[sp - 1] -= stack[sp];
    NEXT;
op_mul:
    sp--;
    stack[sp - 1] *= stack[sp];
    NEXT;
op_dup:
    stack[sp] = stack[sp - 1];
    sp++;
    NEXT;
op_swap:
    t = stack[sp - 1];
    stack[sp - 1] = stack[sp - 2];
    stack[sp - 2] = t;
    NEXT;
op_over:
    stack[sp] = stack[sp - 2];
    sp++;
    NEXT;
op_drop:
    sp--;
    NEXT;
op_jnz:
    t = *pc++;
    if (stack[--sp] != 0) pc = code + t;
    NEXT;
op_out:
    out[(*nout)++] = stack[--sp];
    NEXT;
op_halt:
    return sp > 0 ? stack[sp - 1] : -1;
#undef NEXT
}

/* Static data naming a function whose blocks' addresses are taken. */
long (*const interpret_entry)(const long *, long *, int *) = interpret;
