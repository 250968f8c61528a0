//! The units of a module added lazily: the module's own unit in the implementation dylib
//! (every body and variable, until something is looked up), the partitions it hands back,
//! and where each partition's object comes from (the cache, or the module at rest).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use jit_core::{
    DylibId, Error, ExecutionSession, ExecutorAddr, FxHashMap, FxHashSet, Interface, JitDylib, MatchFlags,
    MaterializationResponsibility, MaterializationUnit, Priority, RequiredState, ResourceTracker, Result, SearchOrder,
    SymbolDef, SymbolFlags, SymbolLookupFlags, SymbolLookupSet, SymbolName, Task, TaskKind,
};
use parking_lot::Mutex;

use super::super::compile::{CompileOptions, settings_id};
use super::super::layer::{IrShared, IrTransform};
use super::super::module::IrSource;
use super::super::unit::IrInput;
use super::super::wire::{Reader, put_strings};
use super::plan::PartitionPolicy;
use super::rest::{Build, Layout, Preparation, RestingModule, TIER2_SUFFIX, body_name};
use crate::lazy::{LazyReexports, LazyStub};
use crate::{CacheKey, CacheKeyBuilder};

/// What the layer's units share.
pub(crate) struct CodShared {
    pub ir: Arc<IrShared>,
    pub transforms: Arc<[Arc<dyn IrTransform>]>,
    pub stubs: LazyReexports,
    pub policy: Arc<dyn PartitionPolicy>,
    pub stats: Counters,
    pub tier: Option<TierUp>,
    /// Hot partitions waiting for their second tier, compiled one at a time so that at most
    /// one worker is busy with work nobody waits for.
    pub tier_queue: Mutex<TierQueue>,
    /// Each body's direct callees (bodies), by implementation dylib, for speculation; filed
    /// as modules are read and split, once `want_calls` is set (see [`LazyModule::file_calls`]).
    pub calls: parking_lot::RwLock<CallGraph>,
    /// The module each body lives in, filed with the module's layout once `want_calls` is set.
    pub homes: parking_lot::RwLock<FxHashMap<(DylibId, SymbolName), Weak<LazyModule>>>,
    pub want_calls: std::sync::atomic::AtomicBool,
    /// Bodies, by (implementation dylib, body) name, whose partitions skip the first tier: a
    /// profile found them hot.
    pub start_hot: parking_lot::RwLock<FxHashSet<(String, String)>>,
    /// Bodies whose partitions reached the second tier, by (implementation dylib, body) name.
    pub tiered_bodies: Mutex<Vec<(String, String)>>,
    /// Hears each module split (see `CompileOnDemandLayer::set_split_listener`).
    pub split_listener: parking_lot::RwLock<Option<Box<NamesListener>>>,
    /// Hears each module's call graph filed (see `CompileOnDemandLayer::set_call_graph_listener`).
    pub calls_listener: parking_lot::RwLock<Option<Box<NamesListener>>>,
}

/// Told an implementation dylib and names of it: those a module defines there once it is
/// split, or the bodies whose call graph was filed.
pub(crate) type NamesListener = dyn Fn(&JitDylib, &[SymbolName]) + Send + Sync;

/// Direct callees (bodies) by (implementation dylib, body).
pub(crate) type CallGraph = FxHashMap<(DylibId, SymbolName), Arc<[SymbolName]>>;

#[derive(Default)]
pub(crate) struct TierQueue {
    pub(crate) waiting: std::collections::VecDeque<(Arc<LazyModule>, usize)>,
    running: bool,
}

impl CodShared {
    /// Queues a task that compiles the next hot partition, then queues itself again (so that
    /// demanded work queued meanwhile goes first); the last one clears `running`. Called by
    /// whoever set `running`.
    fn run_tier_queue(self: &Arc<Self>, session: &ExecutionSession) {
        let shared = self.clone();
        let again = session.clone();
        session.dispatch(Task::new(TaskKind::Materialization, Priority::Speculative, move || {
            let next = {
                let mut q = shared.tier_queue.lock();
                let next = q.waiting.pop_front();
                q.running = next.is_some();
                next
            };
            let Some((module, part)) = next else { return };
            module.tier_up_or_log(part);
            drop(module);
            shared.run_tier_queue(&again);
        }));
    }
}

/// Tiered compilation: partitions are first compiled quickly (at `first_opt_level`, with a
/// call counter), and a partition whose functions are called `calls` times is compiled again
/// in the background at the layer's own level, its stubs then redirected to the new code.
///
/// Partition 0 (a module's variables, and functions pinned to them) and whole-module
/// partitions are compiled once, at the layer's level: the variables must stay where they
/// are. Second-tier objects are cached (and a warm cache links them at once); first-tier ones
/// are not (they name this process's counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierUp {
    /// The code generator's level for the first tier (0: FastISel and the fast register
    /// allocator, several times quicker than -O2).
    pub first_opt_level: u8,
    /// Calls (into a partition's functions, counted together) that make it hot.
    pub calls: u32,
}

impl Default for TierUp {
    fn default() -> Self {
        TierUp { first_opt_level: 0, calls: 10_000 }
    }
}

/// What the layer has done, counted as it happens.
#[derive(Default)]
pub(crate) struct Counters {
    tiered_up: AtomicU64,
    started_hot: AtomicU64,
    modules_added: AtomicU64,
    modules_prepared: AtomicU64,
    partitions_compiled: AtomicU64,
    partitions_from_cache: AtomicU64,
}

/// Why a copy at rest read after the layout was fixed is refused: a second copy, or the first
/// copy of a module whose layout came from the cache, split otherwise.
const SPLITS_DIFFERENTLY: &str = "the module splits differently the second time";
const CORRUPT_CACHE: &str = "the cached layout of this module does not match the module (corrupt cache?)";

/// The largest partition (in IR instructions) a profile's hot mark compiles at the full level
/// at once. SQLite's interpreter loop (about 30,000 instructions) takes most of a second at
/// -O2, which its first caller would wait for.
const HOT_AT_ONCE_INSTRUCTIONS: usize = 5_000;

/// What a [`CompileOnDemandLayer`](super::CompileOnDemandLayer) has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodStats {
    /// Modules added lazily (split on first use).
    pub modules_added: u64,
    /// Modules read, split and kept at rest for their partitions to compile.
    pub modules_prepared: u64,
    /// Partitions compiled by LLVM.
    pub partitions_compiled: u64,
    /// Partitions whose object came from the cache.
    pub partitions_from_cache: u64,
    /// Hot partitions compiled again at the full level and linked (see [`TierUp`]).
    pub tiered_up: u64,
    /// Partitions a profile found hot, compiled at the full level at once (or, if large, at
    /// the first tier asking for the second on their first call).
    pub started_hot: u64,
}

impl std::fmt::Display for CodStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} modules added lazily, {} prepared, {} partitions compiled, {} from the cache, {} tiered up, \
             {} started hot",
            self.modules_added,
            self.modules_prepared,
            self.partitions_compiled,
            self.partitions_from_cache,
            self.tiered_up,
            self.started_hot
        )
    }
}

