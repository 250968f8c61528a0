//! Where work runs: tasks, priorities, and the two dispatchers (in place, and a fixed pool).
//!
//! Contract of every dispatcher: a dispatched task runs exactly once, or, after shutdown, a
//! materialization task is dropped (its responsibility then fails its symbols) and any other
//! task still runs, inline, so that no waiter starves. A blocking wait ([`TaskDispatcher::wait`])
//! on a thread the dispatcher owns runs queued tasks while it waits, so every piece of work
//! completes even with a pool of one thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select_biased, unbounded};
use parking_lot::Mutex;

/// Demanded work (someone waits on it) runs before speculative work.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, PartialOrd, Ord, Hash)]
pub enum Priority {
    #[default]
    Demanded,
    Speculative,
}

/// What a task is, which decides its fate after shutdown.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskKind {
    /// Runs a materialization unit; may be dropped after shutdown.
    Materialization,
    /// Delivers a result to a waiter (a lookup callback, a generator continuation); always runs.
    Callback,
    /// Any other work; always runs.
    Other,
}

/// A unit of work for a dispatcher.
pub struct Task {
    pub kind: TaskKind,
    pub priority: Priority,
    work: Box<dyn FnOnce() + Send>,
}

impl Task {
    pub fn new(kind: TaskKind, priority: Priority, work: impl FnOnce() + Send + 'static) -> Self {
        Task { kind, priority, work: Box::new(work) }
    }

    /// Runs the task, containing a panic so that a worker survives a faulty materializer.
    /// (Whatever the task owned is dropped during unwinding: a responsibility fails its
    /// symbols, a callback's waiter is told the session failed.)
    pub fn run(self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(self.work)) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            tracing::error!(target: "orcjit", "task panicked: {what}");
        }
    }

    /// After shutdown: run what must reach a waiter, drop what would only start new work.
    fn run_or_drop_after_shutdown(self) {
        match self.kind {
            TaskKind::Materialization => drop(self),
            TaskKind::Callback | TaskKind::Other => self.run(),
        }
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("kind", &self.kind).field("priority", &self.priority).finish()
    }
}

/// Runs tasks. Object safe; the session holds one as `Arc<dyn TaskDispatcher>`.
pub trait TaskDispatcher: Send + Sync + 'static {
    fn dispatch(&self, task: Task);

    /// Blocks the calling thread until a message arrives on `done` (or it disconnects). On a
    /// thread this dispatcher owns, runs queued tasks meanwhile (help-while-waiting).
    fn wait(&self, done: &Receiver<()>);

    /// Stops accepting work and releases the threads. Queued materializations are dropped,
    /// queued callbacks run. Idempotent; callable from any thread, including a worker.
    fn shutdown(&self);

    /// How many tasks can run at once: what a layer may split work into to use every thread.
    fn concurrency(&self) -> usize {
        1
    }

    /// Demanded tasks waiting for a thread right now (a snapshot). More than zero means every
    /// thread is busy: speculative work started now would only wait behind them.
    fn demanded_backlog(&self) -> usize {
        0
    }

    /// Lets the threads this dispatcher owns exit once the tasks they run are done, keeping
    /// what is queued: from then on, work runs on the threads that use the dispatcher, demanded
    /// tasks when dispatched and any task when someone waits (as in a forked child). For a
    /// JIT about to run a program that must find only its own threads, as natively. Returns
    /// once they have exited; does nothing on one of them, or on a dispatcher without threads.
    fn retire_workers(&self) {}
}

/// Runs every task on the thread that dispatches it.
///
/// Tasks dispatched while a task is running on the same thread are queued and run when it
/// returns (or when it waits), so deep materialization chains do not grow the stack.
#[derive(Default, Debug)]
pub struct InPlaceDispatcher {
    shut: AtomicBool,
}

thread_local! {
    static IN_PLACE_QUEUE: RefCell<VecDeque<Task>> = const { RefCell::new(VecDeque::new()) };
    static IN_PLACE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

impl InPlaceDispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    fn run_nested(task: Task) {
        IN_PLACE_DEPTH.with(|d| d.set(d.get() + 1));
        task.run();
        IN_PLACE_DEPTH.with(|d| d.set(d.get() - 1));
    }

    fn pop() -> Option<Task> {
        IN_PLACE_QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            // Demanded first, then speculative, each in FIFO order.
            let pos = q.iter().position(|t| t.priority == Priority::Demanded).unwrap_or(0);
            q.remove(pos)
        })
    }
}

