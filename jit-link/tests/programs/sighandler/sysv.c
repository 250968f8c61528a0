/* The program of main.c, its handler installed the System V way. */
#define SYSTEM_V 1
#include "main.c"
