/* Arrays larger than the JIT's default reservation of 1 GiB, as scientific C code declares
 * them: 1.5 GiB of zero-filled grid and a small initialized table. Only the pages touched
 * become memory, as in a native run. */
#include <stdio.h>
#include <string.h>

#define ROWS 12288
#define COLS 16384
static double grid[ROWS][COLS]; /* 12288 * 16384 * 8 bytes = 1.5 GiB */
int table[4] = {3, 1, 4, 1};

int main(int argc, char **argv) {
    (void)argv;
    for (int r = 0; r < ROWS; r += 1024)
        grid[r][(r * 7) % (COLS)] = r + argc;
    grid[ROWS - 1][COLS - 1] = 0.5;
    double sum = 0;
    for (int r = 0; r < ROWS; r += 1024)
        sum += grid[r][(r * 7) % (COLS)];
    printf("sum %.1f last %.1f size %zu MiB table %d\n", sum, grid[ROWS - 1][COLS - 1], sizeof grid >> 20,
           table[0] + table[2]);
    return 0;
}