impl TaskDispatcher for InPlaceDispatcher {
    fn dispatch(&self, task: Task) {
        if self.shut.load(Ordering::Acquire) {
            task.run_or_drop_after_shutdown();
            return;
        }
        if IN_PLACE_DEPTH.with(|d| d.get()) > 0 {
            IN_PLACE_QUEUE.with(|q| q.borrow_mut().push_back(task));
            return;
        }
        Self::run_nested(task);
        while let Some(next) = Self::pop() {
            Self::run_nested(next);
        }
    }

    fn wait(&self, done: &Receiver<()>) {
        loop {
            if done.try_recv().is_ok() {
                break;
            }
            match Self::pop() {
                Some(task) => Self::run_nested(task),
                None => {
                    let _ = done.recv();
                    break;
                }
            }
        }
        // Work queued meanwhile would be stranded if nothing up the stack drains the queue:
        // at the outermost level, run it before returning.
        if IN_PLACE_DEPTH.with(|d| d.get()) == 0 {
            while let Some(next) = Self::pop() {
                Self::run_nested(next);
            }
        }
    }

    fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
    }
}

struct PoolShared {
    id: usize,
    demanded_tx: Sender<Task>,
    demanded_rx: Receiver<Task>,
    speculative_tx: Sender<Task>,
    speculative_rx: Receiver<Task>,
    stop_tx: Mutex<Option<Sender<()>>>,
    stop_rx: Receiver<()>,
    /// Dropped once the workers have retired (see `retire_workers`): wakes the threads that
    /// waited for them, to run the work themselves.
    retired_tx: Mutex<Option<Sender<()>>>,
    retired_rx: Receiver<()>,
    /// The workers are to retire: an idle one stops polling for work at once.
    retiring: AtomicBool,
    shut: AtomicBool,
    gate: PauseGate,
    /// The queues of a forked child's copy of the pool (demanded, speculative), which uses
    /// these instead of the channels: a parent's thread may have held a channel's internal
    /// lock at the fork (a worker waking from `select`, a thread dispatching), and in the
    /// child nothing would release it.
    orphan_queues: Mutex<[VecDeque<Task>; 2]>,
}

impl PoolShared {
    fn orphaned(&self) -> bool {
        self.gate.orphaned.load(Ordering::Relaxed)
    }

    fn try_next(&self) -> Option<Task> {
        if self.orphaned() {
            let mut queues = self.orphan_queues.lock();
            let [demanded, speculative] = &mut *queues;
            return demanded.pop_front().or_else(|| speculative.pop_front());
        }
        self.demanded_rx.try_recv().or_else(|_| self.speculative_rx.try_recv()).ok()
    }

    /// The next demanded task, if any.
    fn try_next_demanded(&self) -> Option<Task> {
        if self.orphaned() {
            return self.orphan_queues.lock()[0].pop_front();
        }
        self.demanded_rx.try_recv().ok()
    }

    /// Its workers are gone, as a forked child's are (see `PauseGate`) or once they retired:
    /// queued work moves to the orphan queues, where the threads that use the pool find it.
    fn orphan(&self) {
        self.gate.orphaned.store(true, Ordering::SeqCst);
        self.adopt_channel_tasks();
    }

    /// Moves the tasks in the channels to the orphan queues. Taking from the (unbounded, list)
    /// channels takes none of their locks, so a forked child may do it too.
    fn adopt_channel_tasks(&self) {
        let mut queues = self.orphan_queues.lock();
        while let Ok(task) = self.demanded_rx.try_recv() {
            queues[0].push_back(task);
        }
        while let Ok(task) = self.speculative_rx.try_recv() {
            queues[1].push_back(task);
        }
    }

    /// Puts a task back in its queue (the send cannot fail: the receivers live in `self`).
    fn requeue(&self, task: Task) {
        if self.orphaned() {
            let queue = match task.priority {
                Priority::Demanded => 0,
                Priority::Speculative => 1,
            };
            self.orphan_queues.lock()[queue].push_back(task);
            return;
        }
        let tx = match task.priority {
            Priority::Demanded => &self.demanded_tx,
            Priority::Speculative => &self.speculative_tx,
        };
        let _ = tx.send(task);
        // The workers retired since the check above, and their pool may have adopted the
        // channels' tasks already: adopt this one.
        if self.orphaned() {
            self.adopt_channel_tasks();
        }
    }

