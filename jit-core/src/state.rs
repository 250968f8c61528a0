//! The tables behind the session lock: dylibs, symbols, units, queries, trackers and the
//! dependency graph, and every operation that changes them.
//!
//! Nothing here runs user code. Operations record what must happen next (materializations to
//! start, callbacks to deliver, objects to drop) in [`Effects`], which the caller carries out
//! after releasing the lock (rule 1 of DESIGN.md's concurrency rules).

use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use slotmap::{Key, KeyData, new_key_type};

use crate::arena::Arena;
use crate::collect_small;
use smallvec::SmallVec;

use crate::dispatch::Priority;
use crate::error::{Error, QualifiedSymbol, Result, RootCause};
use crate::events::{self, symbol_event, unit_event};
use crate::generator::DefinitionGenerator;
use crate::graph::{DepGraph, Deps, EmitGroup, NodeStatus, NodeStore, Outcome, SymId, SymbolNode};
use crate::lookup::{
    DylibId, FoundSymbol, LookupKind, LookupResult, MatchFlags, RequiredState, SearchOrder, SymbolLookupFlags,
    SymbolState,
};
use crate::responsibility::EmissionGroup;
use crate::symbol::{ExecutorAddr, Interface, SymbolDef, SymbolFlags, SymbolName, SymbolStringPool};
use crate::tracker::ResourceManager;
use crate::unit::MaterializationUnit;

new_key_type! {
    pub(crate) struct UnitId;
    pub(crate) struct QueryId;
    pub(crate) struct TrackerId;
}

/// Where a not-yet-emitted symbol is in its materialization.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    NeverSearched(UnitId),
    Materializing,
    Resolved,
}

pub(crate) struct QueryWaiter {
    query: QueryId,
    slot: u32,
    required: RequiredState,
}

pub(crate) struct SymbolEntry {
    pub name: SymbolName,
    pub dylib: DylibId,
    pub flags: SymbolFlags,
    pub addr: ExecutorAddr,
    pub phase: Phase,
    pub tracker: TrackerId,
    waiters: SmallVec<[QueryWaiter; 1]>,
    pub node: SymbolNode,
}

impl SymbolEntry {
    pub fn state(&self) -> SymbolState {
        match self.node.status {
            NodeStatus::Emitted(_) => SymbolState::Emitted,
            NodeStatus::Ready => SymbolState::Ready,
            NodeStatus::Pending | NodeStatus::Failed(_) => match self.phase {
                Phase::NeverSearched(_) => SymbolState::NeverSearched,
                Phase::Materializing => SymbolState::Materializing,
                Phase::Resolved => SymbolState::Resolved,
            },
        }
    }

    pub fn failure(&self) -> Option<&Arc<RootCause>> {
        match &self.node.status {
            NodeStatus::Failed(cause) => Some(cause),
            _ => None,
        }
    }

    fn satisfies(&self, required: RequiredState) -> bool {
        match (&self.node.status, required) {
            (NodeStatus::Ready, _) => true,
            (NodeStatus::Emitted(_), RequiredState::Resolved) => true,
            (NodeStatus::Pending, RequiredState::Resolved) => self.phase == Phase::Resolved,
            _ => false,
        }
    }

    fn def(&self) -> SymbolDef {
        SymbolDef { addr: self.addr, flags: self.flags }
    }

    /// Someone needs this symbol: a lookup waits on it, or an emitted group depends on it.
    fn is_needed(&self) -> bool {
        !self.waiters.is_empty() || !self.node.dependants.is_empty()
    }
}

impl NodeStore for Arena<SymId, SymbolEntry> {
    fn node(&mut self, s: SymId) -> Option<&mut SymbolNode> {
        self.get_mut(s).map(|e| &mut e.node)
    }
}

pub(crate) struct UnitEntry {
    unit: Box<dyn MaterializationUnit>,
    /// Names this unit lost to other definitions; it is told before it materializes.
    discards: Vec<SymbolName>,
    dylib: DylibId,
    symbols: SmallVec<[SymId; 2]>,
    /// Its materialization has started and waits to be dispatched (see `take_started`).
    started: bool,
}

pub(crate) struct TrackerState {
    pub dylib: DylibId,
    /// Symbols defined through this tracker (may hold stale ids, filtered on use).
    symbols: Vec<SymId>,
}

pub(crate) struct DylibState {
    pub name: Arc<str>,
    /// This dylib's entries for names whose hint belongs to another dylib's entry (see
    /// [`SessionState::symbol_id`]). Most names are defined in one dylib, so most entries are
    /// found through their hint alone and never enter a table.
    overflow: FxHashMap<SymbolName, SymId>,
    pub link_order: SearchOrder,
    pub generators: Vec<Arc<dyn DefinitionGenerator>>,
    generator_busy: bool,
    generator_queue: std::collections::VecDeque<LookupJob>,
    pub default_tracker: TrackerId,
}

/// A symbol a materialization is responsible for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MrSymbol {
    pub id: SymId,
    pub flags: SymbolFlags,
    pub resolved: bool,
}

/// The symbols a responsibility holds, by name. Most hold one or a few, so this is an inline
/// list searched linearly, with a hash index built only once it grows past a few entries.
#[derive(Default)]
pub(crate) struct MrSymbols {
    entries: SmallVec<[(SymbolName, MrSymbol); 1]>,
    index: Option<FxHashMap<SymbolName, usize>>,
}

impl MrSymbols {
    const INDEX_FROM: usize = 8;

    fn position(&self, name: &SymbolName) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.entries.iter().position(|(n, _)| n == name),
        }
    }

    pub fn get(&self, name: &SymbolName) -> Option<&MrSymbol> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    pub fn contains_key(&self, name: &SymbolName) -> bool {
        self.position(name).is_some()
    }

    /// Adds `name` (which must not be present).
    pub fn insert(&mut self, name: SymbolName, symbol: MrSymbol) {
        debug_assert!(!self.contains_key(&name));
        if let Some(index) = &mut self.index {
            index.insert(name.clone(), self.entries.len());
        }
        self.entries.push((name, symbol));
        if self.index.is_none() && self.entries.len() > Self::INDEX_FROM {
            self.index = Some(self.entries.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect());
        }
    }

    pub fn remove_entry(&mut self, name: &SymbolName) -> Option<(SymbolName, MrSymbol)> {
        let i = self.position(name)?;
        let removed = self.entries.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(name);
            if let Some((moved, _)) = self.entries.get(i) {
                index.insert(moved.clone(), i);
            }
        }
        Some(removed)
    }

    pub fn remove(&mut self, name: &SymbolName) -> Option<MrSymbol> {
        self.remove_entry(name).map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SymbolName, &MrSymbol)> {
        self.entries.iter().map(|(n, s)| (n, s))
    }

    pub fn keys(&self) -> impl Iterator<Item = &SymbolName> {
        self.entries.iter().map(|(n, _)| n)
    }

    pub fn values(&self) -> impl Iterator<Item = &MrSymbol> {
        self.entries.iter().map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The position of `name` in `iter()` order, for per-symbol scratch marks.
    pub fn index_of(&self, name: &SymbolName) -> Option<usize> {
        self.position(name)
    }
}

impl std::ops::Index<&SymbolName> for MrSymbols {
    type Output = MrSymbol;
    fn index(&self, name: &SymbolName) -> &MrSymbol {
        self.get(name).expect("symbol held by this responsibility")
    }
}

impl FromIterator<(SymbolName, MrSymbol)> for MrSymbols {
    fn from_iter<I: IntoIterator<Item = (SymbolName, MrSymbol)>>(iter: I) -> Self {
        let mut out = MrSymbols::default();
        for (n, s) in iter {
            out.insert(n, s);
        }
        out
    }
}

