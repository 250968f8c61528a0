/* The second module of the built-in demo (see demo_main.c). */
int is_prime(int n) {
  if (n < 2) return 0;
  for (int d = 2; d * d <= n; d++)
    if (n % d == 0) return 0;
  return 1;
}

long fib(int n) {
  long a = 0, b = 1;
  for (int i = 0; i < n; i++) { long t = a + b; a = b; b = t; }
  return a;
}