    /// Runs a task a worker took from the queues, unless the pool is paused (a fork is being
    /// prepared, or a thread holds the loader's lock): then the task goes back to its queue,
    /// where a thread that waits may run it, and the worker waits until the pool resumes.
    fn run_top_level(&self, worker: usize, task: Task) {
        let gate = &self.gate;
        let busy = &gate.busy[worker].0;
        // Each worker marks only its own flag (on a cache line of its own), so the mark costs
        // no contention; SeqCst orders it against the pausing thread's `pausers` update.
        busy.store(true, Ordering::SeqCst);
        if !gate.paused() {
            task.run();
            gate.finished(busy);
            return;
        }
        self.requeue(task);
        gate.finished(busy);
        gate.wait_resumed();
    }

    fn drain_after_shutdown(&self) {
        while let Some(task) = self.try_next() {
            task.run_or_drop_after_shutdown();
        }
    }
}

thread_local! {
    /// The id of the pool that owns this thread (0: none).
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// A pool of exactly `n` worker threads with two priority levels.
///
/// Workers always take demanded work before speculative work. A worker that blocks in
/// [`TaskDispatcher::wait`] keeps running queued tasks, so no task ever waits for a thread
/// that is itself waiting.
pub struct ThreadPoolDispatcher {
    shared: Arc<PoolShared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    threads: usize,
}

impl ThreadPoolDispatcher {
    /// Starts `n` workers (at least one), named `orcjit-worker-<i>`.
    pub fn new(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let (demanded_tx, demanded_rx) = unbounded();
        let (speculative_tx, speculative_rx) = unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let (retired_tx, retired_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(PoolShared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            demanded_tx,
            demanded_rx,
            speculative_tx,
            speculative_rx,
            stop_tx: Mutex::new(Some(stop_tx)),
            stop_rx,
            retired_tx: Mutex::new(Some(retired_tx)),
            retired_rx,
            retiring: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            gate: PauseGate::new(n),
            orphan_queues: Mutex::new([VecDeque::new(), VecDeque::new()]),
        });
        fork::register(&shared);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("orcjit-worker-{i}"))
                .spawn(move || worker_loop(&shared, i))?;
            workers.push(handle);
        }
        Ok(ThreadPoolDispatcher { shared, workers: Mutex::new(workers), threads: n })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// True on a thread owned by this pool.
    pub fn is_worker_thread(&self) -> bool {
        CURRENT_POOL.with(|c| c.get()) == self.shared.id
    }
}

/// How long an idle worker stays awake, polling, before it sleeps. A task dispatched
/// meanwhile starts at once; one dispatched to a sleeping worker by a thread that goes on
/// running waited up to 2.9 ms on our 2-core VM (the scheduler woke the worker on the
/// dispatcher's CPU), where the median wake-up is 15 µs.
const STAY_AWAKE: std::time::Duration = std::time::Duration::from_millis(1);

/// Pool threads leave the process's signals to the program's own threads: a process-directed
/// signal (SIGALRM, SIGCHLD, SIGINT...) goes to any thread that does not block it, and a JIT'd
/// handler run on a worker, in the middle of a task, may wait for work only that worker can
/// finish (a lazily compiled handler waits for its compile). Signals a thread's own fault
/// raises (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) stay deliverable, and SIGABRT too.
fn block_process_signals() {
    // SAFETY: sigset operations on a local set, then pthread_sigmask on the calling thread
    // (glibc keeps its internal signals out of the mask by itself).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP, libc::SIGABRT] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn worker_loop(shared: &PoolShared, i: usize) {
    CURRENT_POOL.with(|c| c.set(shared.id));
    block_process_signals();
    loop {
        if let Some(task) = shared.try_next() {
            shared.run_top_level(i, task);
            continue;
        }
        if let Some(task) = stay_awake(shared) {
            shared.run_top_level(i, task);
            continue;
        }
        select_biased! {
            recv(shared.demanded_rx) -> t => if let Ok(t) = t { shared.run_top_level(i, t) },
            recv(shared.speculative_rx) -> t => if let Ok(t) = t { shared.run_top_level(i, t) },
            recv(shared.stop_rx) -> _ => break,
        }
    }
    // Stopped by a shutdown, or retired (the queued work stays for the pool's users).
    if shared.shut.load(Ordering::SeqCst) {
        shared.drain_after_shutdown();
    }
}

