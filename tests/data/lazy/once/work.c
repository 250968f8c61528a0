/* Two functions that call nothing and use no variables: compiling `work` compiles exactly one
 * partition, and `other` stays uncompiled until it is called. */

/* A hash of 0..n-1, mixed in rounds: enough code that compiling it takes a while. */
int work(int n) {
    unsigned h = 2166136261u;
    for (int i = 0; i < n; i++) {
        h ^= (unsigned)i * 2654435761u;
        h = (h << 13) | (h >> 19);
        h *= 16777619u;
        if (h & 1) h += (unsigned)i;
        else h ^= h >> 7;
    }
    return (int)(h & 0x7fffffff);
}

int other(int n) { return n * 2 + 1; }
