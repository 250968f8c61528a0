//! The JIT dylib handle: a symbol table with a link order and definition generators.

use std::sync::Arc;

use crate::error::Result;
use crate::generator::DefinitionGenerator;
use crate::lookup::{DylibId, MatchFlags, SearchOrder, SymbolState};
use crate::session::ExecutionSession;
use crate::state::Effects;
use crate::symbol::{SymbolDef, SymbolFlags, SymbolName};
use crate::tracker::ResourceTracker;
use crate::unit::MaterializationUnit;

/// A handle on a JIT dylib: cheap to clone, compared by identity.
///
/// A dylib is a symbol table (name -> definition, flags, state) plus the *link order* that
/// code defined in it searches for its own references, and *generators* consulted for names
/// it does not define. Definitions follow linker rules: two strong definitions of one name is
/// an error; a weak definition loses silently to a strong one (the loser's unit is told via
/// `discard`) if the weak one has not started materializing; otherwise the later definition is
/// rejected.
#[derive(Clone)]
pub struct JitDylib {
    session: ExecutionSession,
    id: DylibId,
    name: Arc<str>,
}

impl JitDylib {
    pub(crate) fn from_parts(session: ExecutionSession, id: DylibId) -> Self {
        let name = session.inner.dylib_names.read()[id.index as usize].clone();
        JitDylib { session, id, name }
    }

