__thread int shared_tls = 5;
__thread char big_tbss[4096];

int bump_shared(int by) {
    shared_tls += by;
    big_tbss[shared_tls % 4096]++;
    return shared_tls;
}

int *shared_tls_address(void) { return &shared_tls; }
