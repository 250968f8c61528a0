int chain_b(int x) { return x + 1000; }
