/* Direct-threaded code: called once with `init` set, the function stores its label addresses
 * in a global table; programs built from that table (in main.c) jump from cell to cell. */
#include "lazy_goto.h"

const void *threaded_ops[OP_COUNT];

long threaded_run(const cell *ip, long *out, int *nout, int init) {
    if (init) {
        threaded_ops[OP_PUSH] = &&t_push;
        threaded_ops[OP_ADD] = &&t_add;
        threaded_ops[OP_SUB] = &&t_sub;
        threaded_ops[OP_MUL] = &&t_mul;
        threaded_ops[OP_DUP] = &&t_dup;
        threaded_ops[OP_SWAP] = &&t_swap;
        threaded_ops[OP_OVER] = &&t_over;
        threaded_ops[OP_DROP] = &&t_drop;
        threaded_ops[OP_JNZ] = &&t_jnz;
        threaded_ops[OP_OUT] = &&t_out;
        threaded_ops[OP_HALT] = &&t_halt;
        return 0;
    }
    long stack[64];
    int sp = 0;
    long t;
#define NEXT goto *(ip++)->label
    NEXT;
t_push:
    stack[sp++] = (ip++)->value;
    NEXT;
t_add:
    sp--;
    stack[sp - 1] += stack[sp];
    NEXT;
t_sub:
    sp--;
    stack[sp - 1] -= stack[sp];
    NEXT;
t_mul:
    sp--;
    stack[sp - 1] *= stack[sp];
    NEXT;
t_dup:
    stack[sp] = stack[sp - 1];
    sp++;
    NEXT;
t_swap:
    t = stack[sp - 1];
    stack[sp - 1] = stack[sp - 2];
    stack[sp - 2] = t;
    NEXT;
t_over:
    stack[sp] = stack[sp - 2];
    sp++;
    NEXT;
t_drop:
    sp--;
    NEXT;
t_jnz:
    if (stack[--sp] != 0) {
        ip = ip->target;
    } else {
        ip++;
    }
    NEXT;
t_out:
    out[(*nout)++] = stack[--sp];
    NEXT;
t_halt:
    return sp > 0 ? stack[sp - 1] : -1;
#undef NEXT
}
