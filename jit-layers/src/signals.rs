//! Signals and JIT'd programs: the signal state a C program's `main` starts with, for hosts
//! that run JIT'd code as one; and handlers compiled before they are installed.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Blocks every signal on the calling thread, one of the JIT's own (the tier-up thread, a
/// thread resolving a lazy call): the program's signals go to its own threads.
pub(crate) fn block_all_signals_here() {
    // SAFETY: sigset operations on a local set, then pthread_sigmask on the calling thread.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// Resolves a handler JIT'd code is installing, if it is a lazy stub, and every lazy stub its
/// code can reach (see [`crate::lazy::resolve_reachable_from`]): a first call inside the
/// handler would enter the resolver there, and the handler may have interrupted code holding
/// a lock the resolver needs (the allocator's: found with googletest's SIGPROF handler, which
/// deadlocked a death test, and a handler calling functions not compiled yet, which
/// deadlocked every time). Handing the call to another thread would not do: what it frees or
/// grows was often allocated on this thread, in the arena it holds locked. A function the
/// handler reaches only through a pointer it did not take itself is still compiled on its
/// first call.
fn compile_handler(sig: c_int, handler: libc::sighandler_t) {
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == libc::SIG_ERR {
        return;
    }
    // A handler that installs itself again (the System V way: `sysv_signal` and C11's `signal`
    // reset the action when the signal arrives) does so inside the signal, where compiling
    // (or even looking, which allocates) could deadlock; it was compiled the first time.
    let done = usize::try_from(sig).ok().and_then(|s| COMPILED.get(s));
    if done.is_some_and(|d| d.load(Ordering::Relaxed) == handler) {
        return;
    }
    crate::lazy::resolve_reachable_from(handler as u64, crate::object_layer::recorded_references);
    if let Some(d) = done {
        d.store(handler, Ordering::Relaxed);
    }
}

/// Per signal, the handler [`compile_handler`] last compiled for it.
static COMPILED: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

/// `sigaction` for JIT'd code: see [`compile_handler`].
unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if !act.is_null() {
        // SAFETY: the caller passes a readable `struct sigaction` or null, as libc requires.
        compile_handler(sig, unsafe { (*act).sa_sigaction });
    }
    // SAFETY: forwards the caller's arguments unchanged.
    unsafe { libc::sigaction(sig, act, old) }
}

unsafe extern "C" {
    #[link_name = "__sysv_signal"]
    fn libc_sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t;
    #[link_name = "sigset"]
    fn libc_sigset(sig: c_int, disposition: libc::sighandler_t) -> libc::sighandler_t;
}

/// `signal`, `bsd_signal` and `ssignal` (the same in glibc) for JIT'd code: see
/// [`compile_handler`].
unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    compile_handler(sig, handler);
    // SAFETY: forwards the caller's arguments unchanged.
    unsafe { libc::signal(sig, handler) }
}

/// `__sysv_signal` and `sysv_signal` for JIT'd code (C code built for a strict standard,
/// `-std=c11`, calls `signal` under the first name): see [`compile_handler`].
unsafe extern "C" fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    compile_handler(sig, handler);
    // SAFETY: forwards the caller's arguments unchanged.
    unsafe { libc_sysv_signal(sig, handler) }
}

/// `sigset` for JIT'd code: see [`compile_handler`] (`SIG_HOLD` names no stub).
unsafe extern "C" fn sigset(sig: c_int, disposition: libc::sighandler_t) -> libc::sighandler_t {
    compile_handler(sig, disposition);
    // SAFETY: forwards the caller's arguments unchanged.
    unsafe { libc_sigset(sig, disposition) }
}

/// The addresses JIT'd code should bind the functions that install signal handlers to.
pub(crate) fn overrides() -> [(&'static str, usize); 7] {
    [
        ("sigaction", sigaction as *const () as usize),
        ("signal", signal as *const () as usize),
        ("bsd_signal", signal as *const () as usize),
        ("ssignal", signal as *const () as usize),
        ("__sysv_signal", sysv_signal as *const () as usize),
        ("sysv_signal", sysv_signal as *const () as usize),
        ("sigset", sigset as *const () as usize),
    ]
}