/// Polls for a task for [`STAY_AWAKE`], yielding the CPU between polls; `None` once it is
/// time to sleep (or the pool is shutting down, or its workers retiring).
fn stay_awake(shared: &PoolShared) -> Option<Task> {
    let start = std::time::Instant::now();
    let stopping = || shared.shut.load(Ordering::Relaxed) || shared.retiring.load(Ordering::Relaxed);
    while start.elapsed() < STAY_AWAKE && !stopping() {
        std::thread::yield_now();
        if let Some(task) = shared.try_next() {
            return Some(task);
        }
    }
    None
}

impl ThreadPoolDispatcher {
    /// Runs queued tasks until `done` has a message (or disconnects).
    fn help_until(&self, done: &Receiver<()>) {
        let shared = &self.shared;
        if shared.orphaned() {
            return help_orphaned_until(shared, done);
        }
        loop {
            if done.try_recv().is_ok() {
                return;
            }
            if let Ok(t) = shared.demanded_rx.try_recv() {
                t.run();
                continue;
            }
            select_biased! {
                recv(done) -> _ => return,
                recv(shared.demanded_rx) -> t => if let Ok(t) = t { t.run() },
                recv(shared.speculative_rx) -> t => if let Ok(t) = t { t.run() },
            }
        }
    }
}

impl TaskDispatcher for ThreadPoolDispatcher {
    fn dispatch(&self, task: Task) {
        if self.shared.shut.load(Ordering::SeqCst) {
            task.run_or_drop_after_shutdown();
            return;
        }
        let priority = task.priority;
        self.shared.requeue(task);
        // A shutdown that raced with this send may already have drained the queues for the
        // last time: drain again so the task is not stranded.
        if self.shared.shut.load(Ordering::SeqCst) {
            self.shared.drain_after_shutdown();
        }
        if self.shared.gate.orphaned.load(Ordering::Relaxed) && priority == Priority::Demanded {
            run_demanded_inline(&self.shared);
        }
    }

    fn wait(&self, done: &Receiver<()>) {
        // The pools are paused while this thread holds the loader's lock (see `LoaderBusy`):
        // it runs the work itself.
        if crate::loaded_symbols::loader_busy_here() {
            return self.help_until(done);
        }
        // In a forked child the workers are gone: whoever waits runs the work (and tasks it
        // dispatches meanwhile are queued for this loop, not run nested).
        if self.shared.gate.orphaned.load(Ordering::Relaxed) {
            let inline = RUNNING_INLINE.with(|r| r.replace(true));
            self.help_until(done);
            RUNNING_INLINE.with(|r| r.set(inline));
            return;
        }
        if !self.is_worker_thread() {
            select_biased! {
                recv(done) -> _ => return,
                // The workers retired meanwhile: this thread runs the work it waits for.
                recv(self.shared.retired_rx) -> _ => return self.wait(done),
            }
        }
        self.help_until(done);
    }

    fn concurrency(&self) -> usize {
        if self.shared.orphaned() { 1 } else { self.threads }
    }

    fn demanded_backlog(&self) -> usize {
        if self.shared.orphaned() {
            return self.shared.orphan_queues.lock()[0].len();
        }
        self.shared.demanded_rx.len()
    }

    fn retire_workers(&self) {
        if self.is_worker_thread() || self.shared.orphaned() {
            return;
        }
        // Dropping the only stop sender wakes every idle worker; not shut, they leave the
        // queues as they are.
        self.shared.retiring.store(true, Ordering::Relaxed);
        drop(self.shared.stop_tx.lock().take());
        for w in std::mem::take(&mut *self.workers.lock()) {
            let _ = w.join();
        }
        self.shared.orphan();
        drop(self.shared.retired_tx.lock().take());
        // What was dispatched while the workers left, with no one to wait for it.
        run_demanded_inline(&self.shared);
    }