impl Counters {
    pub fn added(&self) {
        self.modules_added.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CodStats {
        CodStats {
            modules_added: self.modules_added.load(Ordering::Relaxed),
            modules_prepared: self.modules_prepared.load(Ordering::Relaxed),
            partitions_compiled: self.partitions_compiled.load(Ordering::Relaxed),
            partitions_from_cache: self.partitions_from_cache.load(Ordering::Relaxed),
            tiered_up: self.tiered_up.load(Ordering::Relaxed),
            started_hot: self.started_hot.load(Ordering::Relaxed),
        }
    }
}

/// One module added lazily, shared by its units.
pub(crate) struct LazyModule {
    pub shared: Arc<CodShared>,
    pub name: String,
    pub input: IrInput,
    /// The input's bitcode without its debug info, once a first read found some: later copies
    /// read it instead (CPython built with `-g`: 0.8 s to read, against 2.5 s).
    pub stripped: OnceLock<Arc<[u8]>>,
    /// Names the module's locals are promoted with (see `rest::promoted_name`).
    pub tag: String,
    /// One partition whatever the policy (the module has data aliases).
    pub whole: bool,
    /// The initializer symbol and the link order reserved for partition 0, if the module has
    /// static constructors or destructors.
    pub init: Option<(SymbolName, u64)>,
    /// Object names of the module's definitions the dylibs kept.
    pub keep: FxHashSet<String>,
    /// The dylib the module was added to (its stubs), its implementation dylib (bodies,
    /// variables, stubs of promoted locals), and the tracker of its implementation.
    pub owner: JitDylib,
    pub imp: JitDylib,
    pub imp_tracker: ResourceTracker,
    pub state: Mutex<ModuleState>,
    /// The module at rest that partitions are compiled from, read with the layout (or later,
    /// if the layout came from the cache); it goes once every partition is compiled or found.
    pub first: Mutex<FirstCopy>,
    /// A second copy at rest, for second-tier compiles (which then never wait for first-tier
    /// ones) and for first-tier compiles while the first copy is busy. Made on the first
    /// tier-up, or while the first copy is read if a profile found the module hot or its call
    /// graph is wanted (see [`LazyModule::layout`]).
    pub second: Mutex<SecondCopy>,
    /// The call graph a copy at rest found, until it is filed.
    pub found_calls: Mutex<FoundCalls>,
}

/// A module's call graph, found by a copy at rest, held until the module is split: a guess
/// made from it may name a promoted local, which exists only from then on (see
/// [`LazyModule::file_calls`]).
#[derive(Default)]
pub(crate) struct FoundCalls {
    split: bool,
    /// Each body and its direct callees, as `RestingModule::calls`.
    calls: Vec<(String, Vec<String>)>,
}

#[derive(Default)]
pub(crate) enum FirstCopy {
    #[default]
    Unread,
    Resting(Box<RestingModule>),
    /// Every partition was compiled from it or found elsewhere.
    Spent,
}

#[derive(Default)]
pub(crate) struct SecondCopy {
    resting: Option<RestingModule>,
    /// Partitions tiered up (or being tiered up).
    started: FxHashSet<usize>,
}

/// A copy of a module at rest, held (see [`LazyModule::copy_holding`]).
enum HeldCopy<'a> {
    First(parking_lot::MutexGuard<'a, FirstCopy>),
    Second(parking_lot::MutexGuard<'a, SecondCopy>),
}

impl HeldCopy<'_> {
    fn resting(&mut self) -> &mut RestingModule {
        match self {
            HeldCopy::First(first) => match &mut **first {
                FirstCopy::Resting(resting) => resting,
                _ => unreachable!("held only while resting"),
            },
            HeldCopy::Second(second) => second.resting.as_mut().expect("held only while resting"),
        }
    }

    /// Lets the copy go, dropping the first copy once nothing is left to compile from it.
    fn release(self) {
        if let HeldCopy::First(mut first) = self {
            if matches!(&*first, FirstCopy::Resting(r) if !r.holds_any()) {
                *first = FirstCopy::Spent;
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct ModuleState {
    /// Object names (of the module, before bodies were renamed) whose definitions lost.
    discarded: FxHashSet<String>,
    /// Set when the module is first looked up.
    input_key: Option<Option<CacheKey>>,
    layout: Option<Arc<Layout>>,
}

impl LazyModule {
    fn cache(&self) -> Option<&crate::ObjectCache> {
        self.shared.ir.cache.as_ref()
    }

    /// The module's layout: from the cache's record, or by preparing the module (which is kept,
    /// at rest, for the partitions to compile).
    ///
    /// The first read is what the program's first call into the module waits for. Finding the
    /// call graph (when wanted, see `CodShared::want_calls`) costs it 70 to 100 ms on SQLite,
    /// so when the module compiles in two tiers and the pool has a worker to spare, the second
    /// copy, read up front on another worker alongside the first, finds it instead. A first
    /// call made before then gets its guesses once it is filed (see
    /// [`Speculator::call_graph_filed`](crate::Speculator::call_graph_filed)). A module a
    /// profile found hot has its second copy read up front too, so that both copies compile
    /// partitions from the start. With one worker neither happens and the first copy finds the
    /// call graph: a second read would run on that worker after the first, so it would take
    /// nothing off the first call's path, and the next demanded compile would wait behind it
    /// (a whole read: half a second on SQLite).
    fn layout(self: &Arc<Self>) -> Result<Arc<Layout>> {
        let mut st = self.state.lock();
        if let Some(layout) = &st.layout {
            return Ok(layout.clone());
        }
        let key = self.input_key(&mut st);
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            if let Some(layout) = cache.get(key).and_then(|r| decode_layout(&r)) {
                self.file_homes(&layout);
                let layout = Arc::new(layout);
                st.layout = Some(layout.clone());
                return Ok(layout);
            }
        }
        let want_calls = self.shared.want_calls.load(Ordering::Relaxed);
        // A second copy read alongside the first needs a worker to spare and a second tier.
        let alongside = self.tiering().is_some() && self.imp.session().dispatcher().concurrency() > 1;
        let calls_from_second = want_calls && alongside;
        if alongside && (want_calls || self.profile_found_hot()) {
            self.read_second_copy(st.discarded.clone(), calls_from_second);
        }
        let (mut resting, layout) = self.prepare(&st.discarded, true, want_calls && !calls_from_second)?;
        self.keep_calls(&mut resting);
        self.file_homes(&layout);
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            self.store(cache, key, &encode_layout(&layout));
        }
        let layout = Arc::new(layout);
        st.layout = Some(layout.clone());
        *self.first.lock() = FirstCopy::Resting(Box::new(resting));
        Ok(layout)
    }

    /// Whether a profile found a body of this module hot (see `CodShared::start_hot`): its
    /// compiles will keep a copy at rest busy, and a second-tier compile will want another.
    fn profile_found_hot(&self) -> bool {
        let hot = self.shared.start_hot.read();
        if hot.is_empty() {
            return false;
        }
        let promoted = format!(".orcjit.{}.", self.tag);
        let imp = self.imp.name();
        hot.iter().any(|(dylib, body)| {
            dylib == imp
                && (body.contains(&promoted) || body.strip_suffix(".body").is_some_and(|f| self.keep.contains(f)))
        })
    }

    /// Reads the second copy at rest now, on another worker, while the first is read (finding
    /// the call graph if `calls`, filed once this read and the split are both done): both
    /// copies then compile partitions from the start, on two workers.
    fn read_second_copy(self: &Arc<Self>, discarded: FxHashSet<String>, calls: bool) {
        let module = self.clone();
        let task = move || {
            let read = module.prepare(&discarded, false, calls).and_then(|(resting, again)| {
                // Waits for the first copy's read, which fixes the layout.
                let layout = module.state.lock().layout.clone();
                match layout {
                    Some(layout) if *layout == again => Ok(resting),
                    _ => Err(Error::msg(format!("{}: {SPLITS_DIFFERENTLY}", module.name))),
                }
            });
            match read {
                Ok(mut resting) => {
                    module.keep_calls(&mut resting);
                    let mut second = module.second.lock();
                    if second.resting.is_none() {
                        second.resting = Some(resting);
                    }
                    drop(second);
                    module.file_calls();
                }
                Err(e) => tracing::warn!(target: "orcjit", module = %module.name, "no second copy at rest: {e}"),
            }
        };
        self.imp.session().dispatch(Task::new(TaskKind::Materialization, Priority::Demanded, task));
    }

    /// A copy at rest that may still compile partition `part`, locked. For a first-tier (or
    /// only) compile, a free copy, else the first (read now if the layout came from the
    /// cache); for a `second_tier` compile, the second copy (made now if there is none), else
    /// the first (whose partition the second copy took the first tier of).
    fn copy_holding(
        self: &Arc<Self>,
        part: usize,
        second_tier: bool,
        discarded: &FxHashSet<String>,
        layout: &Layout,
    ) -> Result<HeldCopy<'_>> {
        let first_holds = |first: &FirstCopy| matches!(first, FirstCopy::Resting(r) if r.holds(part));
        if !second_tier {
            if let Some(first) = self.first.try_lock().filter(|f| first_holds(f)) {
                return Ok(HeldCopy::First(first));
            }
            if let Some(second) = self.second.try_lock().filter(|s| s.resting.as_ref().is_some_and(|r| r.holds(part))) {
                return Ok(HeldCopy::Second(second));
            }
            let mut first = self.first.lock();
            if matches!(*first, FirstCopy::Unread) {
                // The layout came from the cache, so no copy was read up front: this one finds
                // the call graph, filed once the copy is let go (see `part_object`).
                let want_calls = self.shared.want_calls.load(Ordering::Relaxed);
                let mut resting = self.read_copy(discarded, true, want_calls, layout, CORRUPT_CACHE)?;
                self.keep_calls(&mut resting);
                *first = FirstCopy::Resting(Box::new(resting));
            }
            if first_holds(&first) {
                return Ok(HeldCopy::First(first));
            }
        }
        let mut second = self.second.lock();
        if second.resting.is_none() {
            second.resting = Some(self.read_copy(discarded, false, false, layout, SPLITS_DIFFERENTLY)?);
        }
        if second.resting.as_ref().is_some_and(|r| r.holds(part)) {
            return Ok(HeldCopy::Second(second));
        }
        drop(second);
        let first = self.first.lock();
        if first_holds(&first) {
            return Ok(HeldCopy::First(first));
        }
        Err(Error::msg(format!("{}#{part}: compiled from every copy of the module at rest already", self.name)))
    }

    /// Reads a copy of the module at rest (see [`prepare`](Self::prepare)) that must split
    /// as `layout` says; otherwise fails with `mismatch`.
    fn read_copy(
        &self,
        discarded: &FxHashSet<String>,
        verify: bool,
        calls: bool,
        layout: &Layout,
        mismatch: &str,
    ) -> Result<RestingModule> {
        let (resting, again) = self.prepare(discarded, verify, calls)?;
        if again != *layout {
            return Err(Error::msg(format!("{}: {mismatch}", self.name)));
        }
        Ok(resting)
    }

    /// Keeps the call graph `resting` found (if it looked for one) until it can be filed.
    fn keep_calls(&self, resting: &mut RestingModule) {
        if !resting.calls.is_empty() {
            self.found_calls.lock().calls.append(&mut resting.calls);
        }
    }

    /// Files the module as the home of each body in `layout` (see [`CodShared::homes`]), if
    /// call graphs are wanted: as soon as the layout is known, so that a guess whose compile
    /// would wait for this module is seen to (see `CompileOnDemandLayer::compiling`) before
    /// its call graph is filed.
    fn file_homes(self: &Arc<Self>, layout: &Layout) {
        if !self.shared.want_calls.load(Ordering::Relaxed) {
            return;
        }
        let session = self.imp.session();
        let bodies: Vec<SymbolName> =
            layout.parts.iter().flatten().filter(|n| n.ends_with(".body")).map(|n| session.intern(n)).collect();
        let mut homes = self.shared.homes.write();
        for body in bodies {
            homes.insert((self.imp.id(), body), Arc::downgrade(self));
        }
    }

    /// Marks the module split, and files its call graph if it was found already.
    fn split_done(&self) {
        self.found_calls.lock().split = true;
        self.file_calls();
    }

    /// Files the call graph a copy found (see [`CodShared::calls`]) once the module is split,
    /// and tells the call-graph listener, if any, which bodies it holds. Called wherever the
    /// graph may have become fileable (the split, the second copy's read, a copy let go),
    /// outside the module's locks.
    fn file_calls(&self) {
        let found = {
            let mut found = self.found_calls.lock();
            if !found.split || found.calls.is_empty() {
                return;
            }
            std::mem::take(&mut found.calls)
        };
        let session = self.imp.session();
        let found: Vec<(SymbolName, Arc<[SymbolName]>)> = found
            .into_iter()
            .map(|(body, callees)| (session.intern(&body), callees.iter().map(|c| session.intern(c)).collect()))
            .collect();
        let bodies: Vec<SymbolName> = found.iter().map(|(body, _)| body.clone()).collect();
        self.shared.calls.write().extend(found.into_iter().map(|(body, callees)| ((self.imp.id(), body), callees)));
        if let Some(listener) = self.shared.calls_listener.read().as_ref() {
            listener(&self.imp, &bodies);
        }
    }

    /// Tells the split listener, if any, what the module now defines in its implementation
    /// dylib: every body and variable of `layout`, promoted locals among them.
    fn announce_split(&self, layout: &Layout) {
        let listener = self.shared.split_listener.read();
        if let Some(listener) = listener.as_ref() {
            let session = self.imp.session();
            let names: Vec<SymbolName> = layout.parts.iter().flatten().map(|n| session.intern(n)).collect();
            listener(&self.imp, &names);
        }
    }

    /// Whether a compile would wait now: the module is being read (its state is held), or
    /// the first copy at rest is compiling and no second copy is free.
    pub(crate) fn busy(&self) -> bool {
        self.state.is_locked()
            || (self.first.is_locked() && self.second.try_lock().is_none_or(|second| second.resting.is_none()))
    }

    /// Reads and prepares the module (checking it with LLVM's verifier if `verify`, finding
    /// its call graph if `calls`).
    fn prepare(&self, discarded: &FxHashSet<String>, verify: bool, calls: bool) -> Result<(RestingModule, Layout)> {
        let _span = tracing::debug_span!(target: "orcjit", "prepare", module = %self.name).entered();
        // Reading a module is LLVM's work too (see `at_exit::compile_permit`).
        let _permit = crate::at_exit::compile_permit()
            .ok_or_else(|| Error::msg(format!("{}: not read: the program has exited", self.name)))?;
        self.shared.stats.modules_prepared.fetch_add(1, Ordering::Relaxed);
        let stripped = self.stripped.get();
        let source = stripped.map_or_else(|| self.input.source(), |bytes| IrSource::Bitcode(bytes.clone()));
        let (mut resting, layout) = RestingModule::prepare(&Preparation {
            name: &self.name,
            source: &source,
            keep: &self.keep,
            discard: discarded,
            transforms: &self.shared.transforms,
            options: &self.shared.ir.options,
            tag: &self.tag,
            policy: &*self.shared.policy,
            whole: self.whole,
            verify,
            calls,
            // Only a module compiled in two tiers may be read again.
            keep_stripped: stripped.is_none() && self.tiering().is_some(),
        })?;
        if let Some(bytes) = resting.stripped.take() {
            let _ = self.stripped.set(bytes);
        }
        Ok((resting, layout))
    }

    /// The cache key of the module as added and split: fixed the first time it is needed.
    fn input_key(&self, st: &mut ModuleState) -> Option<CacheKey> {
        if let Some(key) = &st.input_key {
            return *key;
        }
        let key = self.cache().map(|_| {
            let sorted = |set: &FxHashSet<String>| {
                let mut names: Vec<&str> = set.iter().map(String::as_str).collect();
                names.sort_unstable();
                names.join("\n")
            };
            let (kind, bytes) = self.input.bytes();
            let mut key = CacheKeyBuilder::new()
                .part("lazy module", b"v1")
                .part("settings", settings_id(&self.shared.ir.options).as_bytes())
                .part("policy", if self.whole { "whole-module" } else { self.shared.policy.name() }.as_bytes());
            for t in self.shared.transforms.iter() {
                key = key.part("transform", t.name().as_bytes());
            }
            key.part("keep", sorted(&self.keep).as_bytes())
                .part("discard", sorted(&st.discarded).as_bytes())
                .part(kind, bytes)
                .finish()
        });
        st.input_key = Some(key);
        key
    }

    fn store(&self, cache: &crate::ObjectCache, key: &CacheKey, bytes: &[u8]) {
        // A cache that cannot store is a slower JIT, not a broken one.
        if let Err(e) = cache.put(key, bytes) {
            tracing::warn!(target: "orcjit", module = %self.name, "not cached: {e}");
        }
    }

    /// Links partition `part` for `mr`: its cached object, or one compiled from the module at
    /// rest (prepared now if the layout came from the cache).
    fn materialize_part(self: &Arc<Self>, part: usize, mr: MaterializationResponsibility) {
        let name = format!("{}#{part}", self.name);
        let _span = tracing::debug_span!(target: "orcjit", "compile", module = %name).entered();
        let object = self.part_object(part).and_then(|object| {
            if object.counted {
                // The cookie its code passes to the tier-up hook: this process's name for it.
                let cookie = register_tier_target(self, part);
                let symbol = self.imp.session().intern(&self.cookie_symbol(part));
                let def = SymbolDef::new(ExecutorAddr(cookie), SymbolFlags::empty());
                self.imp.define_absolute_with_tracker([(symbol, def)], &self.imp_tracker)?;
            }
            Ok(object)
        });
        match object {
            Ok(PartObject { bytes, renames, .. }) => {
                let objects = &self.shared.ir.objects;
                match (part, &self.init) {
                    (0, Some((_, order))) => objects.emit_in_order(mr, &name, &bytes, renames, *order),
                    _ => objects.emit_renamed(mr, &name, &bytes, renames),
                }
            }
            Err(e) => mr.fail(e),
        }
    }

    /// The symbol whose address first-tier code of partition `part` passes to the tier-up hook.
    fn cookie_symbol(&self, part: usize) -> String {
        format!("__orcjit.tier.{}.{part}", self.tag)
    }

    /// Whether the module is compiled in two tiers (partition 0 only if its module at rest
    /// says it may be).
    fn tiering(&self) -> Option<TierUp> {
        self.shared.tier.filter(|_| !self.whole)
    }

    /// The names partition `part`'s bodies have in its second-tier object, and their own.
    fn tier2_renames(&self, layout: &Layout, part: usize) -> Vec<(String, String)> {
        layout.parts[part].iter().map(|n| (format!("{n}{TIER2_SUFFIX}"), n.clone())).collect()
    }

    /// Partition `part`'s object: from the cache (a hot partition's second tier, a first
    /// tier, or the one build of a partition compiled once) or compiled now.
    fn part_object(self: &Arc<Self>, part: usize) -> Result<PartObject> {
        let mut st = self.state.lock();
        let input = self.input_key(&mut st);
        let tiering = self.tiering();
        if let (Some(cache), Some(input)) = (self.cache(), &input) {
            let mut kinds = Vec::new();
            if let (Some(_), true) = (tiering, part != 0) {
                // Partition 0's second tier defines no variables: it cannot stand in for the first.
                kinds.push(Build::Renamed);
            }
            if let Some(tier) = tiering {
                kinds.push(Build::Counted { threshold: tier.calls, cookie: "" });
            }
            kinds.push(Build::Plain);
            for build in kinds {
                let Some(bytes) = cache.get(&part_key(input, part, build, tiering)) else { continue };
                self.shared.stats.partitions_from_cache.fetch_add(1, Ordering::Relaxed);
                self.found_elsewhere(part);
                let renames = match (build, &st.layout) {
                    (Build::Renamed, Some(layout)) => self.tier2_renames(layout, part),
                    _ => Vec::new(),
                };
                if matches!(build, Build::Renamed) {
                    self.second.lock().started.insert(part);
                }
                return Ok(PartObject { bytes, renames, counted: matches!(build, Build::Counted { .. }) });
            }
        }
        // A partition a profile found hot goes to the full level first (see `compile_part`).
        let hot = tiering.is_some() && self.starts_hot(st.layout.as_deref(), part);
        let cookie = self.cookie_symbol(part);
        let layout = st.layout.clone().ok_or_else(|| Error::msg(format!("{}#{part}: no layout", self.name)))?;
        let discarded = st.discarded.clone();
        drop(st);
        let mut copy = self.copy_holding(part, false, &discarded, &layout)?;
        let (build, bytes) = self.compile_part(copy.resting(), part, hot, &cookie);
        copy.release();
        // A first copy read just now (the layout came from the cache) found the call graph.
        self.file_calls();
        self.shared.stats.partitions_compiled.fetch_add(1, Ordering::Relaxed);
        let bytes = bytes?;
        if let (Some(cache), Some(input)) = (self.cache(), &input) {
            self.store(cache, &part_key(input, part, build, tiering), &bytes);
        }
        Ok(PartObject { bytes, renames: Vec::new(), counted: matches!(build, Build::Counted { .. }) })
    }

    /// Compiles partition `part` from `resting`: in two tiers if the module is and the
    /// partition may be (see `HOT_AT_ONCE_INSTRUCTIONS` for one a profile found `hot`).
    fn compile_part<'c>(
        &self,
        resting: &mut RestingModule,
        part: usize,
        hot: bool,
        cookie: &'c str,
    ) -> (Build<'c>, Result<Vec<u8>>) {
        // A hot partition skips the first tier, unless it is so large that the full level
        // would keep its first caller waiting long (its first call then asks for the second).
        let at_once = hot && resting.part_size(part) <= HOT_AT_ONCE_INSTRUCTIONS;
        let (build, options) = match self.tiering().filter(|_| resting.tierable(part) && !at_once) {
            Some(tier) => (
                Build::Counted { threshold: if hot { 1 } else { tier.calls.max(1) }, cookie },
                CompileOptions { opt_level: tier.first_opt_level, ..self.shared.ir.options.clone() },
            ),
            None => (Build::Plain, self.shared.ir.options.clone()),
        };
        (build, resting.compile(part, &options, build))
    }

    /// Whether partition `part` holds a body a profile found hot (see
    /// [`CompileOnDemandLayer::start_hot`](super::CompileOnDemandLayer::start_hot)).
    fn starts_hot(&self, layout: Option<&Layout>, part: usize) -> bool {
        let hot = self.shared.start_hot.read();
        if hot.is_empty() {
            return false;
        }
        let Some(bodies) = layout.and_then(|l| l.parts.get(part)) else { return false };
        let mut key = (self.imp.name().to_string(), String::new());
        let started = bodies.iter().any(|b| {
            key.1.clone_from(b);
            hot.contains(&key)
        });
        if started {
            self.shared.stats.started_hot.fetch_add(1, Ordering::Relaxed);
        }
        started
    }

    /// Queues the second-tier compile of partition `part` (once), behind demanded work.
    fn schedule_tier_up(self: &Arc<Self>, part: usize) {
        if !self.second.lock().started.insert(part) {
            return;
        }
        let start = {
            let mut q = self.shared.tier_queue.lock();
            q.waiting.push_back((self.clone(), part));
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            self.shared.run_tier_queue(self.imp.session());
        }
    }

    /// [`tier_up`](Self::tier_up), logging a failure or a panic: the first tier goes on
    /// running (slower, not wrong), and whatever called this (the tier queue) goes on too.
    fn tier_up_or_log(self: &Arc<Self>, part: usize) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tier_up(part))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(target: "orcjit", module = %self.name, part, "not tiered up: {e}"),
            Err(_) => tracing::error!(target: "orcjit", module = %self.name, part, "tier-up panicked"),
        }
    }

    /// Compiles partition `part` at the full level, links it into the implementation dylib
    /// and points the partition's stubs at it.
    fn tier_up(self: &Arc<Self>, part: usize) -> Result<()> {
        // Background compiles stop when the program exits (LLVM's statics go with it).
        let Some(_permit) = crate::at_exit::compile_permit() else { return Ok(()) };
        let name = format!("{}#{part}{TIER2_SUFFIX}", self.name);
        let _span = tracing::debug_span!(target: "orcjit", "tier up", module = %name).entered();
        let (layout, discarded, key) = {
            let mut st = self.state.lock();
            let input = self.input_key(&mut st);
            let layout = st.layout.clone().ok_or_else(|| Error::msg(format!("{name}: no layout")))?;
            (layout, st.discarded.clone(), input.map(|input| part_key(&input, part, Build::Renamed, self.tiering())))
        };
        let cached = match (self.cache(), &key) {
            (Some(cache), Some(key)) => cache.get(key),
            _ => None,
        };
        let object = if let Some(object) = cached {
            self.shared.stats.partitions_from_cache.fetch_add(1, Ordering::Relaxed);
            object
        } else {
            let mut copy = self.copy_holding(part, true, &discarded, &layout)?;
            let object = copy.resting().compile(part, &self.shared.ir.options, Build::Renamed);
            copy.release();
            let object = object?;
            if let (Some(cache), Some(key)) = (self.cache(), &key) {
                self.store(cache, key, &object);
            }
            object
        };
        self.shared.ir.objects.add_with_tracker(&self.imp, &name, object, Some(&self.imp_tracker))?;

        // The stubs to move: each body's function, in the owner dylib or (a promoted local)
        // in the implementation dylib; not those whose definition lost to another module's.
        let session = self.imp.session();
        let promoted: FxHashSet<&str> = layout.promoted_functions.iter().map(String::as_str).collect();
        let mut moves: Vec<(JitDylib, SymbolName, SymbolName)> = Vec::new();
        let mut set = SymbolLookupSet::new();
        for body in &layout.parts[part] {
            let Some(function) = body.strip_suffix(".body") else { continue };
            if discarded.contains(function) {
                continue;
            }
            let dylib = if promoted.contains(function) { self.imp.clone() } else { self.owner.clone() };
            let new = session.intern(&format!("{body}{TIER2_SUFFIX}"));
            set.push(new.clone(), SymbolLookupFlags::Required);
            moves.push((dylib, session.intern(function), new));
        }
        let stubs = self.shared.stubs.clone();
        let shared = self.shared.clone();
        let order = SearchOrder::new().then(&self.imp, MatchFlags::All);
        let bodies: Vec<(String, String)> =
            layout.parts[part].iter().map(|b| (self.imp.name().to_string(), b.clone())).collect();
        session.lookup(&order, set, RequiredState::Ready, move |found| {
            let found = match found {
                Ok(found) => found,
                Err(e) => return tracing::warn!(target: "orcjit", module = %name, "not tiered up: {e}"),
            };
            let mut moved = false;
            for (dylib, stub, new) in moves {
                if let Some(def) = found.get(&new) {
                    match stubs.redirect(&dylib, &stub, def.addr) {
                        Ok(()) => moved = true,
                        Err(e) => tracing::debug!(target: "orcjit", "stub {stub} not redirected: {e}"),
                    }
                }
            }
            if moved {
                shared.stats.tiered_up.fetch_add(1, Ordering::Relaxed);
                shared.tiered_bodies.lock().extend(bodies);
            }
        });
        Ok(())
    }

    /// Gives partition `part` up in the first copy at rest (if free now: otherwise it lingers
    /// until its other partitions are compiled), which goes once every partition is.
    fn found_elsewhere(&self, part: usize) {
        if let Some(mut first) = self.first.try_lock() {
            if let FirstCopy::Resting(resting) = &mut *first {
                resting.release(part);
                HeldCopy::First(first).release();
            }
        }
    }
}

