int no_such_function_anywhere(void);
int broken(void) { return no_such_function_anywhere(); }
