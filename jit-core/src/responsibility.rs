//! The materialization responsibility: the token that says "you must produce these symbols".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::collect_small;
use crate::dispatch::Priority;
use crate::dylib::JitDylib;
use crate::error::{Error, Result};
use crate::events::{self, symbol_event, unit_event};
use crate::graph::SymId;
use crate::lookup::{DylibId, LookupKind, LookupResult, RequiredState, SearchOrder, SymbolLookupSet};
use crate::session::{ExecutionSession, LookupOptions, SessionInner};
use crate::state::{Effects, MrSymbols};
use crate::symbol::{SymbolDef, SymbolFlags, SymbolFlagsMap, SymbolName};
use crate::tracker::ResourceKey;
use crate::unit::MaterializationUnit;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Number of responsibilities alive in this process (for leak checks in tests).
pub fn live_responsibilities() -> usize {
    LIVE.load(Ordering::SeqCst)
}

/// Symbols emitted together, and the symbols they depend on.
///
/// A linker computes `depends_on` from its graph: the external symbols that the blocks of these
/// symbols reach. The group's symbols become Ready when everything they reach is emitted.
#[derive(Clone, Debug, Default)]
pub struct EmissionGroup {
    pub symbols: SmallVec<[SymbolName; 1]>,
    pub depends_on: SmallVec<[(DylibId, SymbolName); 4]>,
}

impl EmissionGroup {
    pub fn new(
        symbols: impl IntoIterator<Item = SymbolName>,
        depends_on: impl IntoIterator<Item = (DylibId, SymbolName)>,
    ) -> Self {
        EmissionGroup { symbols: collect_small(symbols), depends_on: collect_small(depends_on) }
    }
}

/// The obligation to materialize a set of symbols of one dylib.
///
/// Contract: handed to [`MaterializationUnit::materialize`] and owned from then on. It ends by
/// [`notify_emitted`](Self::notify_emitted) (every symbol resolved, then emitted) or by
/// [`fail`](Self::fail); both consume it. It may be split ([`delegate`](Self::delegate)) or
/// partly handed back ([`replace`](Self::replace)). Dropping it before either fails the
/// symbols it still holds with [`Error::ResponsibilityDropped`] (and `debug_assert!`s, outside
/// unwinding and after the session ended), so no waiter ever starves.
pub struct MaterializationResponsibility {
    inner: Arc<SessionInner>,
    dylib: DylibId,
    symbols: MrSymbols,
    /// Where lookups made through this responsibility record what they found (made on the
    /// first such lookup).
    implicit: Option<Arc<Mutex<Vec<SymId>>>>,
    priority: Priority,
    /// The name of the unit that started this materialization, while a subscriber wants state
    /// events (see `events`).
    label: Option<Arc<str>>,
}

