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

/// The address JIT'd code should bind `vfork` to.
pub(crate) fn overrides() -> [(&'static str, usize); 1] {
    [("vfork", vfork as *const () as usize)]
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
