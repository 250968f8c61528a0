//! Lazy re-exports: the materialization unit that defines stubs standing for bodies in other
//! dylibs, the resolver that looks a body up on its stub's first call, and [`LazyReexports`],
//! the manager that owns stubs, trampoline and resolver (LLVM's `LazyReexportsManager` and
//! `lazyReexports`, `llvm/lib/ExecutionEngine/Orc/LazyReexports.cpp`).

use std::collections::VecDeque;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use jit_core::{
    DylibId, Error, ExecutionSession, ExecutorAddr, FxHashSet, Interface, JitDylib, MaterializationResponsibility,
    MaterializationUnit, ResourceKey, ResourceManager, ResourceTracker, Result, SymbolFlags, SymbolName,
};
use jit_mem::MemoryManager;
use parking_lot::{Mutex, RwLock};

use super::reentry::{Reentry, StateSave};
use super::stubs::{BATCH_STUBS, NewBatch};
use super::table::{Refusal, StubTable};

/// One lazy re-export: `stub`, defined with `flags`, stands for `body` in `body_dylib`.
#[derive(Clone, Debug)]
pub struct LazyStub {
    pub stub: SymbolName,
    /// Must include [`SymbolFlags::CALLABLE`].
    pub flags: SymbolFlags,
    pub body_dylib: JitDylib,
    pub body: SymbolName,
}

impl LazyStub {
    /// An exported, callable stub `stub` for `body` in `body_dylib`.
    pub fn new(stub: SymbolName, body_dylib: &JitDylib, body: SymbolName) -> LazyStub {
        LazyStub { stub, flags: SymbolFlags::EXPORTED | SymbolFlags::CALLABLE, body_dylib: body_dylib.clone(), body }
    }
}

/// Where a materialized stub stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StubStatus {
    /// The stub's address: the symbol's address, what callers call.
    pub stub: ExecutorAddr,
    pub flags: SymbolFlags,
    /// Where calls go now: `None` while they still enter the resolver.
    pub target: Option<ExecutorAddr>,
}

/// A manager's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Stubs defined in some dylib.
    pub live_stubs: usize,
    /// Stubs made and not handed out yet.
    pub free_stubs: usize,
    /// Stubs whose tracker was removed (never reused).
    pub dead_stubs: usize,
    /// Batches of stubs whose memory is held.
    pub batches: usize,
    /// Calls that entered the resolver.
    pub resolver_entries: u64,
}

type FirstCallListener = dyn Fn(&JitDylib, &SymbolName, &JitDylib, &SymbolName) + Send + Sync;

struct Shared {
    session: ExecutionSession,
    memory: Arc<dyn MemoryManager>,
    reentry: Reentry,
    table: Mutex<StubTable>,
    listener: RwLock<Option<Arc<FirstCallListener>>>,
    resolver_entries: AtomicU64,
}

/// Lazy call-through stubs for one session: a function's body is looked up (and so compiled
/// and linked) the first time its stub is called, not when the stub's address is taken.
///
/// Contract:
/// - [`add`](Self::add) defines stubs in a dylib. A stub is materialized (made, and given its
///   address) when first looked up, with no dependency on its body; its body is looked up in its
///   own dylib alone, at Ready, the first time the stub is *called*, on the calling thread (a
///   program thread or a pool worker: the session's blocking lookup helps the pool while it
///   waits, so this works with a pool of one thread). Concurrent first calls all enter the
///   resolver; the session materializes the body once, and all of them go on to it.
/// - A call that cannot be completed (the body fails to compile or link, does not exist, or the
///   stub's tracker was removed) prints the reason to stderr and aborts the process: there is
///   no caller to return an error to.
/// - Later calls cost one indirect jump. [`redirect`](Self::redirect) repoints a stub
///   atomically.
/// - Removing a stub's tracker makes calls through its old address abort with a clear message
///   (the stub is never reused). Stub memory is freed when the session ends (for stubs) and
///   when the last handle is dropped (for the trampoline). Calling a stub after that, like
///   calling any freed JIT'd code, is the caller's error.
#[derive(Clone)]
pub struct LazyReexports {
    shared: Arc<Shared>,
}