impl MaterializationResponsibility {
    pub(crate) fn new(
        inner: Arc<SessionInner>,
        dylib: DylibId,
        symbols: MrSymbols,
        priority: Priority,
        label: Option<Arc<str>>,
    ) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        MaterializationResponsibility { inner, dylib, symbols, implicit: None, priority, label }
    }

    /// The name of the unit that started this materialization, if state events are wanted.
    pub(crate) fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    pub fn session(&self) -> ExecutionSession {
        ExecutionSession::from_inner(self.inner.clone())
    }

    /// The dylib the symbols are defined in.
    pub fn dylib(&self) -> JitDylib {
        JitDylib::from_parts(self.session(), self.dylib)
    }

    /// The id of the dylib the symbols are defined in (no locking, unlike `dylib`).
    pub fn dylib_id(&self) -> DylibId {
        self.dylib
    }

    /// How urgently this work was asked for.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The symbols this responsibility still holds, with their flags.
    pub fn symbols(&self) -> impl Iterator<Item = (&SymbolName, SymbolFlags)> {
        self.symbols.iter().map(|(n, s)| (n, s.flags))
    }

    pub fn symbol_flags(&self) -> SymbolFlagsMap {
        self.symbols().map(|(n, f)| (n.clone(), f)).collect()
    }

    pub fn contains(&self, name: &SymbolName) -> bool {
        self.symbols.contains_key(name)
    }

    /// The flags of `name`, if this responsibility holds it (a hash lookup once it holds more
    /// than a few symbols).
    pub fn flags_of(&self, name: &SymbolName) -> Option<SymbolFlags> {
        self.symbols.get(name).map(|s| s.flags)
    }

    /// The symbols some lookup is waiting for right now (sorted). The others may be handed
    /// back with [`replace`](Self::replace) to stay lazy.
    pub fn requested_symbols(&self) -> Vec<SymbolName> {
        self.inner.state.lock().requested(&self.symbols)
    }

    /// Gives addresses to (some of) the symbols; lookups waiting for `Resolved` complete.
    pub fn notify_resolved(&mut self, defs: impl IntoIterator<Item = (SymbolName, SymbolDef)>) -> Result<()> {
        let defs: SmallVec<[(SymbolName, SymbolDef); 4]> = collect_small(defs);
        let mut fx = Effects::default();
        let r = self.inner.state.lock().resolve(self.dylib, &mut self.symbols, &defs, &mut fx);
        self.inner.apply(fx);
        if let (Some(label), Ok(())) = (&self.label, &r) {
            unit_event!(events::RESOLVED, &**label, self.dylib.index, symbols = defs.len());
            if events::symbols_enabled() {
                for (name, _) in &defs {
                    symbol_event!(events::RESOLVED, self.dylib.index, name.as_str(), unit = &**label);
                }
            }
        }
        r
    }

    /// Emits every symbol (all must be resolved), with dependencies per group. On a misuse
    /// (a symbol not resolved, an unknown dependency...) every symbol fails with the error; if
    /// some groups depend on symbols that already failed, just those groups fail, and the error
    /// names them.
    pub fn notify_emitted(mut self, groups: impl IntoIterator<Item = EmissionGroup>) -> Result<()> {
        let groups: SmallVec<[EmissionGroup; 2]> = collect_small(groups);
        let symbols = std::mem::take(&mut self.symbols);
        if let Some(label) = &self.label {
            // Before the graph hears of them: the symbols' `ready` events follow.
            unit_event!(events::EMITTED, &**label, self.dylib.index);
            if events::symbols_enabled() {
                for name in symbols.keys() {
                    symbol_event!(events::EMITTED, self.dylib.index, name.as_str(), unit = &**label);
                }
            }
        }
        let implicit = self.implicit.take().map(|sink| std::mem::take(&mut *sink.lock())).unwrap_or_default();
        let mut fx = Effects::default();
        let result = self.inner.state.lock().emit(self.dylib, &symbols, &groups, &implicit, self.priority, &mut fx);
        self.inner.apply(fx);
        result
    }

    /// Fails every symbol this responsibility holds; waiters and dependants get `error` as
    /// the root cause.
    pub fn fail(mut self, error: Error) {
        let symbols = std::mem::take(&mut self.symbols);
        self.fail_symbols(&symbols, error);
    }

    fn fail_symbols(&self, symbols: &MrSymbols, error: Error) {
        if let Some(label) = &self.label {
            unit_event!(events::FAILED, &**label, self.dylib.index, error = %error);
        }
        let mut fx = Effects::default();
        self.inner.state.lock().fail_responsibility(self.dylib, symbols, error, &mut fx);
        self.inner.apply(fx);
    }

    /// Hands the symbols of `unit` (a subset of this responsibility's) back to the dylib, to be
    /// materialized by `unit` when looked up (at once if a lookup already waits on them).
    pub fn replace(&mut self, unit: impl MaterializationUnit) -> Result<()> {
        self.replace_boxed(Box::new(unit))
    }

    pub fn replace_boxed(&mut self, unit: Box<dyn MaterializationUnit>) -> Result<()> {
        let interface = unit.symbols().clone();
        let mut fx = Effects::default();
        let r = self.inner.state.lock().replace(self.dylib, &mut self.symbols, unit, interface, self.priority, &mut fx);
        self.inner.apply(fx);
        r
    }

    /// Splits off a responsibility for `names`, to be completed independently.
    pub fn delegate(&mut self, names: &[SymbolName]) -> Result<MaterializationResponsibility> {
        let unexpected: Vec<SymbolName> = names.iter().filter(|n| !self.symbols.contains_key(n)).cloned().collect();
        if !unexpected.is_empty() {
            let st = self.inner.state.lock();
            let mut responsible: Vec<_> = self.symbols.keys().map(|n| st.qualify_name(self.dylib, n)).collect();
            responsible.sort();
            return Err(Error::UnexpectedSymbolDefinitions { responsible, unexpected });
        }
        let taken: MrSymbols = names.iter().filter_map(|n| self.symbols.remove_entry(n)).collect();
        Ok(MaterializationResponsibility::new(self.inner.clone(), self.dylib, taken, self.priority, self.label.clone()))
    }

    /// Defines new symbols in the dylib that this responsibility will materialize (e.g.
    /// symbols a compiler discovered). Fails, adding none, if any is already defined.
    pub fn define_materializing(&mut self, symbols: impl IntoIterator<Item = (SymbolName, SymbolFlags)>) -> Result<()> {
        let new: Vec<(SymbolName, SymbolFlags)> = symbols.into_iter().collect();
        self.inner.state.lock().define_materializing(self.dylib, &mut self.symbols, new)
    }

    /// Looks symbols up on behalf of this materialization and hands the responsibility back
    /// with the answer: whatever the lookup finds becomes a dependency of every symbol this
    /// responsibility emits (in addition to the groups given to `notify_emitted`). Use
    /// `Resolved` here; waiting for `Ready` on a symbol that depends back on these symbols
    /// can never complete.
    pub fn lookup(
        self,
        order: &SearchOrder,
        names: SymbolLookupSet,
        required: RequiredState,
        on_complete: impl FnOnce(Self, Result<LookupResult>) + Send + 'static,
    ) {
        let options = LookupOptions { priority: self.priority, kind: LookupKind::Static };
        let mut this = self;
        let implicit = this.implicit.get_or_insert_with(Arc::default).clone();
        let inner = this.inner.clone();
        inner.start_lookup(order, names, required, options, Some(implicit), Box::new(move |r| on_complete(this, r)));
    }

    /// Runs `f` with the key of the tracker responsible for these symbols, under the session
    /// lock so that the tracker cannot be removed meanwhile. For layers recording resources
    /// (memory, registrations) against the tracker. `f` must be short and must not call into
    /// the session.
    pub fn with_resource_key<T>(&self, f: impl FnOnce(ResourceKey) -> T) -> Result<T> {
        let st = self.inner.state.lock();
        let tracker = st.mr_tracker(self.dylib, &self.symbols)?;
        Ok(f(ResourceKey::of(tracker)))
    }
}

