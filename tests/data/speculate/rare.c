/* rarely() needs a function no module or library defines. It is alone in its module, so no
 * other compile there can make its guess wait (and be dropped). */
int missing_function_nobody_defines(int);

int rarely(int n) { return missing_function_nobody_defines(n) + 1; }