impl LazyReexports {
    /// A manager making its stubs and trampoline in `memory`, registered with `session` as a
    /// resource manager (so that removing a tracker retires its stubs).
    pub fn new(session: &ExecutionSession, memory: Arc<dyn MemoryManager>) -> Result<LazyReexports> {
        Self::with_state_save(session, memory, StateSave::detect())
    }

    pub(super) fn with_state_save(
        session: &ExecutionSession,
        memory: Arc<dyn MemoryManager>,
        save: StateSave,
    ) -> Result<LazyReexports> {
        let reentry = Reentry::new(&*memory, save, resolve)?;
        let shared = Arc::new(Shared {
            session: session.clone(),
            memory,
            reentry,
            table: Mutex::new(StubTable::default()),
            listener: RwLock::new(None),
            resolver_entries: AtomicU64::new(0),
        });
        // No stub exists yet, so nothing can reach the trampoline before this.
        shared.reentry.set_context(Arc::as_ptr(&shared) as *const ());
        session.register_resource_manager(Arc::new(LazyResources(shared.clone())));
        let mut managers = MANAGERS.lock();
        managers.retain(|m| m.strong_count() > 0);
        managers.push(Arc::downgrade(&shared));
        drop(managers);
        tracing::debug!(target: "orcjit", state_save = ?shared.reentry.state_save(), "lazy re-exports manager ready");
        Ok(LazyReexports { shared })
    }

    /// Defines in `dylib` one stub per entry (see the type's contract), tracked by `tracker`
    /// (or the dylib's default tracker). Every stub must be callable; names must be distinct
    /// (and, as for any definition, new to the dylib).
    pub fn add(&self, dylib: &JitDylib, stubs: Vec<LazyStub>, tracker: Option<&ResourceTracker>) -> Result<()> {
        if stubs.is_empty() {
            return Ok(());
        }
        dylib.define_boxed(self.unit(dylib.name(), stubs)?, tracker)
    }

    /// The unit [`add`](Self::add) defines (`dylib` names the dylib in messages), for a layer
    /// that hands stubs to a dylib itself, e.g. with `MaterializationResponsibility::replace`.
    pub fn unit(&self, dylib: &str, stubs: Vec<LazyStub>) -> Result<Box<dyn MaterializationUnit>> {
        let mut seen = FxHashSet::default();
        let mut interface = Interface::new();
        for s in &stubs {
            if !s.flags.contains(SymbolFlags::CALLABLE)
                || s.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY)
            {
                return Err(Error::msg(format!(
                    "lazy stub '{}' in dylib '{}' must be a callable symbol with an address (flags: {:?})",
                    s.stub, dylib, s.flags
                )));
            }
            if !seen.insert(s.stub.clone()) {
                return Err(Error::DuplicateDefinition {
                    symbol: s.stub.clone(),
                    dylib: Arc::from(dylib),
                    definers: None,
                });
            }
            interface.push(s.stub.clone(), s.flags);
        }
        let name = match stubs.len() {
            0 => format!("no lazy stubs in '{dylib}'"),
            1 => format!("lazy stub '{}' in '{dylib}'", stubs[0].stub),
            n => format!("lazy stubs '{}' and {} more in '{dylib}'", stubs[0].stub, n - 1),
        };
        Ok(Box::new(LazyUnit { shared: self.shared.clone(), name, interface, stubs }))
    }

    /// Points stub `name` of `dylib` at `addr`, atomically: calls already in the old body
    /// finish there, every call that starts after this returns goes to `addr` (for REPL
    /// redefinition). The stub must be materialized (looked up at least once).
    pub fn redirect(&self, dylib: &JitDylib, name: &SymbolName, addr: ExecutorAddr) -> Result<()> {
        if addr == ExecutorAddr::NULL {
            return Err(Error::msg(format!(
                "cannot redirect lazy stub '{name}' in dylib '{}' to address 0",
                dylib.name()
            )));
        }
        self.shared.table.lock().redirect(dylib, name, addr)
    }

    /// Calls `f(stub dylib, stub, body dylib, body)` when a stub is first called, on the
    /// calling thread, outside every lock, before its body is looked up (a hook for
    /// speculation). Replaces the previous listener.
    pub fn set_first_call_listener(
        &self,
        f: impl Fn(&JitDylib, &SymbolName, &JitDylib, &SymbolName) + Send + Sync + 'static,
    ) {
        *self.shared.listener.write() = Some(Arc::new(f));
    }

    /// Where stub `name` of `dylib` stands, if it is materialized and live.
    pub fn stub_status(&self, dylib: &JitDylib, name: &SymbolName) -> Option<StubStatus> {
        self.shared.table.lock().status(dylib, name)
    }

    pub fn stats(&self) -> LazyStats {
        let mut stats = self.shared.table.lock().stats();
        stats.resolver_entries = self.shared.resolver_entries.load(Ordering::Relaxed);
        stats
    }

    pub fn session(&self) -> &ExecutionSession {
        &self.shared.session
    }
}