impl Drop for MaterializationResponsibility {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
        if self.symbols.is_empty() {
            return;
        }
        let symbols = std::mem::take(&mut self.symbols);
        let (ended, qualified) = {
            let st = self.inner.state.lock();
            let mut q: Vec<_> = symbols.keys().map(|n| st.qualify_name(self.dylib, n)).collect();
            q.sort();
            (st.ended, q)
        };
        self.fail_symbols(&symbols, Error::ResponsibilityDropped { symbols: qualified.clone() });
        if !ended && !std::thread::panicking() {
            debug_assert!(
                false,
                "materialization responsibility for {qualified:?} dropped without emitting or failing"
            );
        }
    }
}

impl std::fmt::Debug for MaterializationResponsibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&SymbolName> = self.symbols.keys().collect();
        names.sort();
        f.debug_struct("MaterializationResponsibility").field("dylib", &self.dylib).field("symbols", &names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{ExecutorAddr, JitDylib, SymbolState};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn addr(n: u64) -> SymbolDef {
        SymbolDef::new(ExecutorAddr(n), EXPORTED)
    }

    /// Defines a unit that hands its responsibility to the test, starts it, and returns it.
    fn parked(es: &ExecutionSession, jd: &JitDylib, names: &[&SymbolName]) -> MaterializationResponsibility {
        let (park, parked) = oneshot();
        let syms: Vec<(&SymbolName, SymbolFlags)> = names.iter().map(|n| (*n, EXPORTED)).collect();
        jd.define(FnUnit::new(&syms, park)).unwrap();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([names[0].clone()]), RequiredState::Resolved, |_| {});
        recv(&parked)
    }

    #[test]
    fn resolving_a_symbol_it_does_not_hold_is_an_error_naming_it() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let mut mr = parked(&es, &jd, &[&x]);
        let err = mr.notify_resolved([(y.clone(), addr(1))]).unwrap_err();
        assert!(
            matches!(&err, Error::UnexpectedSymbolDefinitions { unexpected, .. } if *unexpected == vec![y.clone()])
        );
        assert!(err.to_string().contains("'y'"), "{err}");
        mr.fail(Error::msg("done"));
    }

    #[test]
    fn emitting_before_resolving_everything_fails_the_symbols_and_says_which() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let mut mr = parked(&es, &jd, &[&x, &y]);
        let (done, answer) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([y.clone()]), RequiredState::Ready, done);
        mr.notify_resolved([(x.clone(), addr(1))]).unwrap();
        let err = mr.notify_emitted(vec![]).unwrap_err();
        assert_eq!(err.to_string(), "materialization was not given addresses for 'y' in 'main'");
        assert!(matches!(recv(&answer), Err(Error::FailedToMaterialize { .. })), "the waiter is told");
        assert!(jd.has_failed(&x) && jd.has_failed(&y));
    }

    #[test]
    fn a_dropped_responsibility_fails_its_symbols_so_no_waiter_starves() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        let mr = parked(&es, &jd, &[&x]);
        let (done, answer) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, done);
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(mr)));
        assert_eq!(dropped.is_err(), cfg!(debug_assertions), "debug builds assert on the dropped responsibility");
        let err = recv(&answer).unwrap_err();
        assert!(err.to_string().contains("dropped without emitting or failing"), "{err}");
    }

    #[test]
    fn flags_of_answers_for_held_symbols_only_small_and_indexed() {
        let (es, jd) = setup(0);
        // Two responsibilities: one small enough to be searched, one large enough to be indexed.
        for n in [2, 20] {
            let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("s{n}_{i}"))).collect();
            let refs: Vec<&SymbolName> = names.iter().collect();
            let mut mr = parked(&es, &jd, &refs);
            assert!(names.iter().all(|name| mr.flags_of(name) == Some(EXPORTED)));
            let last = names.last().unwrap();
            mr.replace(FnUnit::resolving(&[(last, EXPORTED)], 2)).unwrap();
            assert_eq!(mr.flags_of(last), None, "handed back");
            assert_eq!(mr.flags_of(&es.intern("elsewhere")), None);
            mr.fail(Error::msg("done"));
        }
    }

    #[test]
    fn replace_hands_back_unrequested_symbols_to_be_materialized_later() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let mut mr = parked(&es, &jd, &[&x, &y]);
        assert_eq!(mr.requested_symbols(), vec![x.clone()]);
        mr.replace(FnUnit::resolving(&[(&y, EXPORTED)], 2)).unwrap();
        assert!(!mr.contains(&y));
        assert_eq!(jd.symbol_state(&y), Some(SymbolState::NeverSearched));
        mr.notify_resolved([(x.clone(), addr(1))]).unwrap();
        mr.notify_emitted(vec![]).unwrap();
        assert_eq!(jd.lookup("y").unwrap().addr, ExecutorAddr(2));
    }

    #[test]
    fn replace_of_an_already_requested_symbol_materializes_it_at_once() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let mut mr = parked(&es, &jd, &[&x, &y]);
        let (done, answer) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([y.clone()]), RequiredState::Ready, done);
        mr.replace(FnUnit::resolving(&[(&y, EXPORTED)], 2)).unwrap();
        assert_eq!(recv(&answer).unwrap()[&y].addr, ExecutorAddr(2));
        mr.fail(Error::msg("x is not needed"));
    }

    #[test]
    fn delegate_splits_a_responsibility_into_independent_parts() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let mut mr = parked(&es, &jd, &[&x, &y]);
        let mut part = mr.delegate(std::slice::from_ref(&y)).unwrap();
        assert!(mr.delegate(std::slice::from_ref(&y)).is_err(), "y was already delegated");
        part.notify_resolved([(y.clone(), addr(2))]).unwrap();
        part.notify_emitted(vec![]).unwrap();
        assert_eq!(jd.lookup("y").unwrap().addr, ExecutorAddr(2));
        mr.notify_resolved([(x.clone(), addr(1))]).unwrap();
        mr.notify_emitted(vec![]).unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1));
    }

    #[test]
    fn define_materializing_adds_symbols_the_responsibility_must_produce() {
        let (es, jd) = setup(0);
        let (x, extra, taken) = (es.intern("x"), es.intern("extra"), es.intern("taken"));
        jd.define_absolute([(taken.clone(), addr(9))]).unwrap();
        let mut mr = parked(&es, &jd, &[&x]);
        assert!(matches!(mr.define_materializing([(taken, EXPORTED)]), Err(Error::DuplicateDefinition { .. })));
        mr.define_materializing([(extra.clone(), EXPORTED)]).unwrap();
        assert_eq!(jd.symbol_state(&extra), Some(SymbolState::Materializing));
        mr.notify_resolved([(x, addr(1)), (extra.clone(), addr(2))]).unwrap();
        mr.notify_emitted(vec![]).unwrap();
        assert_eq!(jd.lookup("extra").unwrap().addr, ExecutorAddr(2));
    }

    /// A unit of `name` that emits it depending on `dep` of its own dylib.
    fn depending_on(name: &SymbolName, dep: &SymbolName) -> FnUnit {
        let (own, dep) = (name.clone(), dep.clone());
        FnUnit::new(&[(name, EXPORTED)], move |mut mr| {
            let dylib = mr.dylib_id();
            mr.notify_resolved([(own.clone(), addr(3))]).unwrap();
            mr.notify_emitted([EmissionGroup::new([own], [(dylib, dep)])]).unwrap();
        })
    }

    #[test]
    fn a_dependency_is_ready_only_in_the_dylib_where_it_is_and_while_it_lives() {
        let (es, jd) = setup(0);
        let other = es.create_dylib("other").unwrap();
        let (x, w, y, z) = (es.intern("x"), es.intern("w"), es.intern("y"), es.intern("z"));
        // x was Ready in `main`, under a tracker since removed; w is Ready in `other` only.
        let tracker = jd.create_tracker();
        jd.define_boxed(Box::new(FnUnit::resolving(&[(&x, EXPORTED)], 1)), Some(&tracker)).unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1));
        tracker.remove().unwrap();
        other.define_absolute([(w.clone(), addr(2))]).unwrap();
        // Both are being materialized in `main` now, so what depends on them there waits.
        let mr_x = parked(&es, &jd, &[&x]);
        let mr_w = parked(&es, &jd, &[&w]);
        jd.define(depending_on(&y, &x)).unwrap();
        jd.define(depending_on(&z, &w)).unwrap();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([y.clone(), z.clone()]), RequiredState::Resolved, |_| {});
        assert_eq!(jd.symbol_state(&y), Some(SymbolState::Emitted), "x of main is not Ready");
        assert_eq!(jd.symbol_state(&z), Some(SymbolState::Emitted), "w of main is not Ready");
        for (mut mr, name) in [(mr_x, &x), (mr_w, &w)] {
            mr.notify_resolved([(name.clone(), addr(4))]).unwrap();
            mr.notify_emitted(vec![]).unwrap();
        }
        assert_eq!(jd.symbol_state(&y), Some(SymbolState::Ready));
        assert_eq!(jd.symbol_state(&z), Some(SymbolState::Ready));
    }

    #[test]
    fn with_resource_key_fails_once_the_tracker_is_gone() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        let tracker = jd.create_tracker();
        let (park, parked) = oneshot();
        jd.define_boxed(Box::new(FnUnit::new(&[(&x, EXPORTED)], park)), Some(&tracker)).unwrap();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, |_| {});
        let mut mr = recv(&parked);
        assert_eq!(mr.with_resource_key(|k| k).unwrap(), tracker.key());
        tracker.remove().unwrap();
        assert!(matches!(mr.with_resource_key(|k| k), Err(Error::ResourceTrackerDefunct { .. })));
        assert!(matches!(mr.notify_resolved([(x, addr(1))]), Err(Error::ResourceTrackerDefunct { .. })));
        mr.fail(Error::msg("tracker removed"));
    }
}
