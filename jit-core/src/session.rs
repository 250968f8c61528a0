//! The execution session: the one shared context that owns the name pool, the dylibs, the
//! session lock, the dispatcher and the error reporter, and that answers lookups.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_channel::bounded;
use parking_lot::{Mutex, RwLock};

use crate::dispatch::{InPlaceDispatcher, Priority, Task, TaskDispatcher, TaskKind, ThreadPoolDispatcher};
use crate::dylib::JitDylib;
use crate::error::{Error, Result};
use crate::events::{self, unit_event};
use crate::generator::GeneratorDone;
use crate::graph::SymId;
use crate::lookup::{LookupKind, LookupResult, RequiredState, SearchOrder, SymbolLookupFlags, SymbolLookupSet};
use crate::responsibility::MaterializationResponsibility;
use crate::state::{
    Census, Completion, EffectLists, Effects, Fast, GeneratorStep, LookupJob, PendingMaterialization, SessionState,
};
use crate::symbol::{SymbolDef, SymbolMap, SymbolName, SymbolStringPool};
use crate::tracker::{ResourceKey, ResourceManager};

/// How a lookup is carried out, beyond what it asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupOptions {
    /// The priority of the materializations this lookup starts.
    pub priority: Priority,
    pub kind: LookupKind,
}

type ErrorReporter = Arc<dyn Fn(&Error) + Send + Sync>;

pub(crate) struct SessionInner {
    pool: SymbolStringPool,
    pub(crate) state: Mutex<SessionState>,
    /// Dylib names by index (append-only), so handles are made without the session lock.
    pub(crate) dylib_names: RwLock<Vec<Arc<str>>>,
    dispatcher: Arc<dyn TaskDispatcher>,
    reporter: RwLock<ErrorReporter>,
}

static NEXT_SESSION_ID: AtomicU32 = AtomicU32::new(1);

/// The shared context of a JIT: a cheap-to-clone handle (an `Arc` inside).
///
/// Contract: every method may be called from any thread. The session lock is held only to read
/// and update tables; materializers, callbacks, generators and drops of user objects run
/// outside it. `end_session` fails everything still pending and stops the dispatcher; the
/// session answers `SessionEnded` from then on.
#[derive(Clone)]
pub struct ExecutionSession {
    pub(crate) inner: Arc<SessionInner>,
}

impl ExecutionSession {
    /// A session whose work runs on `dispatcher`.
    pub fn new(dispatcher: impl TaskDispatcher) -> Self {
        Self::with_dispatcher(Arc::new(dispatcher))
    }

    pub fn with_dispatcher(dispatcher: Arc<dyn TaskDispatcher>) -> Self {
        let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let reporter: ErrorReporter = Arc::new(|e: &Error| tracing::error!(target: "orcjit", "JIT session error: {e}"));
        let pool = SymbolStringPool::new();
        ExecutionSession {
            inner: Arc::new(SessionInner {
                state: Mutex::new(SessionState::new(id, pool.clone())),
                pool,
                dylib_names: RwLock::new(Vec::new()),
                dispatcher,
                reporter: RwLock::new(reporter),
            }),
        }
    }

    /// A session that runs all work on the threads that ask for it.
    pub fn in_place() -> Self {
        Self::new(InPlaceDispatcher::new())
    }

    /// A session with a pool of exactly `n` worker threads.
    pub fn with_threads(n: usize) -> std::io::Result<Self> {
        Ok(Self::new(ThreadPoolDispatcher::new(n)?))
    }

    pub(crate) fn from_inner(inner: Arc<SessionInner>) -> Self {
        ExecutionSession { inner }
    }

    pub fn symbol_pool(&self) -> &SymbolStringPool {
        &self.inner.pool
    }

    pub fn intern(&self, name: &str) -> SymbolName {
        self.inner.pool.intern(name)
    }

    /// Creates an empty dylib; its link order is itself.
    pub fn create_dylib(&self, name: &str) -> Result<JitDylib> {
        let name: Arc<str> = Arc::from(name);
        let id = {
            let mut st = self.inner.state.lock();
            let id = st.create_dylib(&name)?;
            self.inner.dylib_names.write().push(name.clone());
            id
        };
        Ok(JitDylib::with_name(self.clone(), id, name))
    }