impl std::fmt::Debug for LazyReexports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyReexports")
            .field("state_save", &self.shared.reentry.state_save())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shared {
    /// Makes stubs for what `mr` holds of `stubs` and emits them.
    ///
    /// Every stub the responsibility holds is made now, not only the requested ones: a stub is
    /// 24 bytes and never compiles anything, while handing unrequested ones back (as LLVM's
    /// older `LazyReexportsMaterializationUnit` does) makes a module of n functions cost O(n²)
    /// in re-defined interfaces as they are called one by one.
    fn emit(self: &Arc<Self>, mut mr: MaterializationResponsibility, stubs: Vec<LazyStub>) {
        let stubs: Vec<LazyStub> = stubs.into_iter().filter(|s| mr.contains(&s.stub)).collect();
        let n = stubs.len();
        let mut ids = self.table.lock().take_free(n);
        let mut batch = None;
        if ids.len() < n {
            let missing = n - ids.len();
            match self.new_batch(missing) {
                Ok((new, index, first)) => {
                    ids.extend(first..first + missing as u32);
                    batch = Some((new, index));
                }
                Err(e) => {
                    self.table.lock().untake(&ids);
                    return mr.fail(e);
                }
            }
        }
        let dylib = mr.dylib();
        let defs = match mr.with_resource_key(|key| self.table.lock().bind(&ids, &stubs, &dylib, key)) {
            Ok(defs) => defs,
            Err(e) => {
                self.table.lock().untake(&ids);
                self.finish(batch, None);
                return mr.fail(e);
            }
        };
        if let Err(e) = mr.notify_resolved(defs) {
            self.table.lock().kill(&ids);
            self.finish(batch, None);
            return mr.fail(e);
        }
        // Addresses go out before the batch is finalized, as a linker reports addresses before
        // it finalizes: a manager may complete the finalize only once in-flight neighbours
        // finalize, and those may be links waiting for these very addresses.
        self.finish(batch, Some(mr));
    }

    /// A new batch of at least `needed` stubs, written and recorded (in flight).
    fn new_batch(&self, needed: usize) -> Result<(NewBatch, u32, u32)> {
        let count = u32::try_from(needed)
            .map_err(|_| Error::msg(format!("lazy stubs: {needed} stubs in one unit is too many")))?
            .max(BATCH_STUBS);
        let mut batch = NewBatch::allocate(&*self.memory, count)?;
        let (index, first) = self.table.lock().add_batch(batch.stubs(), batch.slots(), batch.count())?;
        if let Err(e) = batch.write(first, self.reentry.entry()) {
            self.table.lock().batch_failed(index);
            return Err(e);
        }
        Ok((batch, index, first))
    }

    /// Finalizes `batch` (its free stubs then join the pool) and emits `mr`'s stubs once
    /// they can run.
    fn finish(self: &Arc<Self>, batch: Option<(NewBatch, u32)>, mr: Option<MaterializationResponsibility>) {
        let Some((batch, index)) = batch else {
            if let Some(mr) = mr {
                // Stubs depend on nothing (that is the point); an error here has already
                // failed them and told their waiters.
                let _ = mr.notify_emitted(Vec::new());
            }
            return;
        };
        let shared = self.clone();
        batch.finalize(Box::new(move |result| {
            match result {
                Ok(alloc) => {
                    shared.table.lock().batch_finalized(index, alloc);
                    if let Some(mr) = mr {
                        let _ = mr.notify_emitted(Vec::new());
                    }
                }
                Err(e) => {
                    shared.table.lock().batch_failed(index);
                    if let Some(mr) = mr {
                        mr.fail(Error::msg(format!("lazy stubs: cannot finalize their memory: {e}")));
                    }
                }
            }
            shared.release_if_ended();
        }));
    }

    /// Frees the batches no live stub uses once the session has ended.
    fn release_if_ended(&self) {
        if self.session.has_ended() {
            let freed = self.table.lock().release_unused();
            drop(freed);
        }
    }

    /// The resolver's work for a call through stub `id`: the address to go on to, or the
    /// message to die with.
    fn resolve(&self, id: u64) -> std::result::Result<u64, String> {
        self.resolve_as(id, true)
    }

    /// [`resolve`](Self::resolve); `call_made` says whether a call entered the resolver (it
    /// is counted, and the first-call listener hears of it), or the stub is resolved ahead of
    /// its calls.
    fn resolve_as(&self, id: u64, call_made: bool) -> std::result::Result<u64, String> {
        if call_made {
            self.resolver_entries.fetch_add(1, Ordering::Relaxed);
        }
        let call = self.table.lock().enter(id).map_err(|r| refusal(id, r))?;
        let _span = tracing::debug_span!(target: "orcjit", "lazy call", stub = %call.stub, body = %call.body).entered();
        if call.first && call_made {
            let listener = self.listener.read().clone();
            if let Some(listener) = listener {
                listener(&call.dylib, &call.stub, &call.body_dylib, &call.body);
            }
        }
        let failed = |why: &dyn std::fmt::Display| {
            format!(
                "orcjit: lazy call to '{}' (body '{}' in '{}') failed: {why}",
                call.stub,
                call.body,
                call.body_dylib.name()
            )
        };
        let session = call.body_dylib.session();
        let body = session.lookup_symbol(&call.body_dylib.search_order(), &call.body).map_err(|e| failed(&e))?;
        if body.addr == ExecutorAddr::NULL || body.addr.0 == call.addr {
            return Err(failed(&format_args!("the body's address is {:#x}, which cannot be called", body.addr.0)));
        }
        self.table.lock().publish(id, body.addr.0).map_err(|r| refusal(id, r))
    }
}