/// A partition's object, and how to link it.
struct PartObject {
    bytes: Vec<u8>,
    /// Symbol renames (a second-tier object standing in for the first).
    renames: Vec<(String, String)>,
    /// First-tier code: its cookie symbol must be defined.
    counted: bool,
}

/// The cache key of partition `part` of the module with input key `input`, built as `build`
/// (under tiering `tier`).
fn part_key(input: &CacheKey, part: usize, build: Build<'_>, tier: Option<TierUp>) -> CacheKey {
    let key =
        CacheKeyBuilder::new().part("lazy partition of", input.as_bytes()).part("index", &(part as u64).to_le_bytes());
    match (build, tier) {
        (Build::Counted { .. }, Some(tier)) => key
            .part("build", b"tier 1")
            .part("level", &[tier.first_opt_level])
            .part("calls", &tier.calls.max(1).to_le_bytes()),
        (Build::Renamed, _) => key.part("build", b"tier 2"),
        _ => key.part("build", b"plain"),
    }
    .finish()
}

/// First-tier code names its partition by an index into this list (its cookie); entries
/// stay (a few bytes each) so that a cookie never names another partition.
static TIER_TARGETS: Mutex<Vec<(std::sync::Weak<LazyModule>, usize)>> = Mutex::new(Vec::new());