impl<'a> IntoIterator for &'a MrSymbols {
    type Item = (&'a SymbolName, &'a MrSymbol);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (SymbolName, MrSymbol)>,
        fn(&'a (SymbolName, MrSymbol)) -> (&'a SymbolName, &'a MrSymbol),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(n, s)| (n, s))
    }
}

/// Where a lookup's answer goes.
pub(crate) enum Completion {
    /// A user callback, delivered through the dispatcher.
    Callback(Box<dyn FnOnce(Result<LookupResult>) + Send>),
    /// A thread blocked in `lookup_blocking`, woken directly. (If this is ever dropped
    /// unanswered, `done` disconnects and the waiter wakes with an error instead of hanging.)
    Blocking { result: Arc<Mutex<Option<Result<LookupResult>>>>, done: Sender<()> },
}

/// A lookup in progress, between generator runs.
pub(crate) struct LookupJob {
    pub order: SearchOrder,
    pub names: Vec<(SymbolName, SymbolLookupFlags)>,
    pub required: RequiredState,
    pub priority: Priority,
    pub kind: LookupKind,
    pub completion: Completion,
    /// Dylibs at positions before this one in `order` have had their generators run.
    pub generators_from: usize,
    /// Set for lookups issued through a responsibility: found symbols become its dependencies.
    pub implicit_deps: Option<Arc<Mutex<Vec<SymId>>>>,
    /// The dylib whose generators this job was handed when a run of them for another job
    /// finished, with it waiting in their queue: it runs them next, or hands them on.
    pub holds_generators: Option<DylibId>,
}

/// Generators must run before the job can go on.
pub(crate) struct GeneratorStep {
    pub job: LookupJob,
    pub order_index: usize,
    pub dylib: DylibId,
    pub names: Vec<(SymbolName, SymbolLookupFlags)>,
    pub generators: Vec<Arc<dyn DefinitionGenerator>>,
}

struct QueryState {
    /// The result being filled in, one slot per name found (in the order asked).
    slots: Vec<FoundSymbol>,
    /// Slots of side-effects-only symbols: waited for but not reported.
    hidden: Vec<u32>,
    outstanding: u32,
    completion: Completion,
}

/// A unit taken out of its dylib to be materialized.
pub(crate) struct PendingMaterialization {
    pub unit: Box<dyn MaterializationUnit>,
    pub discards: Vec<SymbolName>,
    pub dylib: DylibId,
    pub symbols: MrSymbols,
    pub priority: Priority,
}

/// What the caller must do after releasing the lock. Most critical sections decide nothing
/// (a symbol resolved, a group emitted with no query finishing): their `Effects` stay one
/// null pointer, made and dropped without touching the lists.
#[derive(Default)]
pub(crate) struct Effects(Option<Box<EffectLists>>);

#[derive(Default)]
pub(crate) struct EffectLists {
    /// Units whose materialization started, to be taken out (`take_started`) and dispatched.
    pub materialize: Vec<(UnitId, Priority)>,
    pub completions: Vec<(Completion, Result<LookupResult>)>,
    pub resumes: Vec<LookupJob>,
    pub garbage: Vec<Box<dyn Send>>,
    pub removed_keys: Vec<TrackerId>,
}

impl Effects {
    /// The lists, made on first use.
    pub fn lists(&mut self) -> &mut EffectLists {
        self.0.get_or_insert_with(Default::default)
    }

    pub fn complete(&mut self, completion: Completion, result: Result<LookupResult>) {
        self.lists().completions.push((completion, result));
    }

    /// Everything to do, or nothing.
    pub fn into_lists(self) -> Option<Box<EffectLists>> {
        self.0
    }

    /// Takes the trackers whose resources were removed (for the resource managers).
    pub fn take_removed_keys(&mut self) -> Vec<TrackerId> {
        self.0.as_mut().map(|l| std::mem::take(&mut l.removed_keys)).unwrap_or_default()
    }
}

/// The result of a lookup's fast path.
pub(crate) enum Fast {
    Hit(SymbolDef),
    Miss,
}

pub(crate) struct SessionState {
    pub session_id: u32,
    /// The session's name pool: only names interned there carry hints this session may write.
    pool: SymbolStringPool,
    pub ended: bool,
    pub dylibs: Vec<DylibState>,
    dylib_by_name: FxHashMap<Arc<str>, u32>,
    pub symbols: Arena<SymId, SymbolEntry>,
    units: Arena<UnitId, UnitEntry>,
    queries: Arena<QueryId, QueryState>,
    pub trackers: Arena<TrackerId, TrackerState>,
    graph: DepGraph,
    /// Buffers for graph outcomes, reused across operations.
    scratch: Outcome,
    pub resource_managers: Vec<Arc<dyn ResourceManager>>,
    /// Passes `run_job` made over lookups' names (tests check that queued lookups are not
    /// rescanned once per generator run).
    #[cfg(test)]
    pub job_passes: usize,
}

/// What `prepare_one` made of an emission of one symbol.
enum OneSymbol {
    /// Its dependencies are all Ready: so is it, with no node in the graph.
    ReadyNow(SymId),
    /// Its group is ready for the graph.
    Prepared,
}

/// The decision `define` makes for one symbol of a new definition.
enum Placement {
    New,
    Override(SymId),
    Lose,
}

impl SessionState {
    pub fn new(session_id: u32, pool: SymbolStringPool) -> Self {
        SessionState {
            session_id,
            pool,
            ended: false,
            dylibs: Vec::new(),
            dylib_by_name: FxHashMap::default(),
            symbols: Arena::new(),
            units: Arena::new(),
            queries: Arena::new(),
            trackers: Arena::new(),
            graph: DepGraph::default(),
            scratch: Outcome::default(),
            resource_managers: Vec::new(),
            #[cfg(test)]
            job_passes: 0,
        }
    }

    // ---- dylibs -------------------------------------------------------------------------

