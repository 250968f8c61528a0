int dup_name(void) { return 2; }
int only_in_dup(void) { return 3; }