/// Registers partition `part` of `module`; returns its cookie (never 0: the cookie is an
/// address, and a linker reads address 0 as an unresolved weak reference).
fn register_tier_target(module: &Arc<LazyModule>, part: usize) -> u64 {
    let mut targets = TIER_TARGETS.lock();
    targets.push((Arc::downgrade(module), part));
    let cookie = targets.len() as u64;
    drop(targets);
    TierRequests::get().make_room(cookie);
    cookie
}

/// Tier-up requests on their way from [`tier_up_hook`] to the queue. The hook may run inside a
/// signal handler (a handler compiled at the first tier counts its calls like any function),
/// where taking a lock or allocating can corrupt or deadlock what the interrupted thread was
/// doing (a parking_lot wait queue was: a worker spun in it for good). So the hook only sets
/// the cookie's bit and writes to an eventfd, both async-signal-safe; a thread of its own
/// (`orcjit-tier-up`) takes the bits and queues the compiles.
///
/// A forked child has none of its parent's threads, and its copy of the eventfd is the
/// parent's: its requests would wake the parent's thread, which finds none of its own bits set,
/// so a child's hot code stayed at the first tier for good (3x slower on a loop in a child
/// that a prefork server or `multiprocessing` would run). The child gets an eventfd and a
/// tier-up thread of its own ([`TierRequests::forked`]), which compiles on that thread: the
/// child's pools have no workers (in a child, whoever waits runs the work).
struct TierRequests {
    /// Bit `c % CHUNK_BITS` of chunk `c / CHUNK_BITS` requests cookie `c`. Chunks are made
    /// when a cookie in them is registered, before any code can ask for it, and never freed.
    chunks: Box<[std::sync::atomic::AtomicPtr<AtomicU64>]>,
    /// The eventfd the hook writes to, or -1 (then the hook queues the compile itself).
    wake: std::sync::atomic::AtomicI32,
}

