//! Speculative compilation: when a lazy function is first called, compile what it is likely to
//! call next, on workers the program is not waiting for.
//!
//! A [`Speculator`] listens to first calls of lazy stubs ([`LazyReexports`]) and asks its
//! [`SpeculationPolicy`] what to compile ahead. Each guess becomes a *speculative* task (after
//! all demanded work, so never ahead of what the program waits for) that, when a worker gets to
//! it, looks the body up like a first call would (a weak lookup: a guess that names nothing is
//! simply absent; one from the start waits until its name is defined, see
//! [`Speculator::names_defined`]). So a guess the program demands first is compiled once, by
//! the demand; a guess whose compile fails fails no one but a later caller, who would have
//! failed anyway. A first call the policy cannot answer yet (its module's call graph is not
//! filed: the module is read after its first call, and the graph may come from a second read)
//! is asked again when the graph is filed ([`Speculator::call_graph_filed`]).
//!
//! Policies: [`StaticCallees`] (the direct callees the IR call graph names, most often called
//! first by LLVM's static block frequencies, those only on cold paths left out) and [`ReplayProfile`] (a first-call order recorded by an earlier
//! run, replayed from the start).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use jit_core::{
    DylibId, ExecutionSession, FxHashSet, JitDylib, LookupOptions, MatchFlags, Priority, RequiredState, SearchOrder,
    SymbolLookupFlags, SymbolLookupSet, SymbolName, Task, TaskKind,
};
use parking_lot::Mutex;

use crate::lazy::LazyReexports;

/// What to compile ahead.
///
/// Contract: cheap (called on the program's thread, before the first call's body is looked up,
/// or on the thread that filed a call graph) and never panics.
pub trait SpeculationPolicy: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Bodies likely called soon after `body` (of `dylib`) is first called.
    fn on_first_call(&self, dylib: &JitDylib, body: &SymbolName) -> Vec<(JitDylib, SymbolName)>;
    /// Whether [`on_first_call`](Self::on_first_call) cannot answer for `body` yet, but will
    /// once `body`'s call graph is filed (see [`Speculator::call_graph_filed`]); asked just
    /// before it. Default: never.
    fn answers_once_filed(&self, _dylib: &JitDylib, _body: &SymbolName) -> bool {
        false
    }
    /// Bodies to compile ahead from the start.
    fn on_start(&self, _session: &ExecutionSession) -> Vec<(JitDylib, SymbolName)> {
        Vec::new()
    }
}

/// Where [`StaticCallees`] reads a body's direct callees (`None` before its call graph is filed).
type CalleesOf = dyn Fn(&JitDylib, &SymbolName) -> Option<Arc<[SymbolName]>> + Send + Sync;

/// The direct callees of a function, from its module's call graph (for the compile-on-demand
/// layer's: most often called first, by LLVM's static block frequencies, and none called only
/// from blocks estimated cold, such as error paths): at most `limit` of them, among those the
/// dylib defines. A call to a function the JIT does not compile (`printf`, found in the
/// process) names a body that does not exist, so it guesses nothing and takes no place.
pub struct StaticCallees {
    callees: Box<CalleesOf>,
    limit: usize,
}

impl StaticCallees {
    /// A policy reading call graphs from `callees(dylib, body)`, `None` while `body`'s is not
    /// filed (for instance
    /// [`CompileOnDemandLayer::filed_callees`](crate::CompileOnDemandLayer::filed_callees)).
    pub fn new(
        callees: impl Fn(&JitDylib, &SymbolName) -> Option<Arc<[SymbolName]>> + Send + Sync + 'static,
        limit: usize,
    ) -> Self {
        StaticCallees { callees: Box::new(callees), limit }
    }
}

impl SpeculationPolicy for StaticCallees {
    fn name(&self) -> &str {
        "static"
    }

    fn on_first_call(&self, dylib: &JitDylib, body: &SymbolName) -> Vec<(JitDylib, SymbolName)> {
        let callees = (self.callees)(dylib, body).unwrap_or_else(|| Arc::from([]));
        // The session's lock per callee, but no task and no lookup for one that names nothing.
        let defined = callees.iter().filter(|c| dylib.symbol_state(c).is_some());
        defined.take(self.limit).map(|c| (dylib.clone(), c.clone())).collect()
    }

