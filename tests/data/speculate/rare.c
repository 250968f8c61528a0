/* rarely() needs a function no module or library defines. */
int missing_function_nobody_defines(int);

int often(int n) { return n * n + 1; }

int rarely(int n) { return missing_function_nobody_defines(n) + 1; }