/// Where the tier-up thread has the requested partitions compiled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Queued for the pool's workers, one at a time (see `CodShared::run_tier_queue`).
    Queue,
    /// On the tier-up thread itself: a forked child's pools have no workers.
    Here,
}

const CHUNK_BITS: u64 = 1 << 16;
const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;
/// Cookies beyond `MAX_CHUNKS * CHUNK_BITS` (about 268 million partitions) tier up through a
/// hook that takes locks, as before.
const MAX_CHUNKS: usize = 4096;

/// Made by the first registration, before any code can call the hook: the hook only reads it
/// (`OnceLock::get` is an atomic load), since making it allocates.
static TIER_REQUESTS: OnceLock<TierRequests> = OnceLock::new();

impl TierRequests {
    fn get() -> &'static TierRequests {
        TIER_REQUESTS.get_or_init(|| {
            // SAFETY: creates a close-on-exec eventfd; no pointers involved.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            let requests = TierRequests {
                chunks: (0..MAX_CHUNKS).map(|_| std::sync::atomic::AtomicPtr::new(std::ptr::null_mut())).collect(),
                wake: std::sync::atomic::AtomicI32::new(wake),
            };
            if wake >= 0 && !Self::spawn_server(Serve::Queue) {
                requests.wake.store(-1, Ordering::SeqCst);
            }
            if requests.wake.load(Ordering::SeqCst) >= 0 {
                // SAFETY: registers a plain extern "C" function with no captured state; it runs
                // after jit-core's own child handler (registered when the first pool was made),
                // which orphans the pools.
                let ret = unsafe {
                    libc::pthread_atfork(Some(Self::before_fork), Some(Self::after_fork_in_parent), Some(Self::forked))
                };
                if ret != 0 {
                    tracing::warn!(target: "orcjit", "pthread_atfork failed ({ret}): forked children will not tier up");
                }
            }
            requests
        })
    }

    /// Starts the tier-up thread; false if it could not (the caller then sets `wake` to -1,
    /// and the hook queues compiles itself).
    fn spawn_server(serve: Serve) -> bool {
        let spawned = std::thread::Builder::new().name("orcjit-tier-up".into()).spawn(move || {
            TierRequests::get().serve(serve);
        });
        if spawned.is_err() {
            tracing::warn!(target: "orcjit", "no tier-up thread: hot functions are tiered up when work is waited for");
        }
        spawned.is_ok()
    }

    /// After a `fork`, in the child (the only thread there): an eventfd and a tier-up thread
    /// of the child's own, compiling on that thread. Requests the parent made before the fork
    /// and had not served yet are served in the child too: the child has the same hot code.
    extern "C" fn forked() {
        Self::after_fork_in_parent();
        let Some(requests) = TIER_REQUESTS.get() else { return };
        // SAFETY: creates a close-on-exec eventfd; no pointers involved.
        let fresh = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let inherited = requests.wake.swap(fresh, Ordering::SeqCst);
        if inherited >= 0 {
            // SAFETY: the child's copy of the parent's eventfd, which only this static held;
            // the parent's stays open in the parent.
            unsafe { libc::close(inherited) };
        }
        if fresh < 0 {
            return;
        }
        if !Self::spawn_server(Serve::Here) {
            requests.wake.store(-1, Ordering::SeqCst);
            // SAFETY: the eventfd made just above, which nothing else uses now.
            unsafe { libc::close(fresh) };
            return;
        }
        // Wake it for the bits set before the fork.
        let one: u64 = 1;
        // SAFETY: writes eight bytes from a local to the eventfd made just above.
        unsafe { libc::write(fresh, (&one as *const u64).cast(), 8) };
    }

    /// Makes the chunk holding `cookie`'s bit (normal context: registration).
    fn make_room(&self, cookie: u64) {
        let Some(slot) = self.chunks.get((cookie / CHUNK_BITS) as usize) else { return };
        if slot.load(Ordering::Acquire).is_null() {
            let chunk: Box<[AtomicU64]> = (0..CHUNK_WORDS).map(|_| AtomicU64::new(0)).collect();
            let ptr = Box::into_raw(chunk) as *mut AtomicU64;
            if slot.compare_exchange(std::ptr::null_mut(), ptr, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // SAFETY: made just above from a boxed slice of CHUNK_WORDS words, not shared.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, CHUNK_WORDS)) });
            }
        }
    }

    /// Records a request for `cookie` and wakes the tier-up thread; false if it cannot (then
    /// the caller queues the compile itself). Async-signal-safe: atomics and `write`.
    fn request(&self, cookie: u64) -> bool {
        let wake = self.wake.load(Ordering::Acquire);
        if wake < 0 {
            return false;
        }
        let Some(slot) = self.chunks.get((cookie / CHUNK_BITS) as usize) else { return false };
        let chunk = slot.load(Ordering::Acquire);
        if chunk.is_null() {
            return false;
        }
        let bit = cookie % CHUNK_BITS;
        // SAFETY: a chunk of CHUNK_WORDS words, never freed; `bit / 64` is below that.
        unsafe { &*chunk.add((bit / 64) as usize) }.fetch_or(1 << (bit % 64), Ordering::AcqRel);
        let one: u64 = 1;
        // SAFETY: writes eight bytes from a local to the eventfd made in `get` (or `forked`).
        unsafe { libc::write(wake, (&one as *const u64).cast(), 8) };
        true
    }

    /// The tier-up thread: waits on the eventfd, then queues (or, `Serve::Here`, compiles)
    /// every requested partition.
    fn serve(&self, serve: Serve) {
        crate::signals::block_all_signals_here();
        let wake = self.wake.load(Ordering::Acquire);
        if serve == Serve::Here {
            tier_up_inherited();
        }
        loop {
            let mut count: u64 = 0;
            // SAFETY: reads eight bytes into a local from the eventfd made in `get` (or
            // `forked`), which is never closed in this process.
            let n = unsafe { libc::read(wake, (&mut count as *mut u64).cast(), 8) };
            if n != 8 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for (c, slot) in self.chunks.iter().enumerate() {
                let chunk = slot.load(Ordering::Acquire);
                if chunk.is_null() {
                    continue;
                }
                for w in 0..CHUNK_WORDS {
                    // SAFETY: as in `request`.
                    let mut bits = unsafe { &*chunk.add(w) }.swap(0, Ordering::AcqRel);
                    while bits != 0 {
                        let b = u64::from(bits.trailing_zeros());
                        bits &= bits - 1;
                        let cookie = c as u64 * CHUNK_BITS + w as u64 * 64 + b;
                        match serve {
                            Serve::Queue => schedule_cookie(cookie),
                            Serve::Here => tier_up_here(cookie),
                        }
                    }
                }
            }
        }
    }
}