    fn answers_once_filed(&self, dylib: &JitDylib, body: &SymbolName) -> bool {
        (self.callees)(dylib, body).is_none()
    }
}

/// Replays a first-call order recorded by [`Speculator::profile`]: every body in it, in order,
/// from the start. Bodies the recording run found hot (their partitions reached the second
/// tier) are listed by [`hot`](Self::hot): a [`Jit`](crate::Jit) compiles those at the full
/// level at once ([`CompileOnDemandLayer::start_hot`](crate::CompileOnDemandLayer::start_hot)).
pub struct ReplayProfile {
    /// (dylib, body, hot), in first-call order.
    entries: Vec<(String, String, bool)>,
}

impl ReplayProfile {
    /// Parses a profile: a line `DYLIB<TAB>BODY` per first call, in order, followed by
    /// `<TAB>hot` for a body found hot.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut fields = l.split('\t');
                let (dylib, body) = (fields.next()?, fields.next()?);
                Some((dylib.to_string(), body.to_string(), fields.next() == Some("hot")))
            })
            .collect();
        ReplayProfile { entries }
    }

    /// The bodies the recording run found hot, as (dylib, body).
    pub fn hot(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter(|e| e.2).map(|(d, b, _)| (d.as_str(), b.as_str()))
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SpeculationPolicy for ReplayProfile {
    fn name(&self) -> &str {
        "profile"
    }

    fn on_first_call(&self, _dylib: &JitDylib, _body: &SymbolName) -> Vec<(JitDylib, SymbolName)> {
        Vec::new()
    }

    fn on_start(&self, session: &ExecutionSession) -> Vec<(JitDylib, SymbolName)> {
        // Dylibs that do not exist (yet) are skipped: a profile is advice.
        self.entries.iter().filter_map(|(d, b, _)| Some((session.dylib(d)?, session.intern(b)))).collect()
    }
}

/// What a [`Speculator`] has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeculationStats {
    /// Bodies queued to compile ahead (each once).
    pub queued: u64,
    /// Of those, the ones the program then called.
    pub hits: u64,
    /// First calls seen.
    pub first_calls: u64,
    /// Guesses dropped because demanded work kept every thread busy when they were made, or
    /// because their compile would have waited for another (see
    /// [`Speculator::set_busy_check`]).
    pub dropped: u64,
    /// Speculative compiles that failed. A failure fails no one but a later caller of the
    /// body, which gets the error its own compile would have given.
    pub failed: u64,
    /// Guesses from the start whose names did not exist when last looked up, waiting for
    /// them to be defined (see [`Speculator::names_defined`]).
    pub waiting: u64,
    /// First calls made before their call graph was filed, asked again once it was (see
    /// [`Speculator::call_graph_filed`]).
    pub asked_again: u64,
    /// First calls still waiting for their call graph (in a module not read, or read before
    /// the policy wanted call graphs).
    pub unanswered: u64,
}

impl std::fmt::Display for SpeculationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} first calls, {} bodies speculated, {} of them called ({} wasted, {} failed to compile), {} \
             guesses dropped, {} waiting for their names, {} first calls asked again once their call graph was filed, {} still \
             waiting for it",
            self.first_calls,
            self.queued,
            self.hits,
            self.queued - self.hits.min(self.queued),
            self.failed,
            self.dropped,
            self.waiting,
            self.asked_again,
            self.unanswered
        )
    }
}

/// Compiles ahead what a [`SpeculationPolicy`] guesses, and records first calls (see the
/// module's doc).
pub struct Speculator {
    weak: Weak<Speculator>,
    session: ExecutionSession,
    policy: Option<Arc<dyn SpeculationPolicy>>,
    queued: Mutex<FxHashSet<(DylibId, SymbolName)>>,
    hits: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    first_calls: Mutex<Vec<(String, SymbolName)>>,
    /// Tells which bodies are hot now, as (dylib, body), for the profile.
    hot: Mutex<Option<Box<HotBodies>>>,
    /// Tells whether a body's compile would wait for another compile to finish.
    busy: parking_lot::RwLock<Option<Box<BusyBody>>>,
    /// Guesses from the start whose names did not exist yet.
    waiting: Mutex<Waiting>,
    /// First calls the policy could answer only once their call graph is filed.
    unanswered: Mutex<Unanswered>,
    asked_again: AtomicU64,
}