    pub(crate) fn with_name(session: ExecutionSession, id: DylibId, name: Arc<str>) -> Self {
        JitDylib { session, id, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> DylibId {
        self.id
    }

    pub fn session(&self) -> &ExecutionSession {
        &self.session
    }

    /// This dylib alone, matching all its symbols: the search order for "look in here".
    pub fn search_order(&self) -> SearchOrder {
        SearchOrder::from(self)
    }

    /// Adds `unit`'s definitions, tracked by the default tracker. See the type's doc for the
    /// rules; a `DuplicateDefinition` error adds nothing.
    pub fn define(&self, unit: impl MaterializationUnit) -> Result<()> {
        self.define_boxed(Box::new(unit), None)
    }

    /// Adds `unit`'s definitions, tracked by `tracker` (or the default tracker).
    pub fn define_boxed(&self, unit: Box<dyn MaterializationUnit>, tracker: Option<&ResourceTracker>) -> Result<()> {
        let interface = unit.symbols().clone();
        let inner = &self.session.inner;
        let mut fx = Effects::default();
        let result = {
            let mut st = inner.state.lock();
            st.check_dylib(self.id)?;
            let tracker = tracker.map_or(st.dylib(self.id).default_tracker, |t| t.id());
            st.define(self.id, tracker, unit, interface, &mut fx)
        };
        inner.apply(fx);
        result
    }

    /// Defines symbols at known addresses that are Ready at once (no materialization).
    pub fn define_absolute(&self, defs: impl IntoIterator<Item = (SymbolName, SymbolDef)>) -> Result<()> {
        self.define_ready(defs.into_iter().collect(), None, false)
    }

    pub fn define_absolute_with_tracker(
        &self,
        defs: impl IntoIterator<Item = (SymbolName, SymbolDef)>,
        tracker: &ResourceTracker,
    ) -> Result<()> {
        self.define_ready(defs.into_iter().collect(), Some(tracker), false)
    }

    /// As `define_absolute`, skipping names defined meanwhile (generators use this).
    pub(crate) fn define_absolute_missing(&self, defs: Vec<(SymbolName, SymbolDef)>) -> Result<()> {
        if defs.is_empty() {
            return Ok(());
        }
        self.define_ready(defs, None, true)
    }

    fn define_ready(
        &self,
        defs: Vec<(SymbolName, SymbolDef)>,
        tracker: Option<&ResourceTracker>,
        skip_existing: bool,
    ) -> Result<()> {
        let inner = &self.session.inner;
        let mut fx = Effects::default();
        let result = {
            let mut st = inner.state.lock();
            st.check_dylib(self.id)?;
            let tracker = tracker.map_or(st.dylib(self.id).default_tracker, |t| t.id());
            st.define_ready(self.id, tracker, defs, skip_existing, &mut fx)
        };
        inner.apply(fx);
        result
    }

    /// The tracker used when none is given.
    pub fn default_tracker(&self) -> ResourceTracker {
        let id = self.session.inner.state.lock().dylib(self.id).default_tracker;
        ResourceTracker::new(self.session.clone(), id, self.id)
    }

    /// A new tracker for definitions that should be removable on their own.
    pub fn create_tracker(&self) -> ResourceTracker {
        let id = self.session.inner.state.lock().create_tracker(self.id);
        ResourceTracker::new(self.session.clone(), id, self.id)
    }

    /// The order in which references from code in this dylib are searched (initially: this
    /// dylib, all symbols).
    pub fn link_order(&self) -> SearchOrder {
        self.session.inner.state.lock().dylib(self.id).link_order.clone()
    }

    /// Replaces the link order. With `link_against_self_first`, this dylib (all symbols) is put
    /// first unless `order` already starts with it.
    pub fn set_link_order(&self, order: SearchOrder, link_against_self_first: bool) {
        let mut order = order;
        if link_against_self_first && order.iter().next().map(|(d, _)| d) != Some(self.id) {
            let mut with_self = SearchOrder::new();
            with_self.push(self.id, MatchFlags::All);
            with_self.0.extend(order.0);
            order = with_self;
        }
        self.session.inner.state.lock().dylib_mut(self.id).link_order = order;
    }

    /// Appends `other` to the link order (if not already in it).
    pub fn add_to_link_order(&self, other: &JitDylib, flags: MatchFlags) {
        let mut st = self.session.inner.state.lock();
        let lo = &mut st.dylib_mut(self.id).link_order;
        if !lo.iter().any(|(d, _)| d == other.id) {
            lo.push(other.id, flags);
        }
    }

    /// Puts `new` where `old` was in the link order (with `flags`); no change if `old` is absent.
    pub fn replace_in_link_order(&self, old: &JitDylib, new: &JitDylib, flags: MatchFlags) {
        let mut st = self.session.inner.state.lock();
        for entry in st.dylib_mut(self.id).link_order.0.iter_mut() {
            if entry.0 == old.id {
                *entry = (new.id, flags);
            }
        }
    }

    pub fn remove_from_link_order(&self, other: &JitDylib) {
        let mut st = self.session.inner.state.lock();
        st.dylib_mut(self.id).link_order.0.retain(|(d, _)| *d != other.id);
    }

    /// Adds a generator, consulted after those added before it.
    pub fn add_generator(&self, generator: impl DefinitionGenerator) {
        self.add_generator_arc(Arc::new(generator));
    }

    pub fn add_generator_arc(&self, generator: Arc<dyn DefinitionGenerator>) {
        self.session.inner.state.lock().dylib_mut(self.id).generators.push(generator);
    }

    /// Where `name` stands here, if defined. A failed symbol reports the state it had reached;
    /// see [`JitDylib::has_failed`].
    pub fn symbol_state(&self, name: &SymbolName) -> Option<SymbolState> {
        let st = self.session.inner.state.lock();
        st.symbol_id(self.id, name).map(|sid| st.symbols[sid].state())
    }

    /// The flags `name` is defined with here, if defined (failed or not).
    pub fn symbol_flags(&self, name: &SymbolName) -> Option<SymbolFlags> {
        let st = self.session.inner.state.lock();
        st.symbol_id(self.id, name).map(|sid| st.symbols[sid].flags)
    }

    /// True if `name` is defined here and its materialization failed.
    pub fn has_failed(&self, name: &SymbolName) -> bool {
        let st = self.session.inner.state.lock();
        st.symbol_id(self.id, name).is_some_and(|sid| st.symbols[sid].failure().is_some())
    }

    /// The names defined here (by units, absolute definitions and generators' answers so
    /// far), in any state but failed, with their flags; in no particular order. Generators
    /// that answer with the process's symbols define them `ABSOLUTE`.
    pub fn defined_symbols(&self) -> Vec<(SymbolName, SymbolFlags)> {
        self.session.inner.state.lock().defined_symbols(self.id)
    }

    /// A handle that does not keep the session alive.
    pub fn downgrade(&self) -> WeakJitDylib {
        WeakJitDylib { session: Arc::downgrade(&self.session.inner), id: self.id, name: self.name.clone() }
    }

    /// Looks `name` up in this dylib alone and waits until it is Ready.
    pub fn lookup(&self, name: &str) -> Result<SymbolDef> {
        let name = self.session.intern(name);
        self.session.lookup_symbol(&self.search_order(), &name)
    }
}

/// A handle on a JIT dylib that does not keep its session alive (for registries that outlive
/// the sessions they list): [`upgrade`](Self::upgrade) gives the [`JitDylib`] back while some
/// handle on the session lives.
#[derive(Clone)]
pub struct WeakJitDylib {
    session: std::sync::Weak<crate::session::SessionInner>,
    id: DylibId,
    name: Arc<str>,
}

impl WeakJitDylib {
    pub fn upgrade(&self) -> Option<JitDylib> {
        let inner = self.session.upgrade()?;
        Some(JitDylib { session: ExecutionSession { inner }, id: self.id, name: self.name.clone() })
    }
}

impl PartialEq for JitDylib {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for JitDylib {}

impl std::hash::Hash for JitDylib {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl std::fmt::Debug for JitDylib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JitDylib('{}')", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{Error, ExecutorAddr, RequiredState, SymbolFlags, SymbolLookupSet};

    #[test]
    fn a_second_strong_definition_is_an_error_naming_symbol_and_dylib_and_adds_nothing() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 1)).unwrap();
        let err = jd.define(FnUnit::resolving(&[(&y, EXPORTED), (&x, EXPORTED)], 2)).unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateDefinition { symbol, dylib, .. } if *symbol == x && &**dylib == "main"),
            "{err}"
        );
        // Both units are named, the first while it is not materialized.
        let both = "duplicate definition of 'x' in dylib 'main': by 'test unit', defined by 'test unit'";
        assert_eq!(err.to_string(), both);
        assert_eq!(jd.symbol_state(&y), None, "the rejected unit's other symbols were not added");
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1));
        let err = jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 3)).unwrap_err();
        assert_eq!(err.to_string(), "duplicate definition of 'x' in dylib 'main': by 'test unit'");
        let err = jd.define_absolute([(x.clone(), SymbolDef::new(ExecutorAddr(4), EXPORTED))]).unwrap_err();
        assert_eq!(err.to_string(), "duplicate definition of 'x' in dylib 'main'");
    }

    #[test]
    fn a_weak_definition_loses_to_an_existing_strong_one_and_is_discarded() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 1)).unwrap();
        let loser = FnUnit::resolving(&[(&x, weak()), (&y, EXPORTED)], 2);
        let discarded = loser.discarded.clone();
        jd.define(loser).unwrap();
        assert_eq!(jd.lookup("y").unwrap().addr, ExecutorAddr(2));
        assert_eq!(*discarded.lock(), vec![x.clone()], "told to discard before materializing");
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1));
    }

    #[test]
    fn a_strong_definition_overrides_a_weak_one_not_yet_materialized() {
        let (es, jd) = setup(0);
        let (x, y) = (es.intern("x"), es.intern("y"));
        let weak_unit = FnUnit::resolving(&[(&x, weak()), (&y, EXPORTED)], 1);
        let discarded = weak_unit.discarded.clone();
        jd.define(weak_unit).unwrap();
        jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 2)).unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(2));
        assert_eq!(jd.lookup("y").unwrap().addr, ExecutorAddr(1));
        assert_eq!(*discarded.lock(), vec![x]);
    }

    #[test]
    fn a_weak_definition_that_is_dropped_entirely_is_released() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        jd.define(FnUnit::resolving(&[(&x, weak())], 1)).unwrap();
        jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 2)).unwrap();
        assert_eq!(es.census().units, 1, "the weak unit lost its only symbol and was dropped");
        jd.define(FnUnit::resolving(&[(&x, weak())], 3)).unwrap();
        assert_eq!(es.census().units, 1, "a weak unit losing everything is never installed");
    }

    #[test]
    fn a_strong_definition_after_the_weak_one_started_materializing_is_a_duplicate() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        let (park, parked) = oneshot();
        jd.define(FnUnit::new(&[(&x, weak())], park)).unwrap();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, |_| {});
        let mr = recv(&parked);
        let err = jd.define(FnUnit::resolving(&[(&x, EXPORTED)], 2)).unwrap_err();
        assert!(matches!(err, Error::DuplicateDefinition { .. }));
        mr.fail(Error::msg("test over"));
    }

    #[test]
    fn define_absolute_symbols_are_ready_at_once() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        jd.define_absolute([(x.clone(), SymbolDef::new(ExecutorAddr(0x1234), EXPORTED))]).unwrap();
        assert_eq!(jd.symbol_state(&x), Some(SymbolState::Ready));
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(0x1234));
        assert!(matches!(
            jd.define_absolute([(x, SymbolDef::new(ExecutorAddr(1), EXPORTED))]),
            Err(Error::DuplicateDefinition { .. })
        ));
    }

    #[test]
    fn link_order_can_be_set_extended_replaced_and_trimmed() {
        let (es, a) = setup(0);
        let b = es.create_dylib("b").unwrap();
        let c = es.create_dylib("c").unwrap();
        assert_eq!(a.link_order(), a.search_order(), "a new dylib links against itself");
        a.set_link_order(SearchOrder::new().then(&b, MatchFlags::ExportedOnly), true);
        assert_eq!(a.link_order(), SearchOrder::new().then(&a, MatchFlags::All).then(&b, MatchFlags::ExportedOnly));
        a.add_to_link_order(&c, MatchFlags::ExportedOnly);
        a.add_to_link_order(&c, MatchFlags::ExportedOnly);
        assert_eq!(a.link_order().len(), 3, "adding twice adds once");
        a.replace_in_link_order(&b, &c, MatchFlags::All);
        a.remove_from_link_order(&a);
        assert_eq!(a.link_order(), SearchOrder::new().then(&c, MatchFlags::All).then(&c, MatchFlags::ExportedOnly));
        assert!(matches!(es.create_dylib("b"), Err(Error::DylibExists(_))));
        assert_eq!(es.dylib("c"), Some(c));
    }

    #[test]
    fn the_first_dylib_in_the_search_order_wins_and_exported_only_skips_hidden_symbols() {
        let (es, a) = setup(0);
        let b = es.create_dylib("b").unwrap();
        let (x, h) = (es.intern("x"), es.intern("h"));
        a.define_absolute([(x.clone(), SymbolDef::new(ExecutorAddr(1), EXPORTED))]).unwrap();
        b.define_absolute([(x.clone(), SymbolDef::new(ExecutorAddr(2), EXPORTED))]).unwrap();
        a.define_absolute([(h.clone(), SymbolDef::new(ExecutorAddr(3), SymbolFlags::empty()))]).unwrap();
        b.define_absolute([(h.clone(), SymbolDef::new(ExecutorAddr(4), EXPORTED))]).unwrap();
        let ab = SearchOrder::new().then(&a, MatchFlags::ExportedOnly).then(&b, MatchFlags::All);
        let ba = SearchOrder::new().then(&b, MatchFlags::All).then(&a, MatchFlags::All);
        assert_eq!(es.lookup_symbol(&ab, &x).unwrap().addr, ExecutorAddr(1));
        assert_eq!(es.lookup_symbol(&ba, &x).unwrap().addr, ExecutorAddr(2));
        assert_eq!(
            es.lookup_symbol(&ab, &h).unwrap().addr,
            ExecutorAddr(4),
            "hidden 'h' in a is invisible to an exported-only search"
        );
        let a_all = SearchOrder::from(&a);
        assert_eq!(es.lookup_symbol(&a_all, &h).unwrap().addr, ExecutorAddr(3));
    }

    #[test]
    fn a_name_defined_in_several_dylibs_is_found_in_each_through_removals_and_redefinitions() {
        let (es, a) = setup(0);
        let b = es.create_dylib("b").unwrap();
        let c = es.create_dylib("c").unwrap();
        let x = es.intern("x");
        let def = |n| [(x.clone(), SymbolDef::new(ExecutorAddr(n), EXPORTED))];
        let in_a = a.create_tracker();
        a.define_absolute_with_tracker(def(1), &in_a).unwrap();
        let in_b = b.create_tracker();
        b.define_absolute_with_tracker(def(2), &in_b).unwrap();
        c.define_absolute(def(3)).unwrap();
        let find = |jd: &JitDylib| es.lookup_symbol(&SearchOrder::from(jd), &x).ok().map(|d| d.addr.0);
        assert_eq!([find(&a), find(&b), find(&c)], [Some(1), Some(2), Some(3)]);
        // The first definition (a's) goes; the others stay found, and a can define it again.
        in_a.remove().unwrap();
        assert_eq!([find(&a), find(&b), find(&c)], [None, Some(2), Some(3)]);
        a.define_absolute(def(4)).unwrap();
        in_b.remove().unwrap();
        assert_eq!([find(&a), find(&b), find(&c)], [Some(4), None, Some(3)]);
        b.define_absolute(def(5)).unwrap();
        assert_eq!([find(&a), find(&b), find(&c)], [Some(4), Some(5), Some(3)]);
        assert!(matches!(c.define_absolute(def(6)), Err(Error::DuplicateDefinition { .. })));
        let defined: Vec<_> = [&a, &b, &c].iter().map(|jd| jd.defined_symbols()).collect();
        assert_eq!(defined, vec![vec![(x.clone(), EXPORTED)]; 3]);
    }

    #[test]
    fn a_name_interned_by_another_session_is_found_in_both() {
        let (es1, jd1) = setup(0);
        let (es2, jd2) = setup(0);
        // Entries of both sessions sit at the same first arena slots, so a hint one session
        // wrote would point at a live entry of the other.
        let (p, q) = (es1.intern("p"), es1.intern("q"));
        let foreign = es2.intern("q");
        jd2.define_absolute([(foreign.clone(), SymbolDef::new(ExecutorAddr(9), EXPORTED))]).unwrap();
        jd1.define_absolute([(p.clone(), SymbolDef::new(ExecutorAddr(1), EXPORTED))]).unwrap();
        jd1.define_absolute([(q.clone(), SymbolDef::new(ExecutorAddr(2), EXPORTED))]).unwrap();
        jd1.define_absolute([(foreign.clone(), SymbolDef::new(ExecutorAddr(3), EXPORTED))]).unwrap();
        let find = |es: &ExecutionSession, jd: &JitDylib, n: &SymbolName| {
            es.lookup_symbol(&jd.search_order(), n).ok().map(|d| d.addr.0)
        };
        assert_eq!(find(&es1, &jd1, &p), Some(1));
        assert_eq!(find(&es1, &jd1, &q), Some(2));
        assert_eq!(find(&es1, &jd1, &foreign), Some(3));
        assert_eq!(find(&es2, &jd2, &foreign), Some(9));
    }

    #[test]
    fn defined_symbols_lists_what_the_dylib_defines_and_leaves_failed_and_removed_ones_out() {
        let (es, jd) = setup(0);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| es.intern(n));
        jd.define_absolute([(a.clone(), SymbolDef::new(ExecutorAddr(1), EXPORTED))]).unwrap();
        jd.define(FnUnit::resolving(&[(&b, SymbolFlags::empty())], 2)).unwrap();
        jd.define(FnUnit::new(&[(&c, EXPORTED)], |mr| mr.fail(Error::msg("no c")))).unwrap();
        let tracker = jd.create_tracker();
        jd.define_boxed(Box::new(FnUnit::resolving(&[(&d, EXPORTED)], 4)), Some(&tracker)).unwrap();
        assert!(es.lookup_symbol(&jd.search_order(), &c).is_err());
        let mut defined = jd.defined_symbols();
        defined.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        assert_eq!(defined, vec![(a.clone(), EXPORTED), (b.clone(), SymbolFlags::empty()), (d, EXPORTED)]);
        assert_eq!(jd.symbol_flags(&b), Some(SymbolFlags::empty()));
        assert_eq!(jd.symbol_flags(&c), Some(EXPORTED), "failed, but defined");
        tracker.remove().unwrap();
        assert_eq!(jd.defined_symbols().len(), 2, "d went with its tracker");
        assert_eq!(jd.symbol_flags(&es.intern("d")), None);
    }

    #[test]
    fn a_weak_handle_upgrades_while_the_session_lives() {
        let (es, jd) = setup(1);
        let weak = jd.downgrade();
        assert_eq!(weak.upgrade(), Some(jd.clone()));
        es.end_session().unwrap();
        drop((es, jd));
        assert!(weak.upgrade().is_none(), "the weak handle kept the session alive");
    }
}