    pub fn dylib(&self, name: &str) -> Option<JitDylib> {
        let id = self.inner.state.lock().find_dylib(name)?;
        Some(JitDylib::with_name(self.clone(), id, Arc::from(name)))
    }

    /// Looks `names` up in `order` and calls `on_complete` (through the dispatcher, never under
    /// the session lock) once every required name reached `required`, or with the first error.
    /// Starts the materialization of anything found but not yet materialized.
    pub fn lookup(
        &self,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
        on_complete: impl FnOnce(Result<SymbolMap>) + Send + 'static,
    ) {
        self.lookup_detailed(order, names, required, LookupOptions::default(), move |r| {
            on_complete(r.map(LookupResult::into_map))
        });
    }

    /// As [`lookup`](Self::lookup), reporting which dylib defines each symbol (what a linker
    /// records as a dependency), with options.
    pub fn lookup_detailed(
        &self,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
        options: LookupOptions,
        on_complete: impl FnOnce(Result<LookupResult>) + Send + 'static,
    ) {
        self.inner.start_lookup(order, names, required, options, None, Box::new(on_complete));
    }

    /// Looks up and waits. On a dispatcher thread, runs queued work while waiting.
    ///
    /// A materializer may wait so on other units' symbols (even with a pool of one thread), but
    /// not on one it is responsible for itself: its responsibility cannot emit that symbol
    /// while it waits, so the wait never ends (as in LLVM's ORC). Hand the responsibility to
    /// another task first, or look up asynchronously.
    pub fn lookup_blocking(
        &self,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
    ) -> Result<SymbolMap> {
        // The map is made before the lookup runs: allocating it afterwards, among the many
        // small blocks the materializations freed, made malloc sort them all first.
        let mut map = SymbolMap::with_capacity_and_hasher(names.0.len(), Default::default());
        let found = self.lookup_blocking_detailed(order, names, required)?;
        map.extend(found.0.into_iter().map(|f| (f.name, f.def)));
        Ok(map)
    }

    pub fn lookup_blocking_detailed(
        &self,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
    ) -> Result<LookupResult> {
        let (done, woken) = bounded(1);
        let result = Arc::new(Mutex::new(None));
        let job = LookupJob {
            order: order.clone(),
            names: names.0,
            required,
            priority: Priority::Demanded,
            kind: LookupKind::Static,
            completion: Completion::Blocking { result: result.clone(), done },
            generators_from: 0,
            implicit_deps: None,
            holds_generators: None,
        };
        self.inner.run_lookup(job);
        self.inner.dispatcher.wait(&woken);
        let r = result.lock().take();
        r.unwrap_or_else(|| Err(Error::msg("lookup abandoned without an answer")))
    }

    /// Looks one required name up and waits until it is Ready: the common "give me the address
    /// to call" lookup. Answers from the tables without queuing anything when it can.
    pub fn lookup_symbol(&self, order: &SearchOrder, name: &SymbolName) -> Result<SymbolDef> {
        if let Fast::Hit(def) = self.inner.state.lock().lookup_ready_fast(order, name) {
            return Ok(def);
        }
        let names = SymbolLookupSet(vec![(name.clone(), SymbolLookupFlags::Required)]);
        let found = self.lookup_blocking_detailed(order, names, RequiredState::Ready)?;
        found.0.into_iter().next().map(|f| f.def).ok_or_else(|| Error::SymbolsNotFound { symbols: vec![name.clone()] })
    }

    /// Runs `task` on this session's dispatcher.
    pub fn dispatch(&self, task: Task) {
        self.inner.dispatcher.dispatch(task);
    }

    pub fn dispatcher(&self) -> &Arc<dyn TaskDispatcher> {
        &self.inner.dispatcher
    }

    /// Reports an error that has no caller to return to (a failed speculative compile, say).
    pub fn report_error(&self, err: &Error) {
        let reporter = self.inner.reporter.read().clone();
        reporter(err);
    }

