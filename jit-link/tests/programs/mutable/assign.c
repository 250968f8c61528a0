// Assigns stdout: the program writes a variable the library reads, which a copy cannot carry.
#include <stdio.h>

int main(void) {
    stdout = stderr;
    printf("to stderr now\n");
    return 0;
}
