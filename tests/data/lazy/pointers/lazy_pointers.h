/* What the modules of the pointers program share. */
typedef int (*fn)(int);

#define FUNCTIONS 5

/* a.c */
int f(int x);
int a_fn(int x);
fn get_f(void);
fn get_a_hidden(void);
fn a_code_pointer(int i);
extern fn a_table[FUNCTIONS];

/* b.c */
int b_fn(int x);
fn b_code_pointer(int i);
extern fn b_table[FUNCTIONS];
void b_fill(void);

/* main.c */
int main_fn(int x);
