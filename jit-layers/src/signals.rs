//! The signal state a C program's `main` starts with, for hosts that run JIT'd code as one.

/// Restores the signal state a native program starts with, which Rust's runtime changed
/// before the host's `main`:
///
/// - SIGPIPE goes back from ignored to its default action, so a program writing to a closed
///   pipe is killed as natively (`prog | head` ends instead of spinning on `EPIPE`), and the
///   programs it starts inherit the default, not "ignored" (which survives `exec`).
/// - SIGSEGV and SIGBUS go back from Rust's stack-overflow reporter to their default actions,
///   so `raise(SIGSEGV)` kills the process instead of returning once.
/// - The calling thread gets no alternate signal stack (Rust gives each of its threads a small
///   one for that reporter), so a handler the program installs with `SA_ONSTACK` runs on the
///   program's own stack unless it sets up one itself, as natively.
///
/// Call it on the thread that will run the program's `main`, before any of its code runs; it
/// changes process-wide dispositions, so a host embedding a JIT in a larger program should
/// decide for itself.
pub fn restore_native_signals() {
    for sig in [libc::SIGPIPE, libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: sets a standard signal's action to its default; no handler is involved.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let disable = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: turns the calling thread's alternate signal stack off. Rust's runtime, which
    // mapped it, only unmaps it (and turns it off again) when the thread ends; no signal is
    // being handled on it here.
    unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
}