/// Where a guess came from, which says what its task does when a worker gets to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guess {
    /// From a first call: dropped if its compile would wait for another one.
    FromCall,
    /// The `n`th guess from the start (a profile's future): never dropped; if its name does
    /// not exist yet, it waits for [`Speculator::names_defined`] to say it does.
    FromStart(usize),
}

/// Guesses from the start that found their names absent, and a count of
/// [`Speculator::names_defined`] calls (so that a lookup overtaken by one looks again).
#[derive(Default)]
struct Waiting {
    generation: u64,
    guesses: Vec<(usize, JitDylib, SymbolName)>,
}

/// First calls (as implementation dylib, body) the policy could not answer yet
/// ([`SpeculationPolicy::answers_once_filed`]), in first-call order, and a count of
/// [`Speculator::call_graph_filed`] calls (so that a first call whose answer was overtaken by
/// one asks again rather than wait for a graph already filed).
#[derive(Default)]
struct Unanswered {
    generation: u64,
    calls: Vec<(JitDylib, SymbolName)>,
}

/// Where a [`Speculator`] learns which bodies are hot.
type HotBodies = dyn Fn() -> Vec<(String, String)> + Send + Sync;

/// Where a [`Speculator`] learns whether a body's compile would wait for another one.
type BusyBody = dyn Fn(&JitDylib, &SymbolName) -> bool + Send + Sync;

impl Speculator {
    /// A speculator guessing by `policy` (or only recording first calls, with `None`), hearing
    /// first calls of `stubs`' stubs (it replaces their first-call listener).
    pub fn install(stubs: &LazyReexports, policy: Option<Arc<dyn SpeculationPolicy>>) -> Arc<Self> {
        let speculator = Arc::new_cyclic(|weak| Speculator {
            weak: weak.clone(),
            session: stubs.session().clone(),
            policy,
            queued: Mutex::default(),
            hits: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_calls: Mutex::default(),
            hot: Mutex::default(),
            busy: Default::default(),
            waiting: Mutex::default(),
            unanswered: Mutex::default(),
            asked_again: AtomicU64::new(0),
        });
        let weak = speculator.weak.clone();
        stubs.set_first_call_listener(move |_, _, body_dylib, body| {
            if let Some(s) = weak.upgrade() {
                s.first_call(body_dylib, body);
            }
        });
        speculator
    }

    pub fn policy(&self) -> Option<&Arc<dyn SpeculationPolicy>> {
        self.policy.as_ref()
    }

    /// Queues what the policy wants compiled from the start (all of it: it is the future's
    /// work, whatever is running now), in the policy's order. A guess that names nothing yet
    /// (a promoted local of a module not read so far) is looked up again, in that order, when
    /// [`names_defined`](Self::names_defined) says its name has come to exist.
    pub fn start(&self) {
        if let Some(policy) = &self.policy {
            for (seq, (dylib, body)) in policy.on_start(&self.session).into_iter().enumerate() {
                self.queue(&dylib, body, Guess::FromStart(seq));
            }
        }
    }

