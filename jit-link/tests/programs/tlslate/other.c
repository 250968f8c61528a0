__thread int counter = 40;
void bump(void) { counter++; }
