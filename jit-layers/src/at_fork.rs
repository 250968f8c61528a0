//! `pthread_atfork` for JIT'd code. jit-link defines its `pthread_atfork` as glibc's
//! `libc_nonshared.a` does, `__register_atfork(prepare, parent, child, __dso_handle)`; JIT'd
//! code binds `__register_atfork` here. The handlers are kept in orcjit's list, run from one
//! trio registered with libc, and forgotten when the object that registered them is freed
//! ([`forget`]), as glibc forgets a library's handlers when it is unloaded: libc's list keeps
//! no pointer into freed JIT'd code, which a later `fork` would call.
//!
//! Order, as POSIX and glibc have it: prepare handlers run most recent first, parent and child
//! handlers in the order registered.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::sync::Once;

use parking_lot::Mutex;

type Callback = Option<unsafe extern "C" fn()>;

/// One `pthread_atfork` registration, against the registering object's DSO handle.
#[derive(Clone, Copy)]
struct AtFork {
    prepare: Callback,
    parent: Callback,
    child: Callback,
    dso: usize,
}

static HANDLERS: Mutex<Vec<AtFork>> = Mutex::new(Vec::new());
static LIBC_TRIO: Once = Once::new();

thread_local! {
    /// The handlers the forking thread's `prepare` ran, for its `parent` and `child` phases
    /// (the child is a copy of this thread).
    static FORKING: RefCell<Vec<AtFork>> = const { RefCell::new(Vec::new()) };
    /// Set while this thread forks for a `clone` (see [`fork_without_handlers`]).
    static SKIP: Cell<bool> = const { Cell::new(false) };
}

/// `fork()` that runs none of JIT'd code's handlers, as a raw `clone` runs no fork handlers
/// (orcjit's own fork handling still runs, so the child's copy of the JIT works).
pub(crate) fn fork_without_handlers() -> libc::pid_t {
    SKIP.with(|s| s.set(true));
    let pid = crate::vfork::fork();
    SKIP.with(|s| s.set(false));
    pid
}

/// `__register_atfork` for JIT'd code: keeps the handlers for the next `fork`.
pub(crate) unsafe extern "C" fn register_atfork(
    prepare: Callback,
    parent: Callback,
    child: Callback,
    dso: *mut c_void,
) -> c_int {
    let mut status = 0;
    LIBC_TRIO.call_once(|| {
        // SAFETY: registers plain extern "C" functions with no captured state.
        status = unsafe { libc::pthread_atfork(Some(run_prepare), Some(run_parent), Some(run_child)) };
    });
    if status != 0 {
        return status;
    }
    HANDLERS.lock().push(AtFork { prepare, parent, child, dso: dso as usize });
    0
}

/// Forgets the handlers registered against `dso`: its object's memory is about to be freed.
pub(crate) fn forget(dso: usize) {
    HANDLERS.lock().retain(|h| h.dso != dso);
}

extern "C" fn run_prepare() {
    let handlers = if SKIP.with(Cell::get) { Vec::new() } else { HANDLERS.lock().clone() };
    for h in handlers.iter().rev() {
        if let Some(f) = h.prepare {
            // SAFETY: a handler registered by JIT'd code whose object is still linked (its
            // handlers are forgotten before its memory is freed).
            unsafe { f() };
        }
    }
    // Held through the fork, so the child does not inherit it locked by a thread it lacks;
    // taken after the prepare handlers, which may register more.
    std::mem::forget(HANDLERS.lock());
    // (A thread forking from its thread-local destructors, after this one is gone, runs no
    // parent or child handler; `with` would panic across the C frame.)
    let _ = FORKING.try_with(|f| *f.borrow_mut() = handlers);
}

/// Releases the list `run_prepare` held and runs the handlers it ran, in the order registered.
fn after_fork(pick: fn(&AtFork) -> Callback) {
    // SAFETY: `run_prepare` locked it on this thread before the fork (libc runs the prepare
    // handler of a trio before its parent and child handlers) and forgot the guard.
    unsafe { HANDLERS.force_unlock() };
    let handlers = FORKING.try_with(|f| std::mem::take(&mut *f.borrow_mut())).unwrap_or_default();
    for h in &handlers {
        if let Some(f) = pick(h) {
            // SAFETY: as in `run_prepare`.
            unsafe { f() };
        }
    }
}

extern "C" fn run_parent() {
    after_fork(|h| h.parent);
}

extern "C" fn run_child() {
    after_fork(|h| h.child);
}