/// Queues the second-tier compile of the partition `cookie` names (normal context).
fn schedule_cookie(cookie: u64) {
    let _ = std::panic::catch_unwind(|| {
        if let Some((module, part)) = tier_target(cookie) {
            module.schedule_tier_up(part);
        }
    });
}

/// The live module and partition `cookie` names (see [`register_tier_target`]).
fn tier_target(cookie: u64) -> Option<(Arc<LazyModule>, usize)> {
    let (module, part) = (cookie as usize).checked_sub(1).and_then(|i| TIER_TARGETS.lock().get(i).cloned())?;
    Some((module.upgrade()?, part))
}

/// Held while a forked child's tier-up thread compiles (see [`tier_up_here`]), and by a
/// `fork` from its prepare handler to its parent and child handlers, so that no fork copies
/// the process in the middle of that compile: the copy would keep the locks the compiling
/// thread held (the module's second copy at rest, LLVM's own) with no thread to let them go,
/// and a compile there that needs one would wait for good. Pool workers are paused for a fork
/// the same way (in jit-core).
static COMPILE_GATE: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// Whether the fork under way took [`COMPILE_GATE`] (it waits at most this long).
static GATE_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl TierRequests {
    /// Before a `fork`: waits for a compile on the tier-up thread to finish, and holds the
    /// gate so that none starts.
    extern "C" fn before_fork() {
        if let Some(guard) = COMPILE_GATE.try_lock_for(GATE_WAIT) {
            std::mem::forget(guard);
            GATE_TAKEN.store(true, Ordering::SeqCst);
        }
    }

    /// After a `fork`, in the parent (and first thing in the child): lets the gate go.
    extern "C" fn after_fork_in_parent() {
        if GATE_TAKEN.swap(false, Ordering::SeqCst) {
            // SAFETY: `before_fork` took the gate on this thread and forgot its guard (in the
            // child this thread is that thread's copy).
            unsafe { COMPILE_GATE.force_unlock() };
        }
    }
}

