// Reads optind, which getopt (libc) writes after the link: a copy would go stale.
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    while (getopt(argc, argv, "v") != -1) {
    }
    printf("first operand at %d\n", optind);
    return 0;
}