/// Every manager of the process, for [`resolve_stub_at`].
static MANAGERS: Mutex<Vec<Weak<Shared>>> = parking_lot::const_mutex(Vec::new());

/// If `addr` is a lazy stub whose calls still enter the resolver, resolves it now, on the
/// calling thread: its body is compiled and linked, and later calls go straight to it. For a
/// function about to be called where the resolver must not run: a signal handler may
/// interrupt code that holds the allocator's lock, and the resolver allocates. Returns
/// whether `addr` was such a stub. A failure is reported when the stub is called, as for any
/// first call.
pub fn resolve_stub_at(addr: u64) -> bool {
    let managers: Vec<Arc<Shared>> = MANAGERS.lock().iter().filter_map(Weak::upgrade).collect();
    for shared in managers {
        let id = shared.table.lock().unresolved_at(addr);
        if let Some(id) = id {
            ahead(&shared, id);
            return true;
        }
    }
    false
}

/// The name of the live lazy stub at `addr`, if one is there (for JIT'd `dladdr`).
pub(crate) fn stub_name_at(addr: u64) -> Option<String> {
    let managers: Vec<Arc<Shared>> = MANAGERS.lock().iter().filter_map(Weak::upgrade).collect();
    managers.iter().find_map(|m| m.table.lock().stub_name_at(addr)).map(|n| n.as_str().to_string())
}

