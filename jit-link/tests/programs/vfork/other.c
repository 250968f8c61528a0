int first_called_in_child(int x) {
    int s = 0;
    for (int i = 0; i < x * 10; i++) s += (i * i) % 7;
    return s % 100;
}

const char *exec_argument(void) {
    return "echo hello from the child; exit 3";
}