/// In a forked child: compiles, on the calling thread, the partitions the parent had queued
/// for their second tier and not started at the fork. Their queue's task is in the child's
/// pools, which have no workers, and they are marked started, so the child's own requests
/// for them would be ignored: they would stay at the first tier in every child of a server
/// that forks while warming up.
fn tier_up_inherited() {
    let modules: Vec<Arc<LazyModule>> = TIER_TARGETS.lock().iter().filter_map(|(m, _)| m.upgrade()).collect();
    let mut seen: FxHashSet<*const CodShared> = FxHashSet::default();
    for module in modules {
        if !seen.insert(Arc::as_ptr(&module.shared)) {
            continue;
        }
        let waiting = {
            let mut q = module.shared.tier_queue.lock();
            q.running = false;
            std::mem::take(&mut q.waiting)
        };
        for (module, part) in waiting {
            tier_up_on_this_thread(&module, part);
        }
    }
}

/// Compiles the second tier of the partition `cookie` names on the calling thread (a forked
/// child's tier-up thread), once.
fn tier_up_here(cookie: u64) {
    let Some((module, part)) = tier_target(cookie) else { return };
    if !module.second.lock().started.insert(part) {
        return;
    }
    tier_up_on_this_thread(&module, part);
}

/// Compiles partition `part`'s second tier on the calling thread, inside [`COMPILE_GATE`].
fn tier_up_on_this_thread(module: &Arc<LazyModule>, part: usize) {
    let _gate = COMPILE_GATE.lock();
    module.tier_up_or_log(part);
}