/// Resolves stub `id` ahead of its calls (the listener hears nothing: no call is made); a
/// failure is left for a call to report.
fn ahead(shared: &Shared, id: u64) {
    if let Err(message) = shared.resolve_as(id, false) {
        tracing::debug!(target: "orcjit", "resolving lazy stub #{id} ahead of its first call: {message}");
    }
}

/// [`resolve_stub_at`], and then every lazy stub the body can reach: those its code and data
/// refer to (as `references` tells, for instance
/// [`ObjectLinkingLayer::references`](crate::ObjectLinkingLayer::references)), their bodies',
/// and so on. For a signal handler: what it calls would otherwise be compiled on its first
/// call, inside the handler. A call through a pointer the handler did not take itself may
/// still reach a stub not resolved. Returns whether `addr` was a lazy stub.
pub fn resolve_reachable_from(
    addr: u64,
    references: impl Fn(&(DylibId, SymbolName)) -> Option<Arc<[(DylibId, SymbolName)]>>,
) -> bool {
    let managers: Vec<Arc<Shared>> = MANAGERS.lock().iter().filter_map(Weak::upgrade).collect();
    let Some((shared, stub)) = managers.iter().find_map(|m| m.table.lock().stub_at(addr).map(|s| (m, s))) else {
        return false;
    };
    let _span = tracing::debug_span!(target: "orcjit", "resolve reachable", addr).entered();
    let mut seen: FxHashSet<(DylibId, SymbolName)> = FxHashSet::default();
    let mut bodies: VecDeque<(DylibId, SymbolName)> = VecDeque::new();
    bodies.push_back(through(shared, stub));
    while let Some(symbol) = bodies.pop_front() {
        if !seen.insert(symbol.clone()) {
            continue;
        }
        let Some(refs) = references(&symbol) else { continue };
        for r in refs.iter() {
            if seen.contains(r) {
                continue;
            }
            match managers.iter().find_map(|m| m.table.lock().stub_named(r.0, &r.1).map(|s| (m, s))) {
                Some((m, stub)) => {
                    seen.insert(r.clone());
                    bodies.push_back(through(m, stub));
                }
                None => bodies.push_back(r.clone()),
            }
        }
    }
    true
}

/// Goes through a stub found by [`StubTable::stub_at`] or [`StubTable::stub_named`]: resolves
/// it if its calls still enter the resolver; returns its body.
fn through(shared: &Shared, (id, unresolved, body): (u64, bool, (DylibId, SymbolName))) -> (DylibId, SymbolName) {
    if unresolved {
        ahead(shared, id);
    }
    body
}

fn refusal(id: u64, why: Refusal) -> String {
    match why {
        Refusal::Dead { stub, dylib } => format!(
            "orcjit: call through lazy stub '{stub}' of '{dylib}' after its resource tracker was removed \
             (the caller holds a stale address)"
        ),
        Refusal::Unknown => format!("orcjit: lazy re-entry from unknown stub #{id}"),
    }
}