    pub fn set_error_reporter(&self, reporter: impl Fn(&Error) + Send + Sync + 'static) {
        *self.inner.reporter.write() = Arc::new(reporter);
    }

    /// Registers a manager told when trackers are removed or transferred.
    pub fn register_resource_manager(&self, manager: Arc<dyn ResourceManager>) {
        self.inner.state.lock().resource_managers.push(manager);
    }

    /// Ends the session: every pending lookup fails with `SessionEnded`, every unit and
    /// generator is released, every resource manager is told to release every tracker, and the
    /// dispatcher stops (queued materializations are dropped, queued callbacks run).
    /// Returns the first error a resource manager reported. Idempotent.
    pub fn end_session(&self) -> Result<()> {
        let mut fx = Effects::default();
        let managers = {
            let mut st = self.inner.state.lock();
            if st.ended {
                return Ok(());
            }
            st.end(&mut fx);
            std::mem::take(&mut st.resource_managers)
        };
        let keys = fx.take_removed_keys();
        self.inner.apply(fx);
        let mut first = None;
        for key in keys {
            for m in &managers {
                if let Err(e) = m.handle_remove(ResourceKey::of(key)) {
                    first.get_or_insert(e);
                }
            }
        }
        self.inner.dispatcher.shutdown();
        first.map_or(Ok(()), Err)
    }

    pub fn has_ended(&self) -> bool {
        self.inner.state.lock().ended
    }

    /// Counts of live symbols, units, pending queries and waiting dependency groups.
    pub fn census(&self) -> Census {
        self.inner.state.lock().census()
    }
}

impl std::fmt::Debug for ExecutionSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionSession").field("census", &self.census()).finish()
    }
}

impl SessionInner {
    pub(crate) fn start_lookup(
        self: &Arc<Self>,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
        options: LookupOptions,
        implicit_deps: Option<Arc<Mutex<Vec<SymId>>>>,
        on_complete: Box<dyn FnOnce(Result<LookupResult>) + Send>,
    ) {
        let _span = tracing::debug_span!(target: "orcjit", "lookup", names = names.len(), ?required).entered();
        self.run_lookup(LookupJob {
            order: order.clone(),
            names: names.0,
            required,
            priority: options.priority,
            kind: options.kind,
            completion: Completion::Callback(on_complete),
            generators_from: 0,
            implicit_deps,
            holds_generators: None,
        });
    }

    /// Advances a lookup as far as the tables allow, then runs the generators it needs.
    pub(crate) fn run_lookup(self: &Arc<Self>, job: LookupJob) {
        let mut fx = Effects::default();
        let step = self.state.lock().run_job(job, &mut fx);
        self.apply(fx);
        if let Some(step) = step {
            self.run_generator(step, 0);
        }
    }

    fn run_generator(self: &Arc<Self>, step: GeneratorStep, index: usize) {
        let generator = step.generators[index].clone();
        let dylib = JitDylib::from_parts(ExecutionSession::from_inner(self.clone()), step.dylib);
        let (kind, names) = (step.job.kind, step.names.clone());
        let _span =
            tracing::debug_span!(target: "orcjit", "generate", dylib = dylib.name(), names = names.len()).entered();
        generator.try_to_generate(&dylib, kind, &names, GeneratorDone::new(self.clone(), step, index));
    }

    /// A generator finished: run the next one, or go on with the lookup. Always continues
    /// through the dispatcher, so that generators finishing inline do not nest.
    pub(crate) fn generator_finished(self: &Arc<Self>, mut step: GeneratorStep, index: usize, result: Result<()>) {
        let inner = self.clone();
        let priority = step.job.priority;
        self.dispatcher.dispatch(Task::new(TaskKind::Callback, priority, move || {
            let mut fx = Effects::default();
            if let Err(e) = result {
                inner.state.lock().generators_done(step.dylib, &mut fx);
                fx.complete(step.job.completion, Err(e));
                inner.apply(fx);
                return;
            }
            let remaining = inner.state.lock().still_missing(step.dylib, &step.names);
            if !remaining.is_empty() && index + 1 < step.generators.len() {
                step.names = remaining;
                inner.run_generator(step, index + 1);
                return;
            }
            inner.state.lock().generators_done(step.dylib, &mut fx);
            inner.apply(fx);
            let mut job = step.job;
            job.generators_from = step.order_index + 1;
            inner.run_lookup(job);
        }));
    }

