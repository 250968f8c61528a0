//! The exit of JIT'd programs: the handlers their code registers with `atexit` and
//! `__cxa_atexit` are kept here rather than in libc, and JIT'd calls to `exit` run them (and
//! the hooks a host adds, such as the JIT's `.fini_array` entries) while the JIT can still
//! compile, before libc's `exit` runs its own handlers and tears the process down.
//!
//! Why not libc's list: libc runs exit handlers in reverse order of registration, and LLVM
//! registers destructors for statics it builds lazily, during compiles. With lazy compilation
//! an exit handler, or a function it calls, may be compiled for the first time at exit: after
//! some of those destructors ran, in libc's order.

use std::ffi::{c_int, c_void};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

/// A handler as `__cxa_atexit` takes it: `f(arg)`, registered against the DSO handle `dso`.
#[derive(Clone, Copy)]
struct Handler {
    f: unsafe extern "C" fn(*mut c_void),
    arg: usize,
    dso: usize,
}

static HANDLERS: Mutex<Vec<Handler>> = Mutex::new(Vec::new());
type Hook = Box<dyn Fn() + Send + Sync>;
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());
static SEQUENCE: Once = Once::new();
/// Held (shared) by every LLVM compile; taken for good when the program exits.
static COMPILES: RwLock<()> = RwLock::new(());
/// Set when the program exited while a compile was running.
static SKIP_TEARDOWN: AtomicBool = AtomicBool::new(false);
static LIBC_HOOK: Once = Once::new();

/// `__cxa_atexit` for JIT'd code (its `atexit` becomes `__cxa_atexit(f, NULL, __dso_handle)`):
/// keeps the handler for [`run_exit_sequence`] or [`finalize`].
pub(crate) unsafe extern "C" fn cxa_atexit(
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    // A program that returns from a host's main rather than calling exit still gets its
    // handlers run, when libc's exit reaches this (a best effort: later LLVM statics are gone).
    LIBC_HOOK.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe { libc::atexit(run_exit_sequence_from_libc) };
    });
    HANDLERS.lock().push(Handler { f, arg: arg as usize, dso: dso as usize });
    0
}

/// The `at_quick_exit` handlers of JIT'd code, kept as its `atexit` handlers are.
static QUICK_EXIT_HANDLERS: Mutex<Vec<(unsafe extern "C" fn(), usize)>> = Mutex::new(Vec::new());
static QUICK_EXIT_HOOK: Once = Once::new();

unsafe extern "C" {
    /// glibc: registers `f` to run at `quick_exit`, against the DSO handle `dso`.
    fn __cxa_at_quick_exit(f: unsafe extern "C" fn(), dso: *mut c_void) -> c_int;
}

/// `__cxa_at_quick_exit` for JIT'd code (its `at_quick_exit` becomes
/// `__cxa_at_quick_exit(f, __dso_handle)`): keeps the handler for libc's `quick_exit`, which
/// runs them through one handler registered with libc, and forgets it in [`finalize`].
pub(crate) unsafe extern "C" fn cxa_at_quick_exit(f: unsafe extern "C" fn(), dso: *mut c_void) -> c_int {
    let mut status = 0;
    QUICK_EXIT_HOOK.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state, for good.
        status = unsafe { __cxa_at_quick_exit(run_quick_exit_handlers, std::ptr::null_mut()) };
    });
    if status != 0 {
        return status;
    }
    QUICK_EXIT_HANDLERS.lock().push((f, dso as usize));
    0
}

/// Runs the `at_quick_exit` handlers of JIT'd code, most recent first (libc's `quick_exit`).
extern "C" fn run_quick_exit_handlers() {
    while let Some((f, _)) = QUICK_EXIT_HANDLERS.lock().pop() {
        // SAFETY: a handler registered by JIT'd code whose object is still linked (its
        // handlers are forgotten before its memory is freed).
        unsafe { f() };
    }
}

/// `exit` for JIT'd code: runs [`run_exit_sequence`], then [`exit_process`].
pub(crate) extern "C" fn exit(status: c_int) -> ! {
    run_exit_sequence();
    exit_process(status)
}

/// Ends the process after [`run_exit_sequence`]: libc's `exit` (its own handlers, static
/// destructors, stdio flushed), unless a compile (a second tier, a speculative guess, another
/// thread's first call) was still running when the program exited; then stdio is flushed and
/// the process ends without destroying LLVM's statics under that compile (the handlers JIT'd
/// code registered have run).
pub fn exit_process(status: c_int) -> ! {
    if SKIP_TEARDOWN.load(Ordering::Acquire) {
        // SAFETY: flushes every stdio stream, then ends the process at once.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::_exit(status)
        }
    }
    // SAFETY: what the program asked for; libc runs its own handlers and flushes stdio.
    unsafe { libc::exit(status) }
}

/// Permission to run LLVM: `None` once the program has exited (libc is about to destroy
/// LLVM's statics). Hold it for the whole compile.
#[cfg(feature = "llvm")]
pub(crate) fn compile_permit() -> Option<parking_lot::RwLockReadGuard<'static, ()>> {
    COMPILES.try_read()
}

/// Stops compiles for good: none starts after this; if one is running, the process will end
/// without libc's teardown (see [`exit_process`]).
fn stop_compiles() {
    match COMPILES.try_write() {
        Some(guard) => std::mem::forget(guard),
        None => SKIP_TEARDOWN.store(true, Ordering::Release),
    }
}

