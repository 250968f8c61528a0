int chain_b(int x);
extern int parts_counter;
int chain_a(int x) { return chain_b(x) + 100 * parts_counter; }
