/* Referred to by nothing but main's dlsym. */
int late_value(int x) { return x + 22; }
