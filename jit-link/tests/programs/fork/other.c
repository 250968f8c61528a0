static int calls;

int bump(int by) {
    calls += by;
    return calls;
}

int only_in_child(int x) {
    int s = 0;
    for (int i = 0; i < x * 10; i++) s += (i * i) % 7;
    return s + calls;
}