    fn shutdown(&self) {
        self.shared.shut.store(true, Ordering::SeqCst);
        // Dropping the only stop sender wakes every idle worker.
        drop(self.shared.stop_tx.lock().take());
        let me = std::thread::current().id();
        let workers = std::mem::take(&mut *self.workers.lock());
        if self.shared.gate.orphaned.load(Ordering::Relaxed) {
            // A forked child has none of its parent's threads to join.
            std::mem::forget(workers);
        } else {
            for w in workers {
                if w.thread().id() != me {
                    let _ = w.join();
                }
            }
        }
        self.shared.drain_after_shutdown();
    }
}

impl Drop for ThreadPoolDispatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

thread_local! {
    /// True while this thread runs an orphaned pool's demanded tasks inline.
    static RUNNING_INLINE: Cell<bool> = const { Cell::new(false) };
}

/// In a forked child: runs the queued demanded tasks on the calling thread (tasks they
/// dispatch are queued and run by this same loop, not nested). Speculative tasks wait for a
/// thread that waits on something ([`TaskDispatcher::wait`] runs them too).
fn run_demanded_inline(shared: &PoolShared) {
    if RUNNING_INLINE.with(|r| r.replace(true)) {
        return;
    }
    while let Some(task) = shared.try_next_demanded() {
        task.run();
    }
    RUNNING_INLINE.with(|r| r.set(false));
}

/// [`ThreadPoolDispatcher::help_until`] in a forked child: runs queued tasks until `done` has
/// a message, never blocking on the pool's channels (see `PoolShared::orphan_queues`). With
/// nothing queued it waits on `done` (made in the child) in short slices, so a task another
/// thread of the child queues meanwhile is not left waiting.
fn help_orphaned_until(shared: &PoolShared, done: &Receiver<()>) {
    const SLICE: std::time::Duration = std::time::Duration::from_millis(1);
    loop {
        if done.try_recv().is_ok() {
            return;
        }
        match shared.try_next() {
            Some(task) => task.run(),
            None => match done.recv_timeout(SLICE) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            },
        }
    }
}

/// Every pool of the process, paused (see [`crate::LoaderBusy`]) until this is dropped.
pub(crate) struct PausedPools(Vec<Arc<PoolShared>>);

impl PausedPools {
    pub(crate) fn pause() -> Self {
        PausedPools(fork::pause_all())
    }
}

impl Drop for PausedPools {
    fn drop(&mut self) {
        fork::resume(std::mem::take(&mut self.0));
    }
}

/// How a pool pauses: through `fork()`, and while a thread holds the loader's lock
/// (`LoaderBusy`). Only the forking thread exists in the child, so a task a worker was
/// running at the fork would never finish there, and queued work would never start. So,
/// before the fork, workers finish the tasks they run and take no new ones
/// (a task taken meanwhile goes back to its queue); after it, the parent's workers go on,
/// and in the child the pool is *orphaned*: queued work runs on the child's threads,
/// demanded tasks when dispatched, any task when someone waits.
struct PauseGate {
    /// How many threads have paused the pool (preparing a fork, or holding the loader's
    /// lock, see `LoaderBusy`): while any has, workers take no new task.
    pausers: AtomicUsize,
    /// Per worker: running a top-level task.
    busy: Box<[Busy]>,
    /// This is a forked child's copy of the pool: its workers do not exist.
    orphaned: AtomicBool,
    idle: parking_lot::Condvar,
    lock: Mutex<()>,
}

/// A worker's busy flag, alone on its cache line.
#[repr(align(128))]
struct Busy(AtomicBool);

impl PauseGate {
    fn new(workers: usize) -> Self {
        PauseGate {
            pausers: AtomicUsize::new(0),
            busy: (0..workers).map(|_| Busy(AtomicBool::new(false))).collect(),
            orphaned: AtomicBool::new(false),
            idle: parking_lot::Condvar::new(),
            lock: Mutex::new(()),
        }
    }

    fn paused(&self) -> bool {
        self.pausers.load(Ordering::SeqCst) != 0
    }

    fn finished(&self, busy: &AtomicBool) {
        busy.store(false, Ordering::SeqCst);
        if self.paused() {
            let _guard = self.lock.lock();
            self.idle.notify_all();
        }
    }

    /// Workers running a top-level task.
    fn running(&self) -> usize {
        self.busy.iter().filter(|b| b.0.load(Ordering::SeqCst)).count()
    }

    fn wait_resumed(&self) {
        let mut guard = self.lock.lock();
        while self.paused() {
            self.idle.wait(&mut guard);
        }
    }
}

