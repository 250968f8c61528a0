/* Declarations shared by the two objects of the multi-file C program. */
extern int counter;
extern const char *names[3];
extern long table[4];
struct point {
    int x, y;
};
extern struct point origin;
int shared_common; /* a tentative definition in both objects: a common symbol with -fcommon */
int add(int a, int b);
int apply(int (*fn)(int, int), int a, int b);
int (*get_add(void))(int, int);
int (*const *table_of_functions(void))(int, int);
void bump(void);
int weak_value(void);
long sum_array(const long *a, int n);
