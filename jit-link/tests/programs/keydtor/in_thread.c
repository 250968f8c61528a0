int first_called_in_thread(int slot) { return slot + 100; }
