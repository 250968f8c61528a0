int first_called_at_thread_exit(int slot) { return slot * 10 + 1; }