mod fork {
    use std::sync::{Arc, Once, Weak};
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;

    use super::{CURRENT_POOL, PoolShared};
    use std::sync::atomic::Ordering;

    /// Every pool of the process, to pause at a fork.
    static POOLS: Mutex<Vec<Weak<PoolShared>>> = Mutex::new(Vec::new());
    /// The pools paused for the fork under way.
    static PAUSED: Mutex<Vec<Arc<PoolShared>>> = Mutex::new(Vec::new());

    /// How long a fork waits for the tasks workers are running. A task that waits on the
    /// forking thread (user code that a pool thread runs, blocked on a lock the forking
    /// thread holds) would otherwise stop the fork for good; after this the fork goes on,
    /// and a child that waits on such a task waits for ever, as it would without the gate.
    const PAUSE_LIMIT: Duration = Duration::from_secs(10);

    pub(super) fn register(pool: &Arc<PoolShared>) {
        static HANDLERS: Once = Once::new();
        HANDLERS.call_once(|| {
            // SAFETY: the three handlers are `extern "C"` functions that never unwind.
            let ret = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
            if ret != 0 {
                tracing::warn!(target: "orcjit", "pthread_atfork failed ({ret}): a forked child may wait for the pool for ever");
            }
        });
        let mut pools = POOLS.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// Pauses every pool and waits until its workers run nothing (but the calling thread, if
    /// it is one of them), for at most [`PAUSE_LIMIT`]; returns the pools to resume.
    pub(super) fn pause_all() -> Vec<Arc<PoolShared>> {
        let pools: Vec<Arc<PoolShared>> = POOLS.lock().iter().filter_map(Weak::upgrade).collect();
        for p in &pools {
            p.gate.pausers.fetch_add(1, Ordering::SeqCst);
        }
        let deadline = Instant::now() + PAUSE_LIMIT;
        for p in &pools {
            let own = usize::from(CURRENT_POOL.with(|c| c.get()) == p.id);
            let mut guard = p.gate.lock.lock();
            while p.gate.running() > own {
                if p.gate.idle.wait_until(&mut guard, deadline).timed_out() {
                    break;
                }
            }
        }
        pools
    }

    /// Undoes one [`pause_all`]: once no one else pauses them, the workers go on.
    pub(super) fn resume(pools: Vec<Arc<PoolShared>>) {
        for p in pools {
            let _guard = p.gate.lock.lock();
            p.gate.pausers.fetch_sub(1, Ordering::SeqCst);
            p.gate.idle.notify_all();
        }
    }

    /// Before the fork, on the forking thread: pause every pool, and hold the lock of its
    /// orphan queues (which the threads of a pool whose workers retired use), so that the
    /// child's copy of the lock is free.
    extern "C" fn prepare() {
        let pools = pause_all();
        for p in &pools {
            std::mem::forget(p.orphan_queues.lock());
        }
        *PAUSED.lock() = pools;
    }

    /// After the fork, in the parent: the workers go on.
    extern "C" fn parent() {
        let pools = std::mem::take(&mut *PAUSED.lock());
        for p in &pools {
            // SAFETY: `prepare` locked it on this thread and forgot the guard.
            unsafe { p.orphan_queues.force_unlock() };
        }
        resume(pools);
    }

    /// After the fork, in the child: every pool is orphaned (the tasks its workers took
    /// while paused are back in its queues, which move to its orphan queues: sending to or
    /// selecting on a channel would take a lock a parent's thread may have held). It stays
    /// registered, so that a fork of the child holds its orphan queues' lock too.
    extern "C" fn child() {
        for p in std::mem::take(&mut *PAUSED.lock()) {
            // SAFETY: `prepare` locked it on the thread that forked, this child's only thread,
            // and forgot the guard.
            unsafe { p.orphan_queues.force_unlock() };
            p.orphan();
            p.gate.pausers.store(0, Ordering::SeqCst);
            for b in p.gate.busy.iter() {
                b.0.store(false, Ordering::SeqCst);
            }
            if p.gate.lock.is_locked() {
                // SAFETY: held by a worker parked between its last task and its wait for the
                // parent to resume; that thread does not exist in the child.
                unsafe { p.gate.lock.force_unlock() };
            }
        }
    }
}

impl std::fmt::Debug for ThreadPoolDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolDispatcher").field("threads", &self.threads).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    const WATCHDOG: Duration = Duration::from_secs(30);