    /// Tells the speculator that `names` are now defined in `dylib` (for instance, by
    /// [`CompileOnDemandLayer::set_split_listener`](crate::CompileOnDemandLayer::set_split_listener)):
    /// guesses from the start that found them absent are queued again, in their first order.
    pub fn names_defined(&self, dylib: &JitDylib, names: &[SymbolName]) {
        let mut ready = {
            let mut waiting = self.waiting.lock();
            waiting.generation += 1;
            if waiting.guesses.is_empty() {
                return;
            }
            let names: FxHashSet<&SymbolName> = names.iter().collect();
            let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting.guesses)
                .into_iter()
                .partition(|(_, d, body)| d.id() == dylib.id() && names.contains(body));
            waiting.guesses = rest;
            ready
        };
        ready.sort_unstable_by_key(|(seq, _, _)| *seq);
        for (seq, dylib, body) in ready {
            self.dispatch(dylib, body, Guess::FromStart(seq));
        }
    }

    /// Tells the speculator that the call graph of `bodies` (of implementation dylib `dylib`)
    /// is now filed (for instance, by
    /// [`CompileOnDemandLayer::set_call_graph_listener`](crate::CompileOnDemandLayer::set_call_graph_listener)):
    /// first calls of them that the policy could not answer before are asked again, in
    /// first-call order, and forgotten; their guesses go the way of any first call's (see
    /// [`speculate`](Self::speculate)).
    pub fn call_graph_filed(&self, dylib: &JitDylib, bodies: &[SymbolName]) {
        let ready = {
            let mut unanswered = self.unanswered.lock();
            unanswered.generation += 1;
            if unanswered.calls.is_empty() {
                return;
            }
            let bodies: FxHashSet<&SymbolName> = bodies.iter().collect();
            let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut unanswered.calls)
                .into_iter()
                .partition(|(d, body)| d.id() == dylib.id() && bodies.contains(body));
            unanswered.calls = rest;
            ready
        };
        let Some(policy) = &self.policy else { return };
        self.asked_again.fetch_add(ready.len() as u64, Ordering::Relaxed);
        for (dylib, body) in ready {
            self.ask(policy, &dylib, &body, true);
        }
    }

    fn first_call(&self, dylib: &JitDylib, body: &SymbolName) {
        if self.queued.lock().contains(&(dylib.id(), body.clone())) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        self.first_calls.lock().push((dylib.name().to_string(), body.clone()));
        if let Some(policy) = &self.policy {
            self.ask(policy, dylib, body, false);
        }
    }

    /// Asks `policy` what first call `body` of `dylib` makes likely and speculates on the
    /// answer (`late`: the call is past, see [`speculate_late`](Self::speculate_late)), or
    /// keeps the call for [`call_graph_filed`](Self::call_graph_filed) if the policy cannot
    /// answer yet.
    fn ask(&self, policy: &Arc<dyn SpeculationPolicy>, dylib: &JitDylib, body: &SymbolName, late: bool) {
        loop {
            // A graph filed from here on is seen by the answer, or makes it ask again.
            let generation = self.unanswered.lock().generation;
            // Asked first: a graph filed between the two questions gives an answer.
            let later = policy.answers_once_filed(dylib, body);
            let guesses = policy.on_first_call(dylib, body);
            if !guesses.is_empty() || !later {
                self.speculate_all(guesses, late);
                return;
            }
            let mut unanswered = self.unanswered.lock();
            if unanswered.generation == generation {
                unanswered.calls.push((dylib.clone(), body.clone()));
                return;
            }
        }
    }

    /// Queues a speculative compile of `body` in `dylib` (once per body), unless it could only
    /// get in the way: when demanded work is waiting for a thread (every thread is busy with
    /// what the program waits for), or when the body's compile would wait for another compile
    /// (of its module, see [`set_busy_check`](Self::set_busy_check)), now or when a worker gets
    /// to it. Then the guess is dropped (it may be made again later).
    pub fn speculate(&self, dylib: &JitDylib, body: SymbolName) {
        if self.session.dispatcher().demanded_backlog() > 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.speculate_unless_busy(dylib, body);
    }

    /// Speculates on a first call's `guesses` as [`speculate`](Self::speculate) does, but
    /// looks at the demanded work waiting once, before the first is queued: a worker that takes
    /// it at once starts its compile as demanded work, which would make the next ones look
    /// crowded out. A `late` answer (the first call is past, see
    /// [`call_graph_filed`](Self::call_graph_filed)) is not dropped for demanded work waiting:
    /// it would never be made again (a profile's guesses from the start are never dropped
    /// either), and what waits when a call graph is filed is often another module's second
    /// copy being read (demanded work, so that it is read alongside the first, though the
    /// program does not wait for it).
    fn speculate_all(&self, guesses: Vec<(JitDylib, SymbolName)>, late: bool) {
        if !late && !guesses.is_empty() && self.session.dispatcher().demanded_backlog() > 0 {
            self.dropped.fetch_add(guesses.len() as u64, Ordering::Relaxed);
            return;
        }
        for (dylib, body) in guesses {
            self.speculate_unless_busy(&dylib, body);
        }
    }

    /// Queues a speculative compile of `body` in `dylib` unless it would wait for another
    /// compile now (see [`set_busy_check`](Self::set_busy_check)).
    fn speculate_unless_busy(&self, dylib: &JitDylib, body: SymbolName) {
        if self.is_busy(dylib, &body) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue(dylib, body, Guess::FromCall);
    }

    /// Makes guesses from first calls wait for no other compile: `busy(dylib, body)` says
    /// whether compiling `body` would wait for one now (for instance
    /// [`CompileOnDemandLayer::compiling`](crate::CompileOnDemandLayer::compiling): one module
    /// compiles one partition at a time, and a guess that holds it delays the next body the
    /// program calls there). A profile's guesses from the start are never dropped.
    pub fn set_busy_check(&self, busy: impl Fn(&JitDylib, &SymbolName) -> bool + Send + Sync + 'static) {
        *self.busy.write() = Some(Box::new(busy));
    }

    fn is_busy(&self, dylib: &JitDylib, body: &SymbolName) -> bool {
        self.busy.read().as_ref().is_some_and(|busy| busy(dylib, body))
    }

    /// Queues a speculative compile of `body` in `dylib` (once per body).
    fn queue(&self, dylib: &JitDylib, body: SymbolName, guess: Guess) {
        if self.queued.lock().insert((dylib.id(), body.clone())) {
            self.dispatch(dylib.clone(), body, guess);
        }
    }

    /// Dispatches the speculative task that compiles `body` of `dylib` (see [`Guess`] for
    /// what it does when the compile would wait or the body is absent).
    fn dispatch(&self, dylib: JitDylib, body: SymbolName, guess: Guess) {
        let speculator = self.weak.clone();
        self.session.dispatch(Task::new(TaskKind::Materialization, Priority::Speculative, move || {
            let Some(s) = speculator.upgrade() else { return };
            if guess == Guess::FromCall && s.is_busy(&dylib, &body) {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                s.queued.lock().remove(&(dylib.id(), body));
                return;
            }
            // Names defined from here on are seen by this lookup, or make `absent` look again.
            let generation = s.waiting.lock().generation;
            let order = SearchOrder::new().then(&dylib, MatchFlags::All);
            let mut set = SymbolLookupSet::new();
            set.push(body.clone(), SymbolLookupFlags::WeaklyReferenced);
            // Started only when no demanded work is queued; from here on it is compiled like
            // a first call's body (a demand arriving meanwhile waits for this compile).
            let options = LookupOptions { priority: Priority::Demanded, ..Default::default() };
            let session = s.session.clone();
            drop(s);
            session.lookup_detailed(&order, set, RequiredState::Ready, options, move |result| match result {
                Err(e) => {
                    tracing::debug!(target: "orcjit", "speculative compile failed: {e}");
                    if let Some(s) = speculator.upgrade() {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(found) if found.0.is_empty() => {
                    if let (Guess::FromStart(seq), Some(s)) = (guess, speculator.upgrade()) {
                        s.absent(seq, dylib, body, generation);
                    }
                }
                Ok(_) => {}
            });
        }));
    }

    /// Guess `seq` from the start found `body` absent in a lookup that began at `generation`:
    /// it waits for its name to be defined, or looks again at once if names were defined since.
    fn absent(&self, seq: usize, dylib: JitDylib, body: SymbolName, generation: u64) {
        let mut waiting = self.waiting.lock();
        if waiting.generation == generation {
            waiting.guesses.push((seq, dylib, body));
        } else {
            drop(waiting);
            self.dispatch(dylib, body, Guess::FromStart(seq));
        }
    }

    pub fn stats(&self) -> SpeculationStats {
        SpeculationStats {
            queued: self.queued.lock().len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            first_calls: self.first_calls.lock().len() as u64,
            waiting: self.waiting.lock().guesses.len() as u64,
            asked_again: self.asked_again.load(Ordering::Relaxed),
            unanswered: self.unanswered.lock().calls.len() as u64,
        }
    }

    /// Makes [`profile`](Self::profile) mark the bodies `hot` lists, as (dylib, body): for
    /// instance [`CompileOnDemandLayer::tiered_up_bodies`](crate::CompileOnDemandLayer::tiered_up_bodies).
    pub fn set_hot_bodies(&self, hot: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static) {
        *self.hot.lock() = Some(Box::new(hot));
    }

    /// The first calls seen so far, in order, as a profile [`ReplayProfile`] reads (hot bodies
    /// marked, see [`set_hot_bodies`](Self::set_hot_bodies)).
    pub fn profile(&self) -> String {
        let hot: FxHashSet<(String, String)> =
            self.hot.lock().as_ref().map(|f| f()).unwrap_or_default().into_iter().collect();
        let mut out = String::new();
        for (d, b) in self.first_calls.lock().iter() {
            let mark = if hot.contains(&(d.clone(), b.as_str().to_string())) { "\thot" } else { "" };
            out.push_str(&format!("{d}\t{b}{mark}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_core::FxHashMap;
    use std::time::Duration;

    /// A session of one worker with a speculator replaying a profile of one body
    /// (`started.body` of `main`), and its dylib `main`.
    fn one_worker_speculator() -> (ExecutionSession, JitDylib, Arc<Speculator>) {
        one_worker_speculator_with(Arc::new(ReplayProfile::parse("main\tstarted.body\n")))
    }

    /// A session of one worker with a speculator guessing by `policy`, and its dylib `main`.
    fn one_worker_speculator_with(policy: Arc<dyn SpeculationPolicy>) -> (ExecutionSession, JitDylib, Arc<Speculator>) {
        let session = ExecutionSession::with_threads(1).unwrap();
        let memory = jit_mem::default_manager(jit_mem::ManagerConfig::default()).unwrap();
        let stubs = LazyReexports::new(&session, memory).unwrap();
        let dylib = session.create_dylib("main").unwrap();
        let speculator = Speculator::install(&stubs, Some(policy));
        (session, dylib, speculator)
    }

    /// A call graph filed by hand: each body's callees; a body absent is not filed yet.
    type Graph = Arc<Mutex<FxHashMap<SymbolName, Arc<[SymbolName]>>>>;

    /// A session of one worker with a speculator guessing by `StaticCallees` over a call graph
    /// filed by hand (empty at first), the graph, and dylib `main`.
    fn static_speculator() -> (Graph, ExecutionSession, JitDylib, Arc<Speculator>) {
        let graph: Graph = Arc::default();
        let reads = graph.clone();
        let policy = StaticCallees::new(move |_, body| reads.lock().get(body).cloned(), 16);
        let (session, dylib, speculator) = one_worker_speculator_with(Arc::new(policy));
        (graph, session, dylib, speculator)
    }

    /// Defines `names` in `dylib` (as absolute symbols): static guesses name only what the
    /// dylib defines.
    fn define(dylib: &JitDylib, names: &[&SymbolName]) {
        let addr = jit_core::ExecutorAddr(define as *const () as usize as u64);
        let defs = names.iter().map(|&n| (n.clone(), jit_core::SymbolDef::new(addr, jit_core::SymbolFlags::CALLABLE)));
        dylib.define_absolute(defs).unwrap();
    }

    /// Occupies the session's only worker until the returned sender is dropped.
    fn hold_the_worker(session: &ExecutionSession) -> crossbeam_channel::Sender<()> {
        let (started_tx, started_rx) = crossbeam_channel::bounded(0);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        session.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }));
        started_rx.recv_timeout(Duration::from_secs(60)).expect("the worker did not start");
        release_tx
    }

    /// Guesses from first calls made while demanded work waits for a thread are dropped;
    /// a profile's guesses from the start are all queued.
    #[test]
    fn guesses_made_while_every_thread_is_busy_with_demanded_work_are_dropped() {
        let (session, dylib, speculator) = one_worker_speculator();
        // Keep the only worker busy, with demanded work waiting behind it.
        let release_tx = hold_the_worker(&session);
        session.dispatch(Task::new(TaskKind::Other, Priority::Demanded, || {}));
        speculator.speculate(&dylib, session.intern("guess.body"));
        speculator.start();
        let stats = speculator.stats();
        assert_eq!((stats.dropped, stats.queued), (1, 1), "{stats}");
        drop(release_tx);
        session.end_session().unwrap();
    }

    /// A guess whose compile would wait for another compile is dropped when it is made, or
    /// when a worker gets to it; a profile's guesses from the start are not.
    #[test]
    fn guesses_that_would_wait_for_another_compile_are_dropped() {
        let (session, dylib, speculator) = one_worker_speculator();
        let busy_now: Arc<Mutex<FxHashSet<String>>> = Arc::default();
        let checks = busy_now.clone();
        speculator.set_busy_check(move |_, body| checks.lock().contains(body.as_str()));
        busy_now.lock().extend(["busy.body".to_string(), "started.body".to_string()]);
        // Hold the only worker so that queued guesses wait for it.
        let release_tx = hold_the_worker(&session);
        speculator.speculate(&dylib, session.intern("busy.body"));
        speculator.speculate(&dylib, session.intern("later.body"));
        speculator.start();
        let stats = speculator.stats();
        assert_eq!((stats.dropped, stats.queued), (1, 2), "made while busy: dropped; the profile's: queued; {stats}");
        // By the time the worker gets to it, `later.body`'s module is busy too.
        busy_now.lock().insert("later.body".to_string());
        drop(release_tx);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        session.dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || done_tx.send(()).unwrap()));
        done_rx.recv_timeout(Duration::from_secs(60)).expect("the queued guesses did not run");
        let stats = speculator.stats();
        assert_eq!((stats.dropped, stats.queued), (2, 1), "dropped when the worker got to it: {stats}");
        session.end_session().unwrap();
    }

    /// A first call made before its call graph is filed is answered once it is, even with
    /// demanded work waiting then (the call is past: its guesses would not be made again); one
    /// whose graph is filed, with no callees, is not kept; a graph filed for another dylib
    /// answers nothing.
    #[test]
    fn a_first_call_made_before_its_call_graph_is_filed_is_answered_when_it_is() {
        let (graph, session, dylib, speculator) = static_speculator();
        let other = session.create_dylib("other").unwrap();
        let [caller, callee, leaf] = ["caller.body", "callee.body", "leaf.body"].map(|n| session.intern(n));
        define(&dylib, &[&callee]);
        graph.lock().insert(leaf.clone(), Arc::from([]));
        speculator.first_call(&dylib, &caller);
        speculator.first_call(&dylib, &leaf);
        let stats = speculator.stats();
        assert_eq!((stats.queued, stats.unanswered), (0, 1), "the caller waits, the leaf does not: {stats}");

        graph.lock().insert(caller.clone(), Arc::from([callee.clone()]));
        speculator.call_graph_filed(&other, std::slice::from_ref(&caller));
        assert_eq!(speculator.stats().unanswered, 1, "another dylib's graph");
        // Keep the only worker busy, with demanded work waiting behind it.
        let release_tx = hold_the_worker(&session);
        session.dispatch(Task::new(TaskKind::Other, Priority::Demanded, || {}));
        speculator.call_graph_filed(&dylib, &[caller, leaf]);
        let stats = speculator.stats();
        assert_eq!((stats.queued, stats.dropped, stats.asked_again, stats.unanswered), (1, 0, 1, 0), "{stats}");
        drop(release_tx);
        session.end_session().unwrap();
    }

    /// A first call's guesses are all made at once: the demanded work the first one's compile
    /// starts (on a worker that takes it at once) does not crowd the others out.
    #[test]
    fn the_first_guess_of_a_first_call_does_not_crowd_out_the_others() {
        let (graph, session, dylib, speculator) = static_speculator();
        let [caller, first, second] = ["caller.body", "first.body", "second.body"].map(|n| session.intern(n));
        define(&dylib, &[&first, &second]);
        graph.lock().insert(caller.clone(), Arc::from([first.clone(), second.clone()]));
        // The only worker is held; when `first` is checked (just before it is queued), demanded
        // work starts waiting, as if a worker had taken it at once and started its compile.
        let release_tx = hold_the_worker(&session);
        let starts = session.clone();
        speculator.set_busy_check(move |_, body| {
            if body.as_str() == "first.body" {
                starts.dispatch(Task::new(TaskKind::Other, Priority::Demanded, || {}));
            }
            false
        });
        speculator.first_call(&dylib, &caller);
        let stats = speculator.stats();
        assert_eq!((stats.queued, stats.dropped), (2, 0), "{stats}");
        drop(release_tx);
        session.end_session().unwrap();
    }

    /// A call graph filed after the policy found nothing, but before the first call is kept
    /// for it, is not missed: the first call asks again.
    #[test]
    fn a_call_graph_filed_while_the_policy_answers_is_not_missed() {
        let graph: Graph = Arc::default();
        let speculator_slot: Arc<std::sync::OnceLock<Weak<Speculator>>> = Arc::default();
        let (reads, slot) = (graph.clone(), speculator_slot.clone());
        let asked = Arc::new(AtomicU64::new(0));
        let policy = StaticCallees::new(
            move |dylib, body| {
                let answer = reads.lock().get(body).cloned();
                // The second question (the answer itself) is overtaken by the graph's filing.
                if asked.fetch_add(1, Ordering::Relaxed) == 1 {
                    let callee = dylib.session().intern("callee.body");
                    reads.lock().insert(body.clone(), Arc::from([callee]));
                    let speculator = slot.get().and_then(Weak::upgrade).expect("installed");
                    speculator.call_graph_filed(dylib, std::slice::from_ref(body));
                }
                answer
            },
            16,
        );
        let (session, dylib, speculator) = one_worker_speculator_with(Arc::new(policy));
        speculator_slot.set(Arc::downgrade(&speculator)).unwrap();
        define(&dylib, &[&session.intern("callee.body")]);
        speculator.first_call(&dylib, &session.intern("caller.body"));
        let stats = speculator.stats();
        assert_eq!((stats.queued, stats.unanswered), (1, 0), "{stats}");
        session.end_session().unwrap();
    }

    /// A static guess names only bodies the dylib defines: a call to a function found
    /// elsewhere (libc's) guesses nothing and leaves the limit to the others.
    #[test]
    fn static_guesses_skip_callees_the_dylib_does_not_define() {
        let graph: Graph = Arc::default();
        let reads = graph.clone();
        let policy = StaticCallees::new(move |_, body| reads.lock().get(body).cloned(), 2);
        let (session, dylib, speculator) = one_worker_speculator_with(Arc::new(policy));
        let [caller, printf, a, b, c] =
            ["caller.body", "printf.body", "a.body", "b.body", "c.body"].map(|n| session.intern(n));
        define(&dylib, &[&a, &b, &c]);
        graph.lock().insert(caller.clone(), Arc::from([printf, a.clone(), b.clone(), c]));
        let guesses = speculator.policy().unwrap().on_first_call(&dylib, &caller);
        let names: Vec<&SymbolName> = guesses.iter().map(|(_, n)| n).collect();
        assert_eq!(names, [&a, &b]);
        speculator.first_call(&dylib, &caller);
        assert_eq!(speculator.stats().queued, 2);
        session.end_session().unwrap();
    }

    #[test]
    fn profiles_parse_what_speculators_write() {
        let profile = ReplayProfile::parse("main.impl\tmain.body\nmain.impl\tf.orcjit.ab12.body\thot\nnot a line\n");
        assert_eq!(
            profile.entries,
            vec![
                ("main.impl".into(), "main.body".into(), false),
                ("main.impl".into(), "f.orcjit.ab12.body".into(), true)
            ]
        );
        assert_eq!(profile.hot().collect::<Vec<_>>(), [("main.impl", "f.orcjit.ab12.body")]);
    }
}