    /// Carries out what a critical section decided, outside the lock. (Most decide nothing:
    /// that case is checked inline, without moving the effects.)
    #[inline]
    pub(crate) fn apply(self: &Arc<Self>, fx: Effects) {
        if let Some(lists) = fx.into_lists() {
            self.apply_effects(*lists);
        }
    }

    fn apply_effects(self: &Arc<Self>, lists: EffectLists) {
        let EffectLists { materialize, completions, resumes, mut garbage, removed_keys: _ } = lists;
        for (completion, result) in completions {
            match completion {
                Completion::Blocking { result: slot, done } => {
                    *slot.lock() = Some(result);
                    let _ = done.send(());
                }
                Completion::Callback(f) => {
                    self.dispatcher.dispatch(Task::new(TaskKind::Callback, Priority::Demanded, move || f(result)));
                }
            }
        }
        // Units are taken out a batch at a time, just before they are dispatched, so a lookup
        // that starts many materializations holds few of them in flight here.
        const BATCH: usize = 32;
        let mut batch = Vec::with_capacity(materialize.len().min(BATCH));
        for chunk in materialize.chunks(BATCH) {
            {
                let mut st = self.state.lock();
                batch.extend(chunk.iter().filter_map(|&(uid, priority)| st.take_started(uid, priority, &mut garbage)));
            }
            for pm in batch.drain(..) {
                self.dispatch_materialization(pm);
            }
        }
        for job in resumes {
            let inner = self.clone();
            self.dispatcher.dispatch(Task::new(TaskKind::Callback, job.priority, move || inner.run_lookup(job)));
        }
        drop(garbage);
    }