    #[test]
    fn pool_runs_every_task_on_exactly_n_named_threads() {
        let pool = ThreadPoolDispatcher::new(3).unwrap();
        let (tx, rx) = unbounded();
        for _ in 0..300 {
            let tx = tx.clone();
            pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send(name).unwrap();
            }));
        }
        let mut names = HashSet::new();
        for _ in 0..300 {
            names.insert(rx.recv_timeout(WATCHDOG).expect("task did not run"));
        }
        assert!(names.len() <= 3 && names.iter().all(|n| n.starts_with("orcjit-worker-")), "{names:?}");
        pool.shutdown();
    }

    /// While a thread holds the loader's lock, the pools are paused and the thread runs what
    /// it waits for itself; once it lets go, the workers run tasks again.
    #[test]
    fn a_thread_holding_the_loader_lock_runs_the_work_it_waits_for_while_workers_pause() {
        let pool = Arc::new(ThreadPoolDispatcher::new(2).unwrap());
        let (result_tx, result_rx) = crossbeam_channel::bounded(1);
        let p = pool.clone();
        std::thread::spawn(move || {
            let busy = crate::LoaderBusy::enter();
            let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
            let ran_on = Arc::new(Mutex::new(None));
            let r = ran_on.clone();
            p.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
                *r.lock() = Some(std::thread::current().id());
                done_tx.send(()).unwrap();
            }));
            p.wait(&done_rx);
            let here = *ran_on.lock() == Some(std::thread::current().id());
            drop(busy);
            result_tx.send(here).unwrap();
        });
        let here = result_rx.recv_timeout(WATCHDOG).expect("the waiting thread did not run its task: hung");
        assert!(here, "a paused worker ran the task");
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            tx.send(std::thread::current().name().map(str::to_string)).unwrap();
        }));
        let name = rx.recv_timeout(WATCHDOG).expect("the pool did not resume");
        assert!(name.is_some_and(|n| n.starts_with("orcjit-worker-")));
        pool.shutdown();
    }

    /// Once its workers retire, a pool runs demanded work on the thread that dispatches it
    /// and any work on a thread that waits, and reports one thread of concurrency.
    #[test]
    fn a_retired_pool_runs_work_on_the_threads_that_use_it() {
        let pool = ThreadPoolDispatcher::new(2).unwrap();
        let (tx, rx) = unbounded();
        let t = tx.clone();
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            t.send(std::thread::current().name().map(str::to_string)).unwrap();
        }));
        let name = rx.recv_timeout(WATCHDOG).expect("the pool did not run the task");
        assert!(name.is_some_and(|n| n.starts_with("orcjit-worker-")));
        pool.retire_workers();
        assert_eq!(pool.concurrency(), 1);
        let here = std::thread::current().id();
        let t = tx.clone();
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            t.send(Some(format!("{:?}", std::thread::current().id()))).unwrap();
        }));
        assert_eq!(rx.try_recv().ok(), Some(Some(format!("{here:?}"))), "demanded work runs when dispatched");
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        pool.dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || {
            done_tx.send(std::thread::current().id()).unwrap();
        }));
        assert!(done_rx.is_empty(), "speculative work waits for a thread that waits");
        let (woken_tx, woken_rx) = crossbeam_channel::bounded(1);
        let t = std::thread::spawn(move || {
            let ran_on = done_rx.recv().unwrap();
            woken_tx.send(()).unwrap();
            ran_on
        });
        // This thread waits (for the speculative task's effect, seen through `woken`) and runs it.
        pool.wait(&woken_rx);
        assert_eq!(t.join().unwrap(), here);
        pool.shutdown();
    }

    /// A thread that waited without helping when the workers retired wakes and runs the work
    /// it waits for itself: no one else would.
    #[test]
    fn a_thread_waiting_when_the_workers_retire_runs_the_work_it_waits_for() {
        let pool = Arc::new(ThreadPoolDispatcher::new(1).unwrap());
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let (ran_tx, ran_rx) = crossbeam_channel::bounded(1);
        let p = pool.clone();
        let waiter = std::thread::spawn(move || {
            p.wait(&done_rx);
            std::thread::current().id()
        });
        pool.retire_workers();
        // Queued after the workers left, and speculative: only a waiting thread runs it.
        pool.dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || {
            ran_tx.send(std::thread::current().id()).unwrap();
            done_tx.send(()).unwrap();
        }));
        let ran_on = ran_rx.recv_timeout(WATCHDOG).expect("no thread ran the work: the waiter was not woken");
        assert_eq!(waiter.join().unwrap(), ran_on);
        pool.shutdown();
    }

    #[test]
    fn demanded_work_runs_before_speculative_work() {
        let pool = ThreadPoolDispatcher::new(1).unwrap();
        let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            started_tx.send(()).unwrap();
            let _ = gate_rx.recv_timeout(WATCHDOG);
        }));
        started_rx.recv_timeout(WATCHDOG).unwrap();
        let (tx, rx) = unbounded();
        for (i, p) in [Priority::Speculative, Priority::Speculative, Priority::Demanded, Priority::Demanded]
            .into_iter()
            .enumerate()
        {
            let tx = tx.clone();
            pool.dispatch(Task::new(TaskKind::Other, p, move || tx.send((i, p)).unwrap()));
        }
        gate_tx.send(()).unwrap();
        let order: Vec<Priority> = (0..4).map(|_| rx.recv_timeout(WATCHDOG).unwrap().1).collect();
        assert_eq!(order, [Priority::Demanded, Priority::Demanded, Priority::Speculative, Priority::Speculative]);
    }

    #[test]
    fn a_waiting_worker_runs_queued_tasks_with_one_thread() {
        let pool = Arc::new(ThreadPoolDispatcher::new(1).unwrap());
        let (result_tx, result_rx) = unbounded();
        let p = pool.clone();
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            // This worker is the only thread; the task it waits for is queued behind it.
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            p.dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || done_tx.send(()).unwrap()));
            p.wait(&done_rx);
            result_tx.send(()).unwrap();
        }));
        result_rx.recv_timeout(WATCHDOG).expect("the waiting worker did not help");
        pool.shutdown();
    }

    #[test]
    fn the_demanded_backlog_counts_demanded_tasks_waiting_for_a_thread() {
        let pool = ThreadPoolDispatcher::new(1).unwrap();
        let (started_tx, started_rx) = crossbeam_channel::bounded(0);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }));
        started_rx.recv_timeout(WATCHDOG).expect("the worker did not start");
        // The only worker is busy: what is dispatched now waits.
        assert_eq!(pool.demanded_backlog(), 0);
        let (done_tx, done_rx) = unbounded();
        for _ in 0..3 {
            let done = done_tx.clone();
            pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || done.send(()).unwrap()));
        }
        pool.dispatch(Task::new(TaskKind::Other, Priority::Speculative, || {}));
        assert_eq!(pool.demanded_backlog(), 3, "speculative work is not counted");
        drop(release_tx);
        for _ in 0..3 {
            done_rx.recv_timeout(WATCHDOG).expect("queued work did not run");
        }
        assert_eq!(pool.demanded_backlog(), 0);
        pool.shutdown();
    }

    #[test]
    fn after_shutdown_callbacks_still_run_and_materializations_are_dropped() {
        let pool = ThreadPoolDispatcher::new(2).unwrap();
        pool.shutdown();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        pool.dispatch(Task::new(TaskKind::Callback, Priority::Demanded, move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        let r = ran.clone();
        pool.dispatch(Task::new(TaskKind::Materialization, Priority::Demanded, move || {
            r.fetch_add(10, Ordering::SeqCst);
        }));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        pool.shutdown();
    }

    #[test]
    fn a_panicking_task_does_not_kill_its_worker() {
        let pool = ThreadPoolDispatcher::new(1).unwrap();
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, || panic!("faulty materializer")));
        let (tx, rx) = unbounded();
        pool.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || tx.send(()).unwrap()));
        rx.recv_timeout(WATCHDOG).expect("worker died with the panic");
    }

    #[test]
    fn in_place_runs_nested_dispatches_after_the_current_task() {
        let d = Arc::new(InPlaceDispatcher::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (d2, l2) = (d.clone(), log.clone());
        d.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            let l3 = l2.clone();
            d2.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || l3.lock().push("inner")));
            l2.lock().push("outer");
        }));
        assert_eq!(*log.lock(), ["outer", "inner"]);
    }
}