/// Entered from the re-entry trampoline with the context word and the id the stub pushed;
/// returns where the call goes on. Never unwinds: any failure ends the process.
///
/// # Safety
/// `context` must point to a live `Shared`.
unsafe extern "C" fn resolve(context: *const (), id: u64) -> u64 {
    // SAFETY: the trampoline passes the word `with_state_save` set to its manager's `Shared`.
    // The trampoline's memory belongs to that `Shared`, so while a stub can reach it the
    // `Shared` is alive.
    let shared = unsafe { &*(context as *const Shared) };
    let outcome = if THREAD_LOCALS_ALIVE.try_with(|_| ()).is_ok() {
        catch_unwind(AssertUnwindSafe(|| shared.resolve(id)))
    } else {
        resolve_on_a_fresh_thread(shared, id)
    };
    match outcome {
        Ok(Ok(target)) => target,
        Ok(Err(message)) => die(&message),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            // Dropping the payload could panic again; the process ends anyway.
            std::mem::forget(panic);
            die(&format!("orcjit: lazy call through stub #{id} panicked: {what}"))
        }
    }
}

thread_local! {
    /// Readable until this thread's thread-local variables are destroyed. Touched on every
    /// entry into the resolver, before the lookup first uses the thread-locals it needs, so
    /// on a thread that has been through the resolver it is destroyed with those.
    static THREAD_LOCALS_ALIVE: Alive = const { Alive };
}

/// A value whose destructor marks its thread's thread-locals as destroyed.
struct Alive;

impl Drop for Alive {
    fn drop(&mut self) {}
}

/// The resolver's work, on a thread made for it, for a caller whose thread-local variables
/// are destroyed: a thread of the program that is exiting runs its `pthread_key_create`
/// destructors after them, and one may call a function not compiled yet (googletest's
/// thread-local storage does). The lookup's channels and `std::thread::current()` need
/// thread-locals, and would panic there. The thread is made with `pthread_create`, which
/// needs none of the caller's.
fn resolve_on_a_fresh_thread(shared: &Shared, id: u64) -> std::thread::Result<std::result::Result<u64, String>> {
    struct Job<'a> {
        shared: &'a Shared,
        id: u64,
        outcome: Option<std::thread::Result<std::result::Result<u64, String>>>,
    }
    extern "C" fn run(job: *mut std::ffi::c_void) -> *mut std::ffi::c_void {
        crate::signals::block_all_signals_here();
        // SAFETY: `job` is the `Job` below, which outlives this thread (joined before it goes).
        let job = unsafe { &mut *(job as *mut Job) };
        job.outcome = Some(catch_unwind(AssertUnwindSafe(|| job.shared.resolve(job.id))));
        std::ptr::null_mut()
    }
    let mut job = Job { shared, id, outcome: None };
    // SAFETY: a zeroed pthread_t is a valid out-parameter.
    let mut thread: libc::pthread_t = unsafe { std::mem::zeroed() };
    let job_ptr = &mut job as *mut Job as *mut std::ffi::c_void;
    // SAFETY: `run` is an extern "C" thread function; `job` lives until the join below.
    let ret = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, job_ptr) };
    if ret != 0 {
        let why = std::io::Error::from_raw_os_error(ret);
        return Ok(Err(format!("orcjit: lazy call through stub #{id} at thread exit: cannot start a thread: {why}")));
    }
    // SAFETY: joins the thread started above, once.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    job.outcome
        .unwrap_or_else(|| Ok(Err(format!("orcjit: lazy call through stub #{id}: the resolving thread ended early"))))
}

fn die(message: &str) -> ! {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
    std::process::abort()
}

/// The stubs of one `add`, not made yet.
struct LazyUnit {
    shared: Arc<Shared>,
    name: String,
    interface: Interface,
    stubs: Vec<LazyStub>,
}

impl MaterializationUnit for LazyUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        let LazyUnit { shared, stubs, .. } = *self;
        shared.emit(mr, stubs);
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.stubs.retain(|s| s.stub != *name);
    }
}

/// Retires stubs with their trackers.
struct LazyResources(Arc<Shared>);

impl ResourceManager for LazyResources {
    fn handle_remove(&self, key: ResourceKey) -> Result<()> {
        self.0.table.lock().remove(key);
        self.0.release_if_ended();
        Ok(())
    }

    fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey) {
        self.0.table.lock().transfer(dst, src);
    }
}