    /// Hands a unit, with a responsibility for its symbols, to the dispatcher.
    fn dispatch_materialization(self: &Arc<Self>, pm: PendingMaterialization) {
        let label = events::units_enabled().then(|| Arc::<str>::from(pm.unit.name()));
        if let Some(label) = &label {
            unit_event!(events::QUEUED, &**label, pm.dylib.index, priority = ?pm.priority);
        }
        let mr = MaterializationResponsibility::new(self.clone(), pm.dylib, pm.symbols, pm.priority, label);
        let (unit, discards) = (pm.unit, pm.discards);
        self.dispatcher.dispatch(Task::new(TaskKind::Materialization, pm.priority, move || {
            let mut unit = unit;
            if !discards.is_empty() {
                let dylib = mr.dylib();
                for name in &discards {
                    unit.discard(&dylib, name);
                }
            }
            let _span = tracing::debug_span!(target: "orcjit", "materialize", unit = unit.name()).entered();
            if let Some(label) = mr.label() {
                unit_event!(events::MATERIALIZING, label, mr.dylib_id().index);
            }
            unit.materialize(mr);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{EmissionGroup, ExecutorAddr, JitDylib, MatchFlags, SymbolFlags, SymbolState};
    use std::sync::atomic::AtomicUsize;

    fn addr(n: u64) -> SymbolDef {
        SymbolDef::new(ExecutorAddr(n), EXPORTED)
    }

    #[test]
    fn a_missing_required_name_is_symbols_not_found_and_a_missing_weak_one_is_absent() {
        let (es, jd) = setup(0);
        let (x, nope, maybe) = (es.intern("x"), es.intern("nope"), es.intern("maybe"));
        jd.define_absolute([(x.clone(), addr(1))]).unwrap();
        let order = jd.search_order();
        let err = es
            .lookup_blocking(&order, SymbolLookupSet::new().with(x.clone()).with(nope.clone()), RequiredState::Ready)
            .unwrap_err();
        assert!(matches!(&err, Error::SymbolsNotFound { symbols } if *symbols == vec![nope.clone()]));
        assert_eq!(err.to_string(), "symbols not found: 'nope'");
        let found = es
            .lookup_blocking(&order, SymbolLookupSet::new().with(x.clone()).with_weak(maybe), RequiredState::Ready)
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&x].addr, ExecutorAddr(1));
    }

    #[test]
    fn a_resolved_lookup_completes_before_emission_and_a_ready_one_after() {
        let (es, jd) = setup(2);
        let x = es.intern("x");
        let (gate_tx, gate_rx) = bounded::<()>(1);
        jd.define(FnUnit::new(&[(&x, EXPORTED)], move |mut mr| {
            let name = mr.symbols().next().unwrap().0.clone();
            mr.notify_resolved([(name, addr(7))]).unwrap();
            gate_rx.recv_timeout(WATCHDOG).unwrap();
            mr.notify_emitted(vec![]).unwrap();
        }))
        .unwrap();
        let (ready, ready_rx) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, ready);
        let resolved = es
            .lookup_blocking(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Resolved)
            .unwrap();
        assert_eq!(resolved[&x].addr, ExecutorAddr(7));
        assert_eq!(jd.symbol_state(&x), Some(SymbolState::Resolved));
        assert!(ready_rx.try_recv().is_err(), "Ready must wait for emission");
        gate_tx.send(()).unwrap();
        assert_eq!(recv(&ready_rx).unwrap()[&x].addr, ExecutorAddr(7));
        assert_eq!(jd.symbol_state(&x), Some(SymbolState::Ready));
    }

    #[test]
    fn callbacks_run_outside_the_session_lock() {
        for threads in [0, 1] {
            let (es, jd) = setup(threads);
            let x = es.intern("x");
            jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 5)).unwrap();
            let (es2, jd2) = (es.clone(), jd.clone());
            let (tx, rx) = oneshot();
            es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, move |r| {
                // Re-entering the session would deadlock if this ran under its lock.
                let y = es2.intern("y");
                jd2.define_absolute([(y, addr(9))]).unwrap();
                tx((r.unwrap(), jd2.lookup("y").unwrap()));
            });
            let (first, second) = recv(&rx);
            assert_eq!(first[&x].addr, ExecutorAddr(5));
            assert_eq!(second.addr, ExecutorAddr(9));
        }
    }

    #[test]
    fn lookups_from_a_materializer_register_dependencies() {
        let (es, jd) = setup(2);
        let (a, b) = (es.intern("a"), es.intern("b"));
        let (gate_tx, gate_rx) = bounded::<()>(1);
        jd.define(FnUnit::new(&[(&b, EXPORTED)], move |mut mr| {
            let name = mr.symbols().next().unwrap().0.clone();
            mr.notify_resolved([(name, addr(2))]).unwrap();
            gate_rx.recv_timeout(WATCHDOG).unwrap();
            mr.notify_emitted(vec![]).unwrap();
        }))
        .unwrap();
        let (bb, jd2) = (b.clone(), jd.clone());
        jd.define(FnUnit::new(&[(&a, EXPORTED)], move |mr| {
            mr.lookup(&jd2.search_order(), SymbolLookupSet::from([bb]), RequiredState::Resolved, move |mut mr, r| {
                let b_addr = r.unwrap().0[0].def.addr;
                let name = mr.symbols().next().unwrap().0.clone();
                mr.notify_resolved([(name, SymbolDef::new(ExecutorAddr(b_addr.0 + 1), EXPORTED))]).unwrap();
                mr.notify_emitted(vec![]).unwrap(); // no explicit groups: the lookup's dependency applies
            });
        }))
        .unwrap();
        let (ready, ready_rx) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([a.clone()]), RequiredState::Ready, ready);
        // 'a' is emitted but cannot be Ready while 'b' is not emitted.
        let resolved = es
            .lookup_blocking(&jd.search_order(), SymbolLookupSet::from([a.clone()]), RequiredState::Resolved)
            .unwrap();
        assert_eq!(resolved[&a].addr, ExecutorAddr(3));
        while jd.symbol_state(&a) != Some(SymbolState::Emitted) {
            std::thread::yield_now();
        }
        assert!(ready_rx.try_recv().is_err());
        gate_tx.send(()).unwrap();
        assert_eq!(recv(&ready_rx).unwrap()[&a].addr, ExecutorAddr(3));
    }

    #[test]
    fn a_blocking_lookup_inside_a_materializer_completes_with_one_thread() {
        let (es, jd) = setup(1);
        let names: Vec<SymbolName> = (0..20).map(|i| es.intern(&format!("f{i}"))).collect();
        // f_i's materializer blocks on f_{i+1}: a chain of nested waits on the only worker.
        for (i, n) in names.iter().enumerate() {
            let next = names.get(i + 1).cloned();
            let jd2 = jd.clone();
            jd.define(FnUnit::new(&[(n, EXPORTED)], move |mut mr| {
                let base = match next {
                    Some(next) => jd2.session().lookup_symbol(&jd2.search_order(), &next).unwrap().addr.0,
                    None => 1000,
                };
                let name = mr.symbols().next().unwrap().0.clone();
                mr.notify_resolved([(name, addr(base + 1))]).unwrap();
                mr.notify_emitted(vec![]).unwrap();
            }))
            .unwrap();
        }
        let (es2, jd2, first) = (es.clone(), jd.clone(), names[0].clone());
        let got = within_watchdog(move || {
            // Issue the outer lookup from a pool thread too, so that every wait is on the pool.
            let (tx, rx) = oneshot();
            let es3 = es2.clone();
            es2.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
                tx(es3.lookup_symbol(&jd2.search_order(), &first))
            }));
            rx.recv().unwrap()
        });
        assert_eq!(got.unwrap().addr, ExecutorAddr(1020));
    }

    #[test]
    fn dependencies_across_units_make_symbols_ready_together_chain_and_cycle() {
        for threads in [0, 2] {
            let (es, jd) = setup(threads);
            let n = 200;
            let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("s{i}"))).collect();
            for i in 0..n {
                // A cycle: s_i depends on s_{i+1 mod n}.
                let dep = names[(i + 1) % n].clone();
                let id = jd.id();
                jd.define(FnUnit::new(&[(&names[i], EXPORTED)], move |mut mr| {
                    let name = mr.symbols().next().unwrap().0.clone();
                    mr.notify_resolved([(name.clone(), addr(i as u64))]).unwrap();
                    mr.notify_emitted([EmissionGroup::new([name], [(id, dep)])]).unwrap();
                }))
                .unwrap();
            }
            let all: SymbolLookupSet = names.iter().cloned().collect();
            let found = es.lookup_blocking(&jd.search_order(), all, RequiredState::Ready).unwrap();
            assert_eq!(found.len(), n);
            assert!(names.iter().enumerate().all(|(i, s)| found[s].addr == ExecutorAddr(i as u64)));
            assert_eq!(es.census().waiting_groups, 0);
        }
    }

    #[test]
    fn a_failure_reaches_every_transitive_dependant_with_its_root_cause() {
        let (es, jd) = setup(0);
        let (a, b, c, d) = (es.intern("a"), es.intern("b"), es.intern("c"), es.intern("d"));
        let id = jd.id();
        let emit_with = |deps: Vec<SymbolName>| {
            move |mut mr: MaterializationResponsibility| {
                let name = mr.symbols().next().unwrap().0.clone();
                mr.notify_resolved([(name.clone(), addr(1))]).unwrap();
                let _ = mr.notify_emitted([EmissionGroup::new([name], deps.into_iter().map(|d| (id, d)))]);
            }
        };
        jd.define(FnUnit::new(&[(&a, EXPORTED)], emit_with(vec![b.clone()]))).unwrap();
        jd.define(FnUnit::new(&[(&b, EXPORTED)], emit_with(vec![c.clone()]))).unwrap();
        jd.define(FnUnit::new(&[(&c, EXPORTED)], |mr| mr.fail(Error::msg("compile error in c")))).unwrap();
        jd.define(FnUnit::new(&[(&d, EXPORTED)], emit_with(vec![]))).unwrap();
        let order = jd.search_order();
        // Materialize a and b first (Resolved), so that they fail as emitted dependants.
        es.lookup_blocking(&order, SymbolLookupSet::from([a.clone(), b.clone()]), RequiredState::Resolved).unwrap();
        let err = es
            .lookup_blocking(&order, SymbolLookupSet::from([a.clone(), d.clone()]), RequiredState::Ready)
            .unwrap_err();
        let Error::FailedToMaterialize { symbols, cause } = &err else { panic!("{err}") };
        assert_eq!(symbols.iter().map(|q| q.symbol.clone()).collect::<Vec<_>>(), vec![a.clone()]);
        assert_eq!(cause.origin.iter().map(|q| q.symbol.clone()).collect::<Vec<_>>(), vec![c.clone()]);
        assert_eq!(
            err.to_string(),
            "failed to materialize 'a' in 'main'; root cause: 'c' in 'main': compile error in c"
        );
        assert!(jd.has_failed(&b) && jd.has_failed(&c) && !jd.has_failed(&d));
        assert_eq!(jd.lookup("d").unwrap().addr, ExecutorAddr(1));
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_lookup() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 11)).unwrap();
        let slow =
            es.lookup_blocking(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready).unwrap();
        let fast = es.lookup_symbol(&jd.search_order(), &x).unwrap();
        assert_eq!(slow[&x], fast);
    }

    #[test]
    fn side_effects_only_symbols_run_once_and_never_appear_in_results() {
        let (es, jd) = setup(0);
        let init = es.intern("__init");
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let flags = SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY;
        jd.define(FnUnit::new(&[(&init, flags)], move |mr| {
            r.fetch_add(1, Ordering::SeqCst);
            mr.notify_emitted(vec![]).unwrap();
        }))
        .unwrap();
        let order = jd.search_order();
        let err = es.lookup_blocking(&order, SymbolLookupSet::from([init.clone()]), RequiredState::Ready).unwrap_err();
        assert!(matches!(err, Error::SideEffectsOnlySymbol(_)), "{err}");
        let found =
            es.lookup_blocking(&order, SymbolLookupSet::new().with_weak(init.clone()), RequiredState::Ready).unwrap();
        assert!(found.is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(jd.symbol_state(&init), None, "gone once its side effects happened");
        es.lookup_blocking(&order, SymbolLookupSet::new().with_weak(init), RequiredState::Ready).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn end_session_fails_pending_lookups_and_refuses_new_work() {
        let (es, jd) = setup(2);
        let x = es.intern("x");
        let (park, parked) = oneshot();
        jd.define(FnUnit::new(&[(&x, EXPORTED)], park)).unwrap();
        let (done, done_rx) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, done);
        let mr = recv(&parked);
        es.end_session().unwrap();
        assert!(matches!(recv(&done_rx), Err(Error::SessionEnded)));
        let mut mr = mr;
        assert!(matches!(mr.notify_resolved([(x.clone(), addr(1))]), Err(Error::SessionEnded)));
        drop(mr); // after the end, dropping is quiet
        assert!(matches!(jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 1)), Err(Error::SessionEnded)));
        assert!(matches!(jd.lookup("x"), Err(Error::SessionEnded)));
        assert!(matches!(es.create_dylib("late"), Err(Error::SessionEnded)));
        es.end_session().unwrap();
    }

    #[test]
    fn the_error_reporter_receives_reported_errors() {
        let (es, _jd) = setup(0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        es.set_error_reporter(move |e| s.lock().push(e.to_string()));
        es.report_error(&Error::msg("speculative compile of f failed"));
        assert_eq!(*seen.lock(), vec!["speculative compile of f failed".to_string()]);
    }

    #[test]
    fn a_dylib_id_from_another_session_is_refused() {
        let (es, _jd) = setup(0);
        let (_other, other_jd) = setup(0);
        let x = es.intern("x");
        let err = es
            .lookup_blocking(
                &SearchOrder::new().then(&other_jd, MatchFlags::All),
                SymbolLookupSet::from([x]),
                RequiredState::Ready,
            )
            .unwrap_err();
        assert!(err.to_string().contains("does not belong to this session"), "{err}");
        let _: Option<JitDylib> = None;
    }
}
