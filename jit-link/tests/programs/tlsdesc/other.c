/* Another object's thread-locals (another TLS module under the JIT), with a template large
 * enough that making a thread's block copies it with vector registers. */
__thread int counter_avx = 70;
__thread char filler[8192] = {1};
int filler_sum(void) {
    int sum = 0;
    for (int i = 0; i < (int)sizeof filler; i++) sum += filler[i];
    return sum;
}