/// `__orcjit_tier_up(cookie)`, called by first-tier code on the call that makes its partition
/// hot: requests the second-tier compile (see [`TierRequests`]) and returns at once.
/// Async-signal-safe. Never unwinds into its caller.
pub(crate) extern "C" fn tier_up_hook(cookie: u64) {
    if !TIER_REQUESTS.get().is_some_and(|requests| requests.request(cookie)) {
        schedule_cookie(cookie);
    }
}

const LAYOUT_MAGIC: &[u8; 8] = b"ORCJITLZ";

fn encode_layout(layout: &Layout) -> Vec<u8> {
    let mut out = LAYOUT_MAGIC.to_vec();
    put_strings(&mut out, &layout.promoted_functions);
    put_strings(&mut out, &layout.promoted_variables);
    super::super::wire::put_u32(&mut out, layout.parts.len());
    for part in &layout.parts {
        put_strings(&mut out, part);
    }
    out
}

fn decode_layout(bytes: &[u8]) -> Option<Layout> {
    let mut r = Reader(bytes);
    if r.take(8)? != LAYOUT_MAGIC {
        return None;
    }
    let promoted_functions = r.strings()?;
    let promoted_variables = r.strings()?;
    let parts = (0..r.u32()?).map(|_| r.strings()).collect::<Option<Vec<_>>>()?;
    (r.is_empty() && !parts.is_empty()).then_some(Layout { promoted_functions, promoted_variables, parts })
}

/// Everything a module defines in the implementation dylib until it is first looked up.
pub(crate) struct ModuleUnit {
    pub module: Arc<LazyModule>,
    pub interface: Interface,
}

impl MaterializationUnit for ModuleUnit {
    fn name(&self) -> &str {
        &self.module.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let module = self.module;
        let layout = match module.layout() {
            Ok(layout) => layout,
            Err(e) => return mr.fail(e),
        };
        let split = split_responsibility(&module, &layout, &mut mr);
        if split.is_ok() {
            module.announce_split(&layout);
            // After the split: the call graph may name promoted locals.
            module.split_done();
        }
        match split {
            Ok(Some(part)) => module.materialize_part(part, mr),
            Ok(None) => {}
            Err(e) => mr.fail(e),
        }
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        let name = name.as_str();
        let original = name.strip_suffix(".body").unwrap_or(name);
        self.module.state.lock().discarded.insert(original.to_string());
    }
}

/// Hands `mr`'s symbols out: promoted locals are defined, their stubs go to a stub unit,
/// partitions nobody asked for go back to the dylib as units of their own, and the requested
/// ones are compiled, all but one on other threads. Returns that one, which `mr` is left with.
fn split_responsibility(
    module: &Arc<LazyModule>,
    layout: &Layout,
    mr: &mut MaterializationResponsibility,
) -> Result<Option<usize>> {
    let session = mr.session();
    let dylib = mr.dylib();
    let body = |n: &str| n.ends_with(".body");
    let flags = |n: &str| if body(n) { SymbolFlags::CALLABLE } else { SymbolFlags::empty() };
    // Promoted locals and anything the module gained in preparation (a transform's new
    // functions) are defined now; definitions it lost fail.
    let mut new: Vec<(SymbolName, SymbolFlags)> = Vec::new();
    let mut defined: FxHashSet<SymbolName> = FxHashSet::default();
    for name in &layout.promoted_functions {
        let stub = session.intern(name);
        defined.insert(stub.clone());
        if !mr.contains(&stub) {
            new.push((stub, SymbolFlags::CALLABLE));
        }
    }
    for name in layout.parts.iter().flatten() {
        let n = session.intern(name);
        defined.insert(n.clone());
        if !mr.contains(&n) {
            new.push((n, flags(name)));
        }
    }
    if let Some((init, _)) = &module.init {
        defined.insert(init.clone());
    }
    let lost: Vec<SymbolName> = mr.symbols().map(|(n, _)| n.clone()).filter(|n| !defined.contains(n)).collect();
    if !lost.is_empty() {
        let names: Vec<&str> = lost.iter().map(|n| n.as_str()).collect();
        let message = format!("{}: not defined by the module once prepared: {}", module.name, names.join(", "));
        mr.delegate(&lost)?.fail(Error::msg(message));
    }
    mr.define_materializing(new)?;

    if !layout.promoted_functions.is_empty() {
        let stubs = layout
            .promoted_functions
            .iter()
            .map(|n| LazyStub {
                stub: session.intern(n),
                flags: SymbolFlags::CALLABLE,
                body_dylib: dylib.clone(),
                body: session.intern(&body_name(n)),
            })
            .collect();
        mr.replace_boxed(module.shared.stubs.unit(dylib.name(), stubs)?)?;
    }

    let requested: FxHashSet<SymbolName> = mr.requested_symbols().into_iter().collect();
    let mut wanted: Vec<(usize, Vec<SymbolName>)> = Vec::new();
    for (part, names) in layout.parts.iter().enumerate() {
        let mut names: Vec<SymbolName> = names.iter().map(|n| session.intern(n)).filter(|n| mr.contains(n)).collect();
        if let Some((init, _)) = module.init.as_ref().filter(|(i, _)| part == 0 && mr.contains(i)) {
            names.push(init.clone());
        }
        if names.is_empty() {
            continue;
        }
        if names.iter().any(|n| requested.contains(n)) {
            wanted.push((part, names));
        } else {
            let interface = names.iter().map(|n| (n.clone(), mr.flags_of(n).unwrap_or_default())).collect();
            mr.replace(PartitionUnit { module: module.clone(), part, interface })?;
        }
    }
    let Some((last, _)) = wanted.pop() else { return Ok(None) };
    for (part, names) in wanted {
        let part_mr = mr.delegate(&names)?;
        let module = module.clone();
        let priority = part_mr.priority();
        session
            .dispatch(Task::new(TaskKind::Materialization, priority, move || module.materialize_part(part, part_mr)));
    }
    Ok(Some(last))
}

/// One partition, handed back to the dylib until one of its symbols is looked up.
pub(crate) struct PartitionUnit {
    module: Arc<LazyModule>,
    part: usize,
    interface: Interface,
}

impl MaterializationUnit for PartitionUnit {
    fn name(&self) -> &str {
        &self.module.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        self.module.materialize_part(self.part, mr)
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        // Its layout is fixed: the body stays in the object, unused (the dylib's winner is
        // what everything else binds to).
        self.interface.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip_and_reject_damage() {
        let layout = Layout {
            promoted_functions: vec!["helper.orcjit.t".into()],
            promoted_variables: vec![".str.orcjit.t".into()],
            parts: vec![vec!["table".into()], vec!["main.body".into(), "helper.orcjit.t.body".into()]],
        };
        let bytes = encode_layout(&layout);
        assert_eq!(decode_layout(&bytes), Some(layout));
        for cut in 0..bytes.len() {
            assert!(decode_layout(&bytes[..cut]).is_none(), "a record cut at {cut} must not parse");
        }
        assert!(decode_layout(b"ORCJITIRxxxx").is_none());
    }
}
