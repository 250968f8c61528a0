/* What the modules of the computed-goto program share. */
enum { OP_PUSH, OP_ADD, OP_SUB, OP_MUL, OP_DUP, OP_SWAP, OP_OVER, OP_DROP, OP_JNZ, OP_OUT, OP_HALT, OP_COUNT };

/* interp.c: a bytecode interpreter dispatching with `goto *labels[op]`. */
long interpret(const long *code, long *out, int *nout);
extern long (*const interpret_entry)(const long *, long *, int *);

/* threaded.c: direct-threaded code; its label addresses are published in a global table. */
typedef union cell {
    const void *label;
    long value;
    const union cell *target;
} cell;
extern const void *threaded_ops[OP_COUNT];
long threaded_run(const cell *ip, long *out, int *nout, int init);
