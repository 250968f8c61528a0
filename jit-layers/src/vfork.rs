//! `vfork` as `fork`: for JIT'd code, and through the executable for the libraries it loads.
//!
//! A `vfork` child borrows its parent: it runs in the parent's memory, on the stack of the
//! thread that called `vfork` (which waits until the child execs or exits), and no fork
//! handlers run. The JIT cannot tell such a child from its parent. When the child calls a
//! function not compiled yet, the compile is queued on the parent's pool, whose workers run
//! on beside the child, in the same memory, and the child waits for it with the parent's
//! thread's identity; whatever then goes wrong stops both. A `fork` child is a copy, which
//! compiles what it calls itself (see the pool's fork handling in `jit_core::dispatch`).
//!
//! JIT'd code's `vfork` binds to [`overrides`]. Libraries the program loads call `vfork` too,
//! and their children may call JIT'd code (CPython's `_posixsubprocess` extension calls JIT'd
//! `libpython` functions in its child; its tests hung under `orcjit run`). Those bind to
//! libc's, unless the executable defines `vfork` itself: the dynamic loader searches the
//! executable first. [`vfork_is_fork!`](crate::vfork_is_fork) defines it; the `orcjit`
//! commands use it, and export it with the link argument `-Wl,--export-dynamic-symbol=vfork`
//! (see the workspace's `build.rs`).
//!
//! POSIX allows `vfork` to be `fork`: a conforming child only execs or calls `_exit`, and
//! sees no difference. One that writes its parent's variables does: natively the parent sees
//! the writes, under the JIT it does not. The price is the fork's copy of the page tables,
//! which grows with the process's memory (where `vfork` costs nothing).

/// The addresses JIT'd code should bind `vfork` and `clone` to.
pub(crate) fn overrides() -> [(&'static str, usize); 2] {
    [("vfork", vfork as *const () as usize), ("clone", clone as *const () as usize)]
}

/// `clone` for JIT'd code. A `clone` whose only flag is SIGCHLD, the signal the child's end
/// sends, makes a copy of the process as `fork` does, but runs no fork handlers: the child
/// would wait for ever on the parent's pool for the first function it has to compile
/// (googletest's "threadsafe" death tests make their children so). That one is a `fork` that
/// runs orcjit's fork handling but none of the program's `pthread_atfork` handlers, whose
/// child calls `f(arg)` and exits with its result, on its copy of the calling thread's stack
/// rather than on `stack`, which only the child would have used. Any other `clone` is
/// libc's (a child sharing the memory, a thread, is not a copy; and glibc's own, under
/// `posix_spawn`, runs no JIT'd code).
///
/// libc's `clone` is variadic (the parent and child tid pointers and the TLS word follow
/// `arg`). Stable Rust cannot define a variadic function, but the x86-64 psABI passes
/// variadic integer arguments exactly as fixed ones (§3.5.7: in %rdi, %rsi, %rdx, %rcx, %r8,
/// %r9, then on the stack; %al only counts vector registers): declared with all seven, this
/// receives what the caller passed, and whatever the registers and stack slot hold for
/// arguments it did not pass, which libc reads only when `flags` asks for them.
unsafe extern "C" fn clone(
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    stack: *mut libc::c_void,
    flags: libc::c_int,
    arg: *mut libc::c_void,
    parent_tid: *mut libc::pid_t,
    tls: *mut libc::c_void,
    child_tid: *mut libc::pid_t,
) -> libc::c_int {
    if flags == libc::SIGCHLD {
        let pid = crate::at_fork::fork_without_handlers();
        if pid == 0 {
            // SAFETY: the child ends when the function it was made for returns, as with clone.
            unsafe { libc::_exit(f(arg)) }
        }
        return pid;
    }
    // SAFETY: the caller's own arguments, as libc's clone takes them.
    unsafe { libc::clone(f, stack, flags, arg, parent_tid, tls, child_tid) }
}

extern "C" fn vfork() -> libc::pid_t {
    fork()
}

/// `fork()`, for [`vfork_is_fork!`](crate::vfork_is_fork).
pub fn fork() -> libc::pid_t {
    // SAFETY: fork has no preconditions here: the caller asked for a child process, and the
    // pools' fork handlers keep the child's copy of the JIT usable.
    unsafe { libc::fork() }
}

/// Defines `vfork` in the crate that expands it (an executable, which must also export it:
/// link it with `-Wl,--export-dynamic-symbol=vfork`) as `fork`, so that the children of every
/// library in the process are copies (see the module's documentation).
#[macro_export]
macro_rules! vfork_is_fork {
    () => {
        /// `vfork` for the whole process: a `fork` (see `jit_layers::vfork_is_fork`).
        #[unsafe(no_mangle)]
        pub extern "C" fn vfork() -> i32 {
            $crate::vfork_fork()
        }
    };
}