extern "C" fn run_exit_sequence_from_libc() {
    run_exit_sequence();
}

/// Adds a hook that [`run_exit_sequence`] runs after the handlers (e.g. `.fini_array` entries,
/// which native programs run after the `atexit` handlers).
pub fn add_exit_hook(hook: impl Fn() + Send + Sync + 'static) {
    HOOKS.lock().push(Box::new(hook));
}

/// Runs, once per process, every handler JIT'd code registered and has not run, most recent
/// first (handlers registered meanwhile included), then the exit hooks, in the order added.
/// Call it before `exit` when returning from a JIT'd `main`; a JIT'd call to `exit` calls it.
pub fn run_exit_sequence() {
    SEQUENCE.call_once(|| {
        // libc's exit destroys the exiting thread's thread-locals first (C++ `thread_local`
        // objects, registered with `__cxa_thread_atexit`), then runs the exit handlers.
        call_tls_dtors();
        while let Some(h) = HANDLERS.lock().pop() {
            // SAFETY: a handler registered by JIT'd code, whose code is still mapped (its
            // object's memory is freed only after its handlers ran, see `finalize`).
            unsafe { (h.f)(h.arg as *mut c_void) };
        }
        let hooks = std::mem::take(&mut *HOOKS.lock());
        for hook in hooks {
            hook();
        }
        stop_compiles();
    });
}

/// Runs the calling thread's thread-local destructors now, as glibc's `exit` does before its
/// exit handlers (`__call_tls_dtors`, glibc 2.18 and later; it empties the list, so libc's
/// own call later finds nothing). Without that function (another libc), they run when
/// libc's `exit` does, after the JIT'd program's exit handlers.
fn call_tls_dtors() {
    static CALL_TLS_DTORS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let f = *CALL_TLS_DTORS.get_or_init(|| {
        // SAFETY: a NUL-terminated name looked up in the whole process.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__call_tls_dtors".as_ptr()) as usize }
    });
    if f != 0 {
        // SAFETY: glibc's `void __call_tls_dtors (void)`, which runs and forgets the calling
        // thread's registered thread-local destructors.
        let f: unsafe extern "C" fn() = unsafe { std::mem::transmute(f) };
        // SAFETY: as above.
        unsafe { f() };
    }
}

/// `__cxa_finalize(dso)` for the handlers kept here: runs the exit handlers registered against
/// `dso`, most recent first, and forgets them; forgets its `at_quick_exit` and
/// `pthread_atfork` handlers (the object's memory is about to be freed).
pub(crate) fn finalize(dso: usize) {
    QUICK_EXIT_HANDLERS.lock().retain(|&(_, d)| d != dso);
    crate::at_fork::forget(dso);
    loop {
        let next = {
            let mut handlers = HANDLERS.lock();
            let at = handlers.iter().rposition(|h| h.dso == dso);
            at.map(|i| handlers.remove(i))
        };
        let Some(h) = next else { break };
        // SAFETY: as in `run_exit_sequence`; the caller frees the object's memory afterwards.
        unsafe { (h.f)(h.arg as *mut c_void) };
    }
}

/// `pthread_exit` for JIT'd code. On the process's initial thread (where hosts such as the
/// `orcjit` command run `main`), natively the process lives on while any other thread runs
/// and ends as `exit(0)` when the last one exits; the JIT's pool threads never exit, so the
/// process would never end. There the call waits until no thread of the program is left,
/// then exits through [`exit`]. Elsewhere it is libc's `pthread_exit`.
pub(crate) extern "C" fn pthread_exit(retval: *mut c_void) -> ! {
    // SAFETY: getpid and gettid have no preconditions.
    let initial = unsafe { libc::getpid() == libc::gettid() };
    if initial {
        while program_threads_left() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        exit(0)
    }
    // SAFETY: ends the calling thread as JIT'd code asked.
    unsafe { libc::pthread_exit(retval) }
}

/// Whether a thread other than the calling one and the JIT's own (the pool's `orcjit-worker-N`,
/// and `orcjit-tier-up`, which queues second-tier compiles) is
/// alive. Threads the program starts inherit the name of the thread that starts them
/// (`orcjit` or `orcjit-llvm` for the initial thread).
fn program_threads_left() -> bool {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() }.to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
    tasks.flatten().any(|task| {
        task.file_name().to_str() != Some(me.as_str())
            && std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| !is_jit_thread(comm.trim_end()))
    })
}

/// A thread of the JIT's own, by its name (`comm`).
fn is_jit_thread(comm: &str) -> bool {
    comm.starts_with("orcjit-worker-") || comm == "orcjit-tier-up"
}

/// The addresses JIT'd code should bind `__cxa_atexit`, `__cxa_at_quick_exit`,
/// `__register_atfork` (its `pthread_atfork`, see `at_fork`), `exit` and `pthread_exit` to.
pub(crate) fn overrides() -> [(&'static str, usize); 5] {
    [
        ("__cxa_atexit", cxa_atexit as *const () as usize),
        ("__cxa_at_quick_exit", cxa_at_quick_exit as *const () as usize),
        ("__register_atfork", crate::at_fork::register_atfork as *const () as usize),
        ("exit", exit as *const () as usize),
        ("pthread_exit", pthread_exit as *const () as usize),
    ]
}