    pub fn create_dylib(&mut self, name: &str) -> Result<DylibId> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        let name: Arc<str> = Arc::from(name);
        if self.dylib_by_name.contains_key(&name) {
            return Err(Error::DylibExists(name));
        }
        let index = self.dylibs.len() as u32;
        let id = DylibId { session: self.session_id, index };
        let default_tracker = self.trackers.insert(TrackerState { dylib: id, symbols: Vec::new() });
        let mut link_order = SearchOrder::new();
        link_order.push(id, MatchFlags::All);
        self.dylibs.push(DylibState {
            name: name.clone(),
            overflow: FxHashMap::default(),
            link_order,
            generators: Vec::new(),
            generator_busy: false,
            generator_queue: Default::default(),
            default_tracker,
        });
        self.dylib_by_name.insert(name, index);
        Ok(id)
    }

    pub fn find_dylib(&self, name: &str) -> Option<DylibId> {
        self.dylib_by_name.get(name).map(|&index| DylibId { session: self.session_id, index })
    }

    pub fn check_dylib(&self, id: DylibId) -> Result<()> {
        if id.session != self.session_id || id.index as usize >= self.dylibs.len() {
            return Err(Error::msg(format!("dylib #{} does not belong to this session", id.index)));
        }
        Ok(())
    }

    pub fn dylib(&self, id: DylibId) -> &DylibState {
        &self.dylibs[id.index as usize]
    }

    pub fn dylib_mut(&mut self, id: DylibId) -> &mut DylibState {
        &mut self.dylibs[id.index as usize]
    }

    /// The entry `dylib` holds for `name`.
    ///
    /// Every live entry is found in one of two places: the entry its name's hint points at, or
    /// its dylib's `overflow` table. A name's first definition in this session takes the hint;
    /// a definition of a name whose hint already points at a live entry (of another dylib) goes
    /// to the overflow table, and stays there. So an entry that is live and has this dylib and
    /// name is the answer, and otherwise only the overflow table can hold it. (A removed
    /// entry's key never matches again: the arena bumps a slot's version when it frees it.)
    pub fn symbol_id(&self, dylib: DylibId, name: &SymbolName) -> Option<SymId> {
        self.symbol_id_hinted(dylib, name, name.hint())
    }

    /// `symbol_id`, with the name's hint already read.
    fn symbol_id_hinted(&self, dylib: DylibId, name: &SymbolName, hint: u64) -> Option<SymId> {
        let hinted = SymId::from(KeyData::from_ffi(hint));
        match self.symbols.get(hinted) {
            Some(e) if e.dylib == dylib && e.name == *name => Some(hinted),
            _ => self.dylib(dylib).overflow.get(name).copied(),
        }
    }

    /// Whether the entry `name`'s hint points at is a live one of this session's, for that name.
    fn hint_taken(&self, name: &SymbolName) -> bool {
        let hinted = SymId::from(KeyData::from_ffi(name.hint()));
        self.symbols.get(hinted).is_some_and(|e| e.name == *name)
    }

    /// Every name `dylib` defines, with its flags, failed ones left out. (Found through the
    /// dylib's trackers, which list every symbol defined through them, stale ids included.)
    pub fn defined_symbols(&self, dylib: DylibId) -> Vec<(SymbolName, SymbolFlags)> {
        let mut ids: Vec<SymId> = Vec::new();
        for (tid, t) in self.trackers.iter().filter(|(_, t)| t.dylib == dylib) {
            let live = |&&sid: &&SymId| self.symbols.get(sid).is_some_and(|e| e.tracker == tid && e.dylib == dylib);
            ids.extend(t.symbols.iter().filter(live));
        }
        ids.sort_unstable();
        ids.dedup();
        let live = ids.into_iter().map(|sid| &self.symbols[sid]).filter(|e| e.failure().is_none());
        live.map(|e| (e.name.clone(), e.flags)).collect()
    }

    /// Whether `dylib` has an entry for `name`.
    fn defines(&self, dylib: DylibId, name: &SymbolName) -> bool {
        self.symbol_id(dylib, name).is_some()
    }

    /// Removes entry `sid` from the symbol arena and from wherever its dylib finds it.
    fn remove_symbol(&mut self, sid: SymId) -> Option<SymbolEntry> {
        let e = self.symbols.remove(sid)?;
        if e.name.is_from(&self.pool) && e.name.ready_in() == e.dylib.ready_mark() {
            e.name.set_ready_in(0);
        }
        let overflow = &mut self.dylib_mut(e.dylib).overflow;
        if overflow.get(&e.name) == Some(&sid) {
            overflow.remove(&e.name);
        }
        Some(e)
    }

    fn qualify(&self, sid: SymId) -> Option<QualifiedSymbol> {
        let e = self.symbols.get(sid)?;
        Some(QualifiedSymbol { dylib: self.dylib(e.dylib).name.clone(), symbol: e.name.clone() })
    }

    pub fn qualify_name(&self, dylib: DylibId, symbol: &SymbolName) -> QualifiedSymbol {
        QualifiedSymbol { dylib: self.dylib(dylib).name.clone(), symbol: symbol.clone() }
    }

    fn qualify_all<'a>(&self, dylib: DylibId, names: impl IntoIterator<Item = &'a SymbolName>) -> Vec<QualifiedSymbol> {
        let mut out: Vec<QualifiedSymbol> = names.into_iter().map(|n| self.qualify_name(dylib, n)).collect();
        out.sort();
        out
    }

    // ---- definitions --------------------------------------------------------------------

    fn tracker_alive(&self, tracker: TrackerId, dylib: DylibId) -> Result<()> {
        match self.trackers.get(tracker) {
            Some(t) if t.dylib == dylib => Ok(()),
            Some(_) => Err(Error::msg("resource tracker belongs to another dylib")),
            None => Err(Error::ResourceTrackerDefunct { symbols: Vec::new() }),
        }
    }

    /// Decides where each new definition goes; fails (changing nothing) on a duplicate, naming
    /// the unit that defines it anew (`unit`, if a unit does) and the unit that defined it.
    fn place(
        &self,
        dylib: DylibId,
        interface: &Interface,
        unit: Option<&dyn MaterializationUnit>,
    ) -> Result<SmallVec<[Placement; 2]>> {
        if let Some(name) = repeated_name(interface) {
            return Err(Error::msg(format!(
                "'{name}' appears twice in one definition for dylib '{}'",
                self.dylib(dylib).name
            )));
        }
        let mut placements = SmallVec::with_capacity(interface.len());
        for (name, flags) in interface.iter() {
            let placement = match self.symbol_id(dylib, name) {
                None => Placement::New,
                Some(_) if !flags.is_strong() => Placement::Lose,
                Some(sid) => {
                    let existing = &self.symbols[sid];
                    if !existing.flags.is_strong()
                        && matches!(existing.phase, Phase::NeverSearched(_))
                        && matches!(existing.node.status, NodeStatus::Pending)
                    {
                        Placement::Override(sid)
                    } else {
                        let dylib = self.dylib(dylib).name.clone();
                        let definers = self.definers(unit, existing);
                        return Err(Error::DuplicateDefinition { symbol: name.clone(), dylib, definers });
                    }
                }
            };
            placements.push(placement);
        }
        Ok(placements)
    }

    /// For a duplicate definition's error: "by 'NEW', defined by 'OLD'" (as far as known: a
    /// materialized symbol's unit is gone).
    fn definers(&self, new: Option<&dyn MaterializationUnit>, existing: &SymbolEntry) -> Option<Arc<str>> {
        let old = match existing.phase {
            Phase::NeverSearched(u) => self.units.get(u).map(|u| u.unit.name()),
            _ => None,
        };
        let text = match (new.map(|u| u.name()), old) {
            (Some(new), Some(old)) => format!("by '{new}', defined by '{old}'"),
            (Some(new), None) => format!("by '{new}'"),
            (None, Some(old)) => format!("defined by '{old}'"),
            (None, None) => return None,
        };
        Some(text.into())
    }

    fn insert_symbol(
        &mut self,
        dylib: DylibId,
        tracker: TrackerId,
        name: SymbolName,
        flags: SymbolFlags,
        phase: Phase,
    ) -> SymId {
        let sid = self.symbols.insert(SymbolEntry {
            name: name.clone(),
            dylib,
            flags,
            addr: ExecutorAddr::NULL,
            phase,
            tracker,
            waiters: SmallVec::new(),
            node: SymbolNode::new(),
        });
        if name.is_from(&self.pool) && !self.hint_taken(&name) {
            name.set_hint(sid.data().as_ffi());
        } else {
            self.dylib_mut(dylib).overflow.insert(name, sid);
        }
        self.trackers[tracker].symbols.push(sid);
        sid
    }

    /// Takes `sid` away from the unit that would have materialized it.
    fn take_from_unit(&mut self, sid: SymId, fx: &mut Effects) {
        let Phase::NeverSearched(uid) = self.symbols[sid].phase else {
            return;
        };
        let name = self.symbols[sid].name.clone();
        let Some(unit) = self.units.get_mut(uid) else { return };
        unit.symbols.retain(|s| *s != sid);
        unit.discards.push(name);
        if unit.symbols.is_empty() {
            let unit = self.units.remove(uid).expect("present");
            fx.lists().garbage.push(Box::new(unit.unit));
        }
    }

    /// Adds a unit's definitions to `dylib` with linker semantics (see `JitDylib::define`).
    pub fn define(
        &mut self,
        dylib: DylibId,
        tracker: TrackerId,
        unit: Box<dyn MaterializationUnit>,
        interface: Interface,
        fx: &mut Effects,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        self.tracker_alive(tracker, dylib)?;
        let placements = self.place(dylib, &interface, Some(&*unit))?;
        let uid = self.units.insert(UnitEntry {
            unit,
            discards: Vec::new(),
            dylib,
            symbols: SmallVec::new(),
            started: false,
        });
        for ((name, flags), placement) in interface.into_iter().zip(placements) {
            match placement {
                Placement::New => {
                    let sid = self.insert_symbol(dylib, tracker, name, flags, Phase::NeverSearched(uid));
                    self.units[uid].symbols.push(sid);
                }
                Placement::Override(sid) => {
                    self.take_from_unit(sid, fx);
                    let e = &mut self.symbols[sid];
                    e.flags = flags;
                    e.phase = Phase::NeverSearched(uid);
                    e.tracker = tracker;
                    self.trackers[tracker].symbols.push(sid);
                    self.units[uid].symbols.push(sid);
                }
                Placement::Lose => self.units[uid].discards.push(name),
            }
        }
        let unit = &self.units[uid];
        if unit.symbols.is_empty() {
            let unit = self.units.remove(uid).expect("just inserted");
            fx.lists().garbage.push(Box::new(unit.unit));
        } else if events::units_enabled() {
            unit_event!(events::ADDED, unit.unit.name(), dylib.index, symbols = unit.symbols.len());
            if events::symbols_enabled() {
                for &sid in &unit.symbols {
                    symbol_event!(events::ADDED, dylib.index, self.symbols[sid].name.as_str(), unit = unit.unit.name());
                }
            }
        }
        Ok(())
    }

    /// Defines symbols that are Ready at once, with the same linker semantics as `define`.
    pub fn define_ready(
        &mut self,
        dylib: DylibId,
        tracker: TrackerId,
        defs: Vec<(SymbolName, SymbolDef)>,
        skip_existing: bool,
        fx: &mut Effects,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        self.tracker_alive(tracker, dylib)?;
        let defs: Vec<(SymbolName, SymbolDef)> =
            if skip_existing { defs.into_iter().filter(|(n, _)| !self.defines(dylib, n)).collect() } else { defs };
        let interface: Interface = defs.iter().map(|(n, d)| (n.clone(), d.flags)).collect();
        let placements = self.place(dylib, &interface, None)?;
        for ((name, def), placement) in defs.into_iter().zip(placements) {
            let sid = match placement {
                Placement::Lose => continue,
                Placement::New => self.insert_symbol(dylib, tracker, name, def.flags, Phase::Resolved),
                Placement::Override(sid) => {
                    self.take_from_unit(sid, fx);
                    self.symbols[sid].tracker = tracker;
                    self.trackers[tracker].symbols.push(sid);
                    sid
                }
            };
            let e = &mut self.symbols[sid];
            e.flags = def.flags;
            e.addr = def.addr;
            e.phase = Phase::Resolved;
            e.node.status = NodeStatus::Ready;
            self.mark_ready(sid);
        }
        Ok(())
    }

    // ---- lookup -------------------------------------------------------------------------

    /// The fast path: one name, already Ready, no generator in the way.
    pub fn lookup_ready_fast(&self, order: &SearchOrder, name: &SymbolName) -> Fast {
        if self.ended {
            return Fast::Miss;
        }
        for (d, mf) in order.iter() {
            if self.check_dylib(d).is_err() {
                return Fast::Miss;
            }
            if let Some(sid) = self.symbol_id(d, name) {
                let e = &self.symbols[sid];
                if mf == MatchFlags::All || e.flags.contains(SymbolFlags::EXPORTED) {
                    let se_only = e.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
                    return if matches!(e.node.status, NodeStatus::Ready) && !se_only {
                        Fast::Hit(e.def())
                    } else {
                        Fast::Miss
                    };
                }
            }
            if !self.dylib(d).generators.is_empty() {
                return Fast::Miss;
            }
        }
        Fast::Miss
    }

    /// Matches a job against the tables. Either finishes it (registering a query or completing
    /// it), queues it behind a busy generator, or returns the generators it must run first.
    pub fn run_job(&mut self, mut job: LookupJob, fx: &mut Effects) -> Option<GeneratorStep> {
        let held = job.holds_generators.take();
        let step = self.run_job_holding(job, held, fx);
        // Generators handed to this job that it did not go on to run pass to the next job
        // waiting for them.
        if let Some(d) = held.filter(|&d| step.as_ref().is_none_or(|s| s.dylib != d)) {
            self.generators_done(d, fx);
        }
        step
    }

    /// `run_job` for a job that holds the generators of `held`, if any (they are busy on its
    /// behalf: it does not queue for them).
    fn run_job_holding(&mut self, job: LookupJob, held: Option<DylibId>, fx: &mut Effects) -> Option<GeneratorStep> {
        #[cfg(test)]
        {
            self.job_passes += 1;
        }
        if self.ended {
            fx.complete(job.completion, Err(Error::SessionEnded));
            return None;
        }
        for (d, _) in job.order.iter() {
            if let Err(e) = self.check_dylib(d) {
                fx.complete(job.completion, Err(e));
                return None;
            }
        }
        // (position in `job.names`, entry) of each name found, in that order.
        let mut found: Vec<(u32, SymId)> = Vec::with_capacity(job.names.len());
        // Whether a found symbol failed or is side-effects-only (`finish_job` then looks closer).
        let mut unusual = false;
        let mut missing: Vec<SymbolName> = Vec::new();
        let mut gen_at: Option<usize> = None;
        let mut gen_names: Vec<(SymbolName, SymbolLookupFlags)> = Vec::new();
        'names: for (ni, (name, lf)) in job.names.iter().enumerate() {
            for (oi, (d, mf)) in job.order.iter().enumerate() {
                if let Some(sid) = self.symbol_id(d, name) {
                    let e = &self.symbols[sid];
                    if mf == MatchFlags::All || e.flags.contains(SymbolFlags::EXPORTED) {
                        unusual |=
                            e.failure().is_some() || e.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
                        found.push((ni as u32, sid));
                        continue 'names;
                    }
                }
                if oi >= job.generators_from && !self.dylib(d).generators.is_empty() {
                    match gen_at {
                        Some(g) if g < oi => {}
                        Some(g) if g == oi => gen_names.push((name.clone(), *lf)),
                        _ => {
                            gen_at = Some(oi);
                            gen_names.clear();
                            gen_names.push((name.clone(), *lf));
                        }
                    }
                    continue 'names;
                }
            }
            if *lf == SymbolLookupFlags::Required {
                missing.push(name.clone());
            }
        }
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            fx.complete(job.completion, Err(Error::SymbolsNotFound { symbols: missing }));
            return None;
        }
        if let Some(oi) = gen_at {
            let d = job.order.0[oi].0;
            let dl = self.dylib_mut(d);
            if held != Some(d) {
                if dl.generator_busy {
                    dl.generator_queue.push_back(job);
                    return None;
                }
                dl.generator_busy = true;
            }
            // A lookup may name a symbol twice; a generator sees each missing name once.
            gen_names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            gen_names.dedup_by(|a, b| a.0 == b.0);
            let generators = dl.generators.clone();
            return Some(GeneratorStep { job, order_index: oi, dylib: d, names: gen_names, generators });
        }
        self.finish_job(job, found, unusual, fx);
        None
    }

    /// A generator run on `dylib` finished: the first job queued behind it, if any, goes on
    /// holding its generators, which stay busy for it. That job runs them, or, if the run just
    /// finished defined its names, hands them on in turn (`run_job`), as LLVM's ORC hands a
    /// generator from one lookup to the next. (Resuming every queued job instead made all
    /// but one rescan their names and queue again, after every run: OpenSSL's link made
    /// 31,000 passes over 1.3 million names for 1,000 lookups.)
    pub fn generators_done(&mut self, dylib: DylibId, fx: &mut Effects) {
        let dl = self.dylib_mut(dylib);
        match dl.generator_queue.pop_front() {
            Some(mut job) => {
                job.holds_generators = Some(dylib);
                fx.lists().resumes.push(job);
            }
            None => dl.generator_busy = false,
        }
    }

    /// Names of `names` that `dylib` does not define yet.
    pub fn still_missing(
        &self,
        dylib: DylibId,
        names: &[(SymbolName, SymbolLookupFlags)],
    ) -> Vec<(SymbolName, SymbolLookupFlags)> {
        names.iter().filter(|(n, _)| !self.defines(dylib, n)).cloned().collect()
    }

    /// Registers a query for what `run_job` found (or completes it at once). `unusual`: some
    /// found symbol failed or is side-effects-only, which may make the lookup an error.
    fn finish_job(&mut self, job: LookupJob, found: Vec<(u32, SymId)>, unusual: bool, fx: &mut Effects) {
        let mut failed: Vec<QualifiedSymbol> = Vec::new();
        let mut cause = None;
        for &(ni, sid) in found.iter().filter(|_| unusual) {
            let e = &self.symbols[sid];
            if let Some(c) = e.failure() {
                failed.push(self.qualify(sid).expect("live"));
                cause.get_or_insert_with(|| c.clone());
            } else if e.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY)
                && job.names[ni as usize].1 == SymbolLookupFlags::Required
            {
                let q = self.qualify(sid).expect("live");
                fx.complete(job.completion, Err(Error::SideEffectsOnlySymbol(q)));
                return;
            }
        }
        if let Some(cause) = cause {
            failed.sort();
            failed.dedup();
            fx.complete(job.completion, Err(Error::FailedToMaterialize { symbols: failed, cause }));
            return;
        }
        let LookupJob { names, required, priority, completion, implicit_deps, .. } = job;
        if let Some(sink) = &implicit_deps {
            sink.lock().extend(found.iter().map(|&(_, sid)| sid));
        }
        // The names found move into the result. (`found` is in `names` order.)
        let mut names = names.into_iter().enumerate();
        let mut name_at = |ni: u32| loop {
            match names.next() {
                Some((i, (name, _))) if i == ni as usize => break name,
                Some(_) => {}
                None => unreachable!("found names come in order"),
            }
        };

        // The slots become the result as they are: one per name found, a placeholder definition
        // where the symbol is not there yet.
        let mut slots = Vec::with_capacity(found.len());
        let mut hidden = Vec::new();
        let mut outstanding = 0u32;
        let qid = self.queries.insert(QueryState {
            slots: Vec::new(),
            hidden: Vec::new(),
            outstanding: 0,
            completion: Completion::Callback(Box::new(|_| {})),
        });
        for (slot, &(ni, sid)) in found.iter().enumerate() {
            let e = &mut self.symbols[sid];
            if e.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY) {
                hidden.push(slot as u32);
            }
            let name = name_at(ni);
            let (dylib, def) = (e.dylib, e.def());
            if !e.satisfies(required) {
                outstanding += 1;
                e.waiters.push(QueryWaiter { query: qid, slot: slot as u32, required });
                if let Phase::NeverSearched(u) = e.phase {
                    self.start_materialization(u, priority, fx);
                }
            }
            slots.push(FoundSymbol { name, def, dylib });
        }
        if outstanding == 0 {
            self.queries.remove(qid);
            fx.complete(completion, Ok(result_of(slots, &hidden)));
        } else {
            let q = &mut self.queries[qid];
            q.slots = slots;
            q.hidden = hidden;
            q.outstanding = outstanding;
            q.completion = completion;
        }
    }

    /// Starts materializing unit `uid`: its symbols become Materializing now, and the caller
    /// takes the unit out with [`take_started`](Self::take_started) when it is about to
    /// dispatch it. (A lookup of N lazy symbols would otherwise queue N materializations, each
    /// with its unit and symbol list, before the first one runs.)
    fn start_materialization(&mut self, uid: UnitId, priority: Priority, fx: &mut Effects) {
        let Some(unit) = self.units.get_mut(uid) else { return };
        if unit.started {
            return;
        }
        unit.started = true;
        let symbol_events = events::symbols_enabled();
        let mut any = false;
        for &sid in &unit.symbols {
            let Some(e) = self.symbols.get_mut(sid) else { continue };
            if e.phase == Phase::NeverSearched(uid) {
                e.phase = Phase::Materializing;
                any = true;
                if symbol_events {
                    symbol_event!(events::MATERIALIZING, unit.dylib.index, e.name.as_str(), unit = unit.unit.name());
                }
            }
        }
        if any {
            fx.lists().materialize.push((uid, priority));
        } else {
            let unit = self.units.remove(uid).expect("present");
            fx.lists().garbage.push(Box::new(unit.unit));
        }
    }

    /// Takes out a unit that [`start_materialization`](Self::start_materialization) started,
    /// with the symbols it is still responsible for (its symbols stay with it from then on,
    /// unless their tracker removes them). A unit left with no symbol goes to `garbage`.
    pub fn take_started(
        &mut self,
        uid: UnitId,
        priority: Priority,
        garbage: &mut Vec<Box<dyn Send>>,
    ) -> Option<PendingMaterialization> {
        let unit = self.units.remove(uid)?;
        debug_assert!(unit.started);
        let mut symbols = MrSymbols::default();
        for sid in unit.symbols {
            let Some(e) = self.symbols.get(sid) else { continue };
            debug_assert_eq!(e.phase, Phase::Materializing);
            symbols.insert(e.name.clone(), MrSymbol { id: sid, flags: e.flags, resolved: false });
        }
        if symbols.is_empty() {
            garbage.push(Box::new(unit.unit));
            return None;
        }
        Some(PendingMaterialization { unit: unit.unit, discards: unit.discards, dylib: unit.dylib, symbols, priority })
    }

    /// Delivers `sid`'s definition to the queries satisfied by `reached`.
    fn satisfy(&mut self, sid: SymId, reached: RequiredState, fx: &mut Effects) {
        let Some(e) = self.symbols.get_mut(sid) else { return };
        if e.waiters.iter().all(|w| w.required > reached) {
            return;
        }
        let def = e.def();
        let queries = &mut self.queries;
        e.waiters.retain(|w| {
            if w.required > reached {
                return true;
            }
            if let Some(q) = queries.get_mut(w.query) {
                q.slots[w.slot as usize].def = def;
                q.outstanding -= 1;
                if q.outstanding == 0 {
                    let q = queries.remove(w.query).expect("present");
                    fx.complete(q.completion, Ok(result_of(q.slots, &q.hidden)));
                }
            }
            false
        });
    }

    fn on_ready(&mut self, ready: &[SymId], fx: &mut Effects) {
        if events::symbols_enabled() {
            for &sid in ready {
                let e = &self.symbols[sid];
                symbol_event!(events::READY, e.dylib.index, e.name.as_str());
            }
        }
        for &sid in ready {
            self.satisfy(sid, RequiredState::Ready, fx);
            let e = &self.symbols[sid];
            if e.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY) {
                // Its side effects have happened; a later lookup must not see it (or redo them).
                self.remove_symbol(sid);
            } else {
                self.mark_ready(sid);
            }
        }
    }

    /// Marks Ready entry `sid` on its name (`SymbolName::ready_in`); `remove_symbol` clears it.
    fn mark_ready(&self, sid: SymId) {
        let e = &self.symbols[sid];
        if e.name.is_from(&self.pool) {
            e.name.set_ready_in(e.dylib.ready_mark());
        }
    }

    /// Tells every query waiting on a failed symbol, one error per query listing all of the
    /// failed symbols it waited on.
    fn on_failed(&mut self, failed: &[SymId], fx: &mut Effects) {
        let mut per_query: FxHashMap<QueryId, (Vec<QualifiedSymbol>, Arc<RootCause>)> = FxHashMap::default();
        let symbol_events = events::symbols_enabled();
        for &sid in failed {
            let Some(e) = self.symbols.get_mut(sid) else { continue };
            if symbol_events {
                symbol_event!(events::FAILED, e.dylib.index, e.name.as_str());
            }
            let Some(cause) = e.failure().cloned() else { continue };
            let waiters = std::mem::take(&mut e.waiters);
            if waiters.is_empty() {
                continue;
            }
            let q = self.qualify(sid).expect("live");
            for w in waiters {
                per_query.entry(w.query).or_insert_with(|| (Vec::new(), cause.clone())).0.push(q.clone());
            }
        }
        for (qid, (mut symbols, cause)) in per_query {
            if let Some(q) = self.queries.remove(qid) {
                symbols.sort();
                symbols.dedup();
                fx.complete(q.completion, Err(Error::FailedToMaterialize { symbols, cause }));
            }
        }
    }

    /// Tells waiters what an operation on the graph changed; keeps `out`'s buffers for reuse.
    fn apply(&mut self, mut out: Outcome, fx: &mut Effects) {
        if !out.failed.is_empty() {
            self.on_failed(&out.failed, fx);
        }
        if !out.ready.is_empty() {
            self.on_ready(&out.ready, fx);
        }
        out.ready.clear();
        out.failed.clear();
        self.scratch = out;
    }

    // ---- materialization responsibility ------------------------------------------------

    fn live_mr_symbol(&self, dylib: DylibId, name: &SymbolName, s: &MrSymbol) -> Result<()> {
        match self.symbols.get(s.id) {
            Some(e) if e.failure().is_none() => Ok(()),
            Some(e) => Err(Error::FailedToMaterialize {
                symbols: vec![self.qualify_name(dylib, name)],
                cause: e.failure().expect("failed").clone(),
            }),
            None => Err(Error::ResourceTrackerDefunct { symbols: vec![self.qualify_name(dylib, name)] }),
        }
    }

    pub fn requested(&self, symbols: &MrSymbols) -> Vec<SymbolName> {
        let mut out: Vec<SymbolName> = symbols
            .iter()
            .filter(|(_, s)| self.symbols.get(s.id).is_some_and(SymbolEntry::is_needed))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    pub fn resolve(
        &mut self,
        dylib: DylibId,
        symbols: &mut MrSymbols,
        defs: &[(SymbolName, SymbolDef)],
        fx: &mut Effects,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        // Where each definition's symbol sits in `symbols` (searched for once).
        let mut at: SmallVec<[usize; 4]> = SmallVec::with_capacity(defs.len());
        let mut unexpected = Vec::new();
        for (name, _) in defs {
            match symbols.index_of(name) {
                Some(i) => at.push(i),
                None => unexpected.push(name.clone()),
            }
        }
        if !unexpected.is_empty() {
            return Err(Error::UnexpectedSymbolDefinitions {
                responsible: self.qualify_all(dylib, symbols.keys()),
                unexpected,
            });
        }
        for (&i, (name, _)) in at.iter().zip(defs) {
            self.live_mr_symbol(dylib, name, &symbols.entries[i].1)?;
        }
        for (&i, (_, def)) in at.iter().zip(defs) {
            let s = &mut symbols.entries[i].1;
            s.resolved = true;
            let e = &mut self.symbols[s.id];
            e.addr = def.addr;
            if e.phase == Phase::Materializing {
                e.phase = Phase::Resolved;
            }
            let sid = s.id;
            self.satisfy(sid, RequiredState::Resolved, fx);
        }
        Ok(())
    }

    /// Emits every symbol of a responsibility. `groups` give dependencies per group of symbols
    /// (symbols in no group depend on nothing); `implicit` is added to every group. Dependencies
    /// nobody has asked for yet start materializing (at `priority`): without them, the emitted
    /// symbols could never become Ready. If a check fails, every symbol fails; if some groups
    /// depend on failed symbols, those groups (only) fail, and the error names them.
    pub fn emit(
        &mut self,
        dylib: DylibId,
        symbols: &MrSymbols,
        groups: &[EmissionGroup],
        implicit: &[SymId],
        priority: Priority,
        fx: &mut Effects,
    ) -> Result<()> {
        // Nothing is emitted unless every check passes; a failed check fails every symbol.
        // (The groups are built in place here, not returned: they are a few hundred bytes.)
        let mut emit_groups: SmallVec<[EmitGroup; 2]> = SmallVec::new();
        let mut to_start: SmallVec<[UnitId; 4]> = SmallVec::new();
        match self.prepare_one(symbols, groups, implicit, &mut emit_groups, &mut to_start) {
            Some(OneSymbol::ReadyNow(sid)) => {
                self.symbols[sid].node.status = NodeStatus::Ready;
                self.on_ready(&[sid], fx);
                return Ok(());
            }
            Some(OneSymbol::Prepared) => {}
            None => {
                if let Err(e) = self.prepare_emit(dylib, symbols, groups, implicit, &mut emit_groups, &mut to_start) {
                    self.fail_responsibility(dylib, symbols, e.clone(), fx);
                    return Err(e);
                }
            }
        }
        for u in to_start {
            self.start_materialization(u, priority, fx);
        }
        let mut out = std::mem::take(&mut self.scratch);
        let removed = || {
            Arc::new(RootCause {
                origin: Vec::new(),
                error: Error::msg("a dependency was removed before it was emitted"),
            })
        };
        let SessionState { graph, symbols: arena, .. } = self;
        graph.emit(arena, &mut emit_groups, &|_| removed(), &mut out);
        let own_failed: Vec<SymId> = if out.failed.is_empty() {
            Vec::new()
        } else {
            let own: FxHashSet<SymId> = symbols.values().map(|s| s.id).collect();
            out.failed.iter().copied().filter(|id| own.contains(id)).collect()
        };
        let own_error = own_failed.first().map(|&sid| {
            let cause = self.symbols[sid].failure().expect("failed").clone();
            let mut syms: Vec<QualifiedSymbol> = own_failed.iter().filter_map(|&s| self.qualify(s)).collect();
            syms.sort();
            Error::FailedToMaterialize { symbols: syms, cause }
        });
        self.apply(out, fx);
        match own_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The most common emission, without `prepare_emit`'s bookkeeping: one resolved symbol, in
    /// one group of its own, with a few dependencies and nothing implicit (a compiled function
    /// and its callees). If every dependency is Ready already, the symbol may become Ready at
    /// once, without a node in the graph (a function whose callees were compiled before it).
    /// Otherwise this builds the graph's group exactly as `prepare_emit` would. Returns `None`,
    /// having changed nothing, for anything else, errors included (`prepare_emit` reports them).
    fn prepare_one(
        &self,
        symbols: &MrSymbols,
        groups: &[EmissionGroup],
        implicit: &[SymId],
        emit_groups: &mut SmallVec<[EmitGroup; 2]>,
        to_start: &mut SmallVec<[UnitId; 4]>,
    ) -> Option<OneSymbol> {
        const MAX_DEPS: usize = 8;
        let ([group], [(name, s)], []) = (groups, symbols.entries.as_slice(), implicit) else {
            return None;
        };
        let deps = &group.depends_on;
        let own = matches!(group.symbols.as_slice(), [only] if only == name);
        if self.ended || !s.resolved || !own || deps.len() > MAX_DEPS {
            return None;
        }
        let e = self.symbols.get(s.id)?;
        if !matches!(e.node.status, NodeStatus::Pending) {
            return None;
        }
        // As in `prepare_emit`: every dependency is found before any is used, so that their
        // cache misses overlap.
        let (mut hints, mut marks) = ([0u64; MAX_DEPS], [0u32; MAX_DEPS]);
        for ((hint, mark), (_, dep)) in hints.iter_mut().zip(&mut marks).zip(deps) {
            (*hint, *mark) = (dep.hint(), dep.ready_in());
        }
        // Dependencies whose names say they are Ready in the dylibs asked for: the entries need
        // not be read (a function whose callees were compiled long before).
        let marked_ready = |(&mark, (d, dep)): (&u32, &(DylibId, SymbolName))| {
            mark != 0 && mark == d.ready_mark() && dep.is_from(&self.pool) && self.check_dylib(*d).is_ok()
        };
        if e.node.dependants.is_empty() && marks.iter().zip(deps).all(marked_ready) {
            return Some(OneSymbol::ReadyNow(s.id));
        }
        let mut ids = [SymId::null(); MAX_DEPS];
        for ((id, (d, dep)), &hint) in ids.iter_mut().zip(deps).zip(&hints) {
            self.check_dylib(*d).ok()?;
            *id = self.symbol_id_hinted(*d, dep, hint)?;
        }
        let ids = &ids[..deps.len()];
        let ready = |sid: SymId| sid == s.id || matches!(self.symbols[sid].node.status, NodeStatus::Ready);
        if e.node.dependants.is_empty() && ids.iter().all(|&sid| ready(sid)) {
            return Some(OneSymbol::ReadyNow(s.id));
        }
        for &sid in ids {
            if let Phase::NeverSearched(u) = self.symbols[sid].phase {
                to_start.push(u);
            }
        }
        emit_groups.push(EmitGroup { symbols: SmallVec::from_elem(s.id, 1), deps: Deps::from_slice(ids) });
        Some(OneSymbol::Prepared)
    }

    /// Checks a responsibility's emission and turns its groups into the graph's (`emit_groups`),
    /// noting the never-searched units they depend on (`to_start`).
    fn prepare_emit(
        &mut self,
        dylib: DylibId,
        symbols: &MrSymbols,
        groups: &[EmissionGroup],
        implicit: &[SymId],
        emit_groups: &mut SmallVec<[EmitGroup; 2]>,
        to_start: &mut SmallVec<[UnitId; 4]>,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        for (name, s) in symbols {
            self.live_mr_symbol(dylib, name, s)?;
        }
        let missing: Vec<&SymbolName> = symbols
            .iter()
            .filter(|(_, s)| !s.resolved && !s.flags.contains(SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY))
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingSymbolDefinitions { missing: self.qualify_all(dylib, missing) });
        }
        let mut covered: SmallVec<[bool; 8]> = smallvec::smallvec![false; symbols.len()];
        emit_groups.reserve(groups.len() + 1);
        for EmissionGroup { symbols: names, depends_on: deps } in groups {
            let mut g = EmitGroup {
                symbols: SmallVec::with_capacity(names.len()),
                deps: Deps::with_capacity(deps.len() + implicit.len()),
            };
            let mut unexpected = Vec::new();
            for n in names {
                match symbols.index_of(n) {
                    Some(i) if !std::mem::replace(&mut covered[i], true) => g.symbols.push(symbols[n].id),
                    Some(_) => {}
                    None => unexpected.push(n.clone()),
                }
            }
            if !unexpected.is_empty() {
                return Err(Error::UnexpectedSymbolDefinitions {
                    responsible: self.qualify_all(dylib, symbols.keys()),
                    unexpected,
                });
            }
            for (d, _) in deps {
                self.check_dylib(*d)?;
            }
            // Every dependency is found before any is used: the lookups are independent, so
            // their cache misses (the name's hint, then the entry) overlap instead of queueing
            // one behind the other. With a million symbols this is most of the cost of a group.
            let hints: SmallVec<[u64; 8]> = collect_small(deps.iter().map(|(_, dep)| dep.hint()));
            let ids: SmallVec<[Option<SymId>; 8]> =
                collect_small(deps.iter().zip(&hints).map(|((d, dep), &hint)| self.symbol_id_hinted(*d, dep, hint)));
            for ((d, dep), id) in deps.iter().zip(ids) {
                match id {
                    Some(sid) => {
                        if let Phase::NeverSearched(u) = self.symbols[sid].phase {
                            // These symbols cannot be Ready before `dep` is emitted: start it.
                            to_start.push(u);
                        }
                        g.deps.push(sid)
                    }
                    None => {
                        return Err(Error::UnknownDependency {
                            dependants: self.qualify_all(dylib, names.iter()),
                            dependency: self.qualify_name(*d, dep),
                        });
                    }
                }
            }
            g.deps.extend_from_slice(implicit);
            if !g.symbols.is_empty() {
                emit_groups.push(g);
            }
        }
        let rest: SmallVec<[SymId; 1]> =
            collect_small(symbols.values().zip(&covered).filter(|(_, c)| !**c).map(|(s, _)| s.id));
        if !rest.is_empty() {
            emit_groups.push(EmitGroup { symbols: rest, deps: Deps::from_slice(implicit) });
        }

        Ok(())
    }

    /// Fails every symbol of a responsibility (and, transitively, their dependants).
    pub fn fail_responsibility(&mut self, dylib: DylibId, symbols: &MrSymbols, error: Error, fx: &mut Effects) {
        let ids: Vec<SymId> = symbols.values().map(|s| s.id).filter(|&id| self.symbols.contains_key(id)).collect();
        if ids.is_empty() {
            return;
        }
        let cause = Arc::new(RootCause { origin: self.qualify_all(dylib, symbols.keys()), error });
        let mut out = std::mem::take(&mut self.scratch);
        let SessionState { graph, symbols: arena, .. } = self;
        graph.fail(arena, &ids, &cause, &mut out);
        self.apply(out, fx);
    }

    /// Hands symbols of a responsibility back to a new unit (they become NeverSearched). If a
    /// query already waits on one of them, the new unit starts materializing at once.
    pub fn replace(
        &mut self,
        dylib: DylibId,
        symbols: &mut MrSymbols,
        unit: Box<dyn MaterializationUnit>,
        interface: Interface,
        priority: Priority,
        fx: &mut Effects,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        let unexpected: Vec<SymbolName> =
            interface.iter().filter(|(n, _)| !symbols.contains_key(n)).map(|(n, _)| n.clone()).collect();
        if !unexpected.is_empty() {
            return Err(Error::UnexpectedSymbolDefinitions {
                responsible: self.qualify_all(dylib, symbols.keys()),
                unexpected,
            });
        }
        for (name, _) in &interface {
            let s = &symbols[name];
            self.live_mr_symbol(dylib, name, s)?;
            if s.resolved {
                return Err(Error::msg(format!(
                    "cannot hand back {}: it is already resolved",
                    self.qualify_name(dylib, name)
                )));
            }
        }
        let uid = self.units.insert(UnitEntry {
            unit,
            discards: Vec::new(),
            dylib,
            symbols: SmallVec::with_capacity(interface.len()),
            started: false,
        });
        let mut requested = false;
        for (name, flags) in interface {
            let s = symbols.remove(&name).expect("checked");
            let e = &mut self.symbols[s.id];
            e.phase = Phase::NeverSearched(uid);
            e.flags = flags;
            requested |= e.is_needed();
            self.units[uid].symbols.push(s.id);
        }
        if events::units_enabled() {
            let unit = &self.units[uid];
            unit_event!(events::ADDED, unit.unit.name(), dylib.index, symbols = unit.symbols.len());
            if events::symbols_enabled() {
                for &sid in &unit.symbols {
                    symbol_event!(events::ADDED, dylib.index, self.symbols[sid].name.as_str(), unit = unit.unit.name());
                }
            }
        }
        if requested {
            self.start_materialization(uid, priority, fx);
        }
        Ok(())
    }

    /// Adds new symbols, materializing from the start, to a responsibility.
    pub fn define_materializing(
        &mut self,
        dylib: DylibId,
        symbols: &mut MrSymbols,
        new: Vec<(SymbolName, SymbolFlags)>,
    ) -> Result<()> {
        if self.ended {
            return Err(Error::SessionEnded);
        }
        let tracker = match symbols.values().find_map(|s| self.symbols.get(s.id)) {
            Some(e) => e.tracker,
            None => self.dylib(dylib).default_tracker,
        };
        self.tracker_alive(tracker, dylib)?;
        if let Some(name) = repeated_in(&new) {
            return Err(Error::msg(format!(
                "'{name}' appears twice in one definition for dylib '{}'",
                self.dylib(dylib).name
            )));
        }
        if let Some((name, _)) = new.iter().find(|(n, _)| self.defines(dylib, n)) {
            let definers = self.symbol_id(dylib, name).and_then(|sid| self.definers(None, &self.symbols[sid]));
            let dylib = self.dylib(dylib).name.clone();
            return Err(Error::DuplicateDefinition { symbol: name.clone(), dylib, definers });
        }
        for (name, flags) in new {
            let id = self.insert_symbol(dylib, tracker, name.clone(), flags, Phase::Materializing);
            symbols.insert(name, MrSymbol { id, flags, resolved: false });
        }
        Ok(())
    }

    /// The tracker of a responsibility's symbols, if it is still alive.
    pub fn mr_tracker(&self, dylib: DylibId, symbols: &MrSymbols) -> Result<TrackerId> {
        let tracker = symbols.values().find_map(|s| self.symbols.get(s.id)).map(|e| e.tracker);
        match tracker {
            Some(t) if self.trackers.contains_key(t) => Ok(t),
            _ => Err(Error::ResourceTrackerDefunct { symbols: self.qualify_all(dylib, symbols.keys()) }),
        }
    }

    // ---- resource trackers -------------------------------------------------------------

    pub fn create_tracker(&mut self, dylib: DylibId) -> TrackerId {
        self.trackers.insert(TrackerState { dylib, symbols: Vec::new() })
    }

    /// Removes every symbol defined through `tracker`: waiting queries and dependants fail,
    /// units that can no longer be materialized are dropped (by the caller, outside the lock).
    pub fn remove_tracker(&mut self, tracker: TrackerId, fx: &mut Effects) -> Result<()> {
        let Some(state) = self.trackers.remove(tracker) else {
            return Err(Error::ResourceTrackerDefunct { symbols: Vec::new() });
        };
        let dylib = state.dylib;
        if self.dylib(dylib).default_tracker == tracker {
            let fresh = self.create_tracker(dylib);
            self.dylib_mut(dylib).default_tracker = fresh;
        }
        let mut ids: Vec<SymId> =
            state.symbols.into_iter().filter(|&s| self.symbols.get(s).is_some_and(|e| e.tracker == tracker)).collect();
        ids.sort_unstable();
        ids.dedup();
        let qualified: Vec<QualifiedSymbol> = ids.iter().filter_map(|&s| self.qualify(s)).collect();
        for &sid in &ids {
            // Units lose these symbols; a unit left with none is dropped.
            self.take_from_unit(sid, fx);
        }
        if !ids.is_empty() {
            let cause = Arc::new(RootCause {
                origin: qualified.clone(),
                error: Error::msg("the resource tracker that defined it was removed"),
            });
            let mut out = std::mem::take(&mut self.scratch);
            let SessionState { graph, symbols: arena, .. } = self;
            graph.fail(arena, &ids, &cause, &mut out);
            self.apply(out, fx);
            // Queries waiting on symbols that were already Ready or Failed (so not failed now).
            for (&sid, q) in ids.iter().zip(&qualified) {
                let waiters = std::mem::take(&mut self.symbols[sid].waiters);
                for w in waiters {
                    if let Some(query) = self.queries.remove(w.query) {
                        fx.complete(query.completion, Err(Error::SymbolRemoved(q.clone())));
                    }
                }
            }
        }
        for sid in ids {
            self.remove_symbol(sid).expect("live");
        }
        fx.lists().removed_keys.push(tracker);
        Ok(())
    }

    pub fn transfer_tracker(&mut self, src: TrackerId, dst: TrackerId) -> Result<()> {
        if src == dst {
            return Ok(());
        }
        let (Some(s), Some(d)) = (self.trackers.get(src), self.trackers.get(dst)) else {
            return Err(Error::ResourceTrackerDefunct { symbols: Vec::new() });
        };
        if s.dylib != d.dylib {
            return Err(Error::msg("cannot transfer resources between trackers of different dylibs"));
        }
        let moved = std::mem::take(&mut self.trackers[src].symbols);
        for &sid in &moved {
            if let Some(e) = self.symbols.get_mut(sid) {
                if e.tracker == src {
                    e.tracker = dst;
                }
            }
        }
        self.trackers[dst].symbols.extend(moved);
        Ok(())
    }

    // ---- the end ------------------------------------------------------------------------

    /// Ends the session: every waiting query fails, every unit and generator is released.
    pub fn end(&mut self, fx: &mut Effects) {
        if self.ended {
            return;
        }
        self.ended = true;
        for (_, q) in self.queries.drain() {
            fx.complete(q.completion, Err(Error::SessionEnded));
        }
        for (_, u) in self.units.drain() {
            fx.lists().garbage.push(Box::new(u.unit));
        }
        for dl in &mut self.dylibs {
            for job in dl.generator_queue.drain(..) {
                fx.complete(job.completion, Err(Error::SessionEnded));
            }
            fx.lists().garbage.push(Box::new(std::mem::take(&mut dl.generators)));
            dl.overflow.clear();
        }
        fx.lists().removed_keys.extend(self.trackers.keys());
        self.trackers.clear();
        self.symbols.clear();
    }

    /// Live objects, for tests and diagnostics.
    pub fn census(&self) -> Census {
        Census {
            symbols: self.symbols.len(),
            units: self.units.len(),
            queries: self.queries.len(),
            waiting_groups: self.graph.waiting_groups(),
        }
    }
}

/// Counts of what the session holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Census {
    pub symbols: usize,
    pub units: usize,
    pub queries: usize,
    pub waiting_groups: usize,
}

/// A name that appears twice in `interface`, if any.
fn repeated_name(interface: &Interface) -> Option<&SymbolName> {
    repeated_in(interface.as_slice())
}

/// A name that appears twice in `entries`, if any.
fn repeated_in<T>(entries: &[(SymbolName, T)]) -> Option<&SymbolName> {
    if entries.len() <= 16 {
        return entries
            .iter()
            .enumerate()
            .find(|(i, (n, _))| entries[..*i].iter().any(|(m, _)| m == n))
            .map(|(_, (n, _))| n);
    }
    let mut seen = FxHashSet::default();
    entries.iter().map(|(n, _)| n).find(|n| !seen.insert(*n))
}

fn result_of(mut slots: Vec<FoundSymbol>, hidden: &[u32]) -> LookupResult {
    if !hidden.is_empty() {
        let mut i = 0u32;
        slots.retain(|_| {
            let keep = hidden.binary_search(&i).is_err();
            i += 1;
            keep
        });
    }
    LookupResult(slots)
}

pub(crate) fn tracker_key(t: TrackerId) -> u64 {
    t.data().as_ffi()
}
