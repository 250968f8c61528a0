//! The object linking layer: relocatable objects become materialization units that jit-link
//! links through the session, with precise dependencies, memory owned by resource trackers,
//! and initializers kept for the host to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jit_core::{
    DylibId, EmissionGroup, Error, ExecutionSession, ExecutorAddr, FxHashMap, FxHashSet, Interface, JitDylib,
    LookupKind, LookupOptions, MaterializationResponsibility, MaterializationUnit, RequiredState, ResourceKey,
    ResourceManager, ResourceTracker, Result, SearchOrder, SymbolDef, SymbolFlags, SymbolLookupFlags, SymbolLookupSet,
    SymbolName,
};
use jit_link::{
    LinkContext, LinkError, LinkGraph, LinkedObject, LookupContinuation, LookupRequest, PassConfig, Phase, Scope,
    SymbolDependencies,
};
use jit_mem::{MemoryManager, TargetAddr};
use parking_lot::{Mutex, RwLock};

use crate::ObjectBytes;
use crate::entry::EntryGate;
use crate::initializers::{Initializers, LinkedRecord};

/// Something that takes part in every link of a layer: adds passes, hears the outcome.
///
/// Contract: called on whatever thread runs that step of the link, never under a lock of the
/// session or the layer.
pub trait LinkPlugin: Send + Sync + 'static {
    /// Adds or removes passes for the link of `graph` (an object being materialized into
    /// `dylib`).
    fn modify_pass_config(&self, _dylib: &JitDylib, _graph: &LinkGraph, _config: &mut PassConfig) -> Result<()> {
        Ok(())
    }

    /// The object is linked and its memory finalized; its symbols are about to be emitted.
    fn notify_finalized(&self, _dylib: &JitDylib, _object: &LinkedObject) {}

    /// The link failed.
    fn notify_failed(&self, _object: &str, _error: &LinkError) {}

    /// Everything recorded against `key` is being released.
    fn notify_remove(&self, _key: ResourceKey) {}
}

pub(crate) struct LayerShared {
    session: ExecutionSession,
    memory: Arc<dyn MemoryManager>,
    plugins: RwLock<Vec<Arc<dyn LinkPlugin>>>,
    pub(crate) inits: Initializers,
    next_object: AtomicU64,
    gate: std::sync::OnceLock<std::result::Result<Arc<EntryGate>, String>>,
    /// What each linked symbol refers to, once [`ObjectLinkingLayer::record_references`] asks.
    references: References,
}

/// A symbol: its dylib and name.
pub type SymbolRef = (DylibId, SymbolName);

/// The layers of the process that record references, for [`recorded_references`].
static RECORDING: Mutex<Vec<std::sync::Weak<LayerShared>>> = parking_lot::const_mutex(Vec::new());

/// [`ObjectLinkingLayer::references`] of whichever layer of the process linked `symbol`.
pub(crate) fn recorded_references(symbol: &SymbolRef) -> Option<Arc<[SymbolRef]>> {
    let layers: Vec<Arc<LayerShared>> = RECORDING.lock().iter().filter_map(std::sync::Weak::upgrade).collect();
    layers.iter().find_map(|l| l.references.of(symbol))
}

/// What the symbols linked so far refer to (see [`ObjectLinkingLayer::references`]), by the
/// tracker that owns them, so that removing it forgets them.
#[derive(Default)]
struct References {
    on: std::sync::atomic::AtomicBool,
    table: Mutex<ReferenceTable>,
}

impl References {
    fn of(&self, symbol: &SymbolRef) -> Option<Arc<[SymbolRef]>> {
        self.table.lock().by_symbol.get(symbol).cloned()
    }
}

#[derive(Default)]
struct ReferenceTable {
    by_symbol: FxHashMap<SymbolRef, Arc<[SymbolRef]>>,
    by_tracker: FxHashMap<ResourceKey, Vec<SymbolRef>>,
}

/// Links relocatable ELF x86-64 objects into JIT dylibs.
///
/// Contract: `add` parses the object's symbol table at once (a malformed object is an error
/// then) and defines its symbols in the dylib; the object is linked when one of them is first
/// looked up. Linking resolves the object's references through its dylib's link order and
/// emits its symbols with the dependencies its graph's edges imply. The memory belongs to the
/// resource tracker the object was added with: removing the tracker runs the object's
/// finalizers (if its initializers ran) and frees it. Objects with initializers define a
/// side-effects-only symbol so that [`initialize`](Self::initialize) can link and run them.
#[derive(Clone)]
pub struct ObjectLinkingLayer {
    shared: Arc<LayerShared>,
}

impl LayerShared {
    fn entry_gate(&self) -> Result<Arc<EntryGate>> {
        let gate = self.gate.get_or_init(|| EntryGate::new(&*self.memory).map(Arc::new).map_err(|e| e.to_string()));
        gate.clone().map_err(|e| Error::msg(format!("cannot make the entry gate: {e}")))
    }
}

struct LayerResources(Arc<LayerShared>);

impl ResourceManager for LayerResources {
    fn handle_remove(&self, key: ResourceKey) -> Result<()> {
        for plugin in self.0.plugins.read().iter() {
            plugin.notify_remove(key);
        }
        let forgotten = {
            let mut table = self.0.references.table.lock();
            let symbols = table.by_tracker.remove(&key).unwrap_or_default();
            symbols.iter().filter_map(|s| table.by_symbol.remove(s)).collect::<Vec<_>>()
        };
        drop(forgotten);
        let gate = self.0.entry_gate()?;
        self.0.inits.release(key, &gate)
    }

    fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey) {
        {
            let mut table = self.0.references.table.lock();
            if let Some(moved) = table.by_tracker.remove(&src) {
                table.by_tracker.entry(dst).or_default().extend(moved);
            }
        }
        self.0.inits.transfer(dst, src);
    }
}

impl ObjectLinkingLayer {
    /// A layer linking into `memory`, registered with `session` as a resource manager (so that
    /// removing a tracker, or ending the session, frees what it linked).
    pub fn new(session: &ExecutionSession, memory: Arc<dyn MemoryManager>) -> Self {
        let shared = Arc::new(LayerShared {
            session: session.clone(),
            memory,
            plugins: RwLock::new(Vec::new()),
            inits: Initializers::default(),
            next_object: AtomicU64::new(0),
            gate: std::sync::OnceLock::new(),
            references: References::default(),
        });
        session.register_resource_manager(Arc::new(LayerResources(shared.clone())));
        ObjectLinkingLayer { shared }
    }

    pub fn session(&self) -> &ExecutionSession {
        &self.shared.session
    }

    pub fn memory_manager(&self) -> &Arc<dyn MemoryManager> {
        &self.shared.memory
    }

    /// The gate through which this layer calls JIT'd entry points (initializers, finalizers):
    /// an exception that escapes them terminates the program as it would natively. Use it to
    /// call `main` too.
    pub fn entry_gate(&self) -> Result<Arc<EntryGate>> {
        self.shared.entry_gate()
    }

    /// Makes the layer record, for every symbol it links from now on, the symbols its code and
    /// data refer to (see [`references`](Self::references)). Off by default: a map entry per
    /// linked symbol. A lazy JIT turns it on, to compile what a signal handler may call
    /// before the handler runs.
    pub fn record_references(&self) {
        if !self.shared.references.on.swap(true, Ordering::Relaxed) {
            let mut layers = RECORDING.lock();
            layers.retain(|l| l.strong_count() > 0);
            layers.push(Arc::downgrade(&self.shared));
        }
    }

    /// The symbols that `symbol`'s code or data refers to (directly, or through anonymous data
    /// of its object), each where the link found it (the process's own as the dylib whose
    /// generator defined them), if `symbol` was linked by this layer while
    /// [`record_references`](Self::record_references) was on and its tracker still lives.
    pub fn references(&self, symbol: &SymbolRef) -> Option<Arc<[SymbolRef]>> {
        self.shared.references.of(symbol)
    }

    pub fn add_plugin(&self, plugin: Arc<dyn LinkPlugin>) {
        self.shared.plugins.write().push(plugin);
    }

    /// Adds the object `bytes` (named `name` in errors) to `dylib`, tracked by its default
    /// tracker.
    pub fn add(&self, dylib: &JitDylib, name: &str, bytes: impl Into<ObjectBytes>) -> Result<()> {
        self.add_with_tracker(dylib, name, bytes, None)
    }

    pub fn add_with_tracker(
        &self,
        dylib: &JitDylib,
        name: &str,
        bytes: impl Into<ObjectBytes>,
        tracker: Option<&ResourceTracker>,
    ) -> Result<()> {
        self.add_objects_with_tracker(dylib, name, vec![(name.to_string(), bytes.into())], tracker)
    }

    /// Adds relocatable objects (named, in link order) to `dylib`, each as a unit of its own,
    /// except objects whose `__start_X` / `__stop_X` must enclose section `X` of other
    /// objects: those join the objects that define it (and theirs, transitively) in one unit
    /// linked as one graph ([`add_objects_with_tracker`](Self::add_objects_with_tracker)),
    /// named by its objects joined with " + ". A static linker gathers every object's `X`
    /// between the two symbols; objects linked apart would each enclose their own part, and a
    /// registration table (a C plugin registry, Rust's `linkme`) would miss entries
    /// (llvm-jitlink-19 finds none). So do objects whose code reaches another's thread-local
    /// variables with the local-dynamic model, which needs them in its own TLS module (see
    /// [`jit_link::link_ties`]). Each object's initializers run at its own place in link order.
    pub fn add_objects(&self, dylib: &JitDylib, objects: Vec<(String, ObjectBytes)>) -> Result<()> {
        let ties: Vec<_> = objects.iter().map(|(_, bytes)| jit_link::link_ties(bytes)).collect();
        self.add_objects_grouped(dylib, objects, &ties)
    }

    /// [`add_objects`](Self::add_objects), with each object's [`jit_link::link_ties`] already
    /// read (`ties`, one per object). Each object takes its place in link order now, in the
    /// order given.
    pub(crate) fn add_objects_grouped(
        &self,
        dylib: &JitDylib,
        objects: Vec<(String, ObjectBytes)>,
        ties: &[(Vec<String>, Vec<String>)],
    ) -> Result<()> {
        let first = self.reserve_orders(objects.len());
        let mut objects: Vec<Option<(String, ObjectBytes)>> = objects.into_iter().map(Some).collect();
        for group in jit_link::enclosure_groups(ties) {
            let orders = group.iter().map(|&i| first + i as u64).collect();
            let members: Vec<(String, ObjectBytes)> = group.into_iter().filter_map(|i| objects[i].take()).collect();
            let name = members.iter().map(|(object, _)| object.as_str()).collect::<Vec<_>>().join(" + ");
            self.add_unit(dylib, &name, members, orders, None)?;
        }
        Ok(())
    }

    /// Reserves `n` consecutive places in link order (which orders initializers) and returns
    /// the first.
    pub(crate) fn reserve_orders(&self, n: usize) -> u64 {
        self.shared.next_object.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// Adds `objects` to `dylib` as one unit, linked into one graph as `ld -r` would combine
    /// them (see [`jit_link::LinkGraph::absorb`]), named `name` in errors (what
    /// [`add_objects`](Self::add_objects) does with each group).
    pub fn add_objects_with_tracker(
        &self,
        dylib: &JitDylib,
        name: &str,
        objects: Vec<(String, ObjectBytes)>,
        tracker: Option<&ResourceTracker>,
    ) -> Result<()> {
        let first = self.reserve_orders(objects.len());
        let orders = (first..first + objects.len() as u64).collect();
        self.add_unit(dylib, name, objects, orders, tracker)
    }

    fn add_unit(
        &self,
        dylib: &JitDylib,
        name: &str,
        objects: Vec<(String, ObjectBytes)>,
        orders: Vec<u64>,
        tracker: Option<&ResourceTracker>,
    ) -> Result<()> {
        let unit = ObjectUnit::new(self.shared.clone(), name, objects, orders)?;
        let init_symbol = unit.init_symbol.clone();
        dylib.define_boxed(Box::new(unit), tracker)?;
        if let Some(init) = init_symbol {
            self.shared.inits.add_init_symbol(dylib.id(), None, init);
        }
        Ok(())
    }

    /// A side-effects-only symbol standing for the initializers of a unit a layer above adds
    /// to `dylib` (define it in the unit's interface): [`initialize`](Self::initialize) looks it
    /// up, so the unit is compiled and linked, and its initializers run, even if nothing else
    /// refers to it.
    pub fn initializer_symbol(&self, dylib: &JitDylib, unit_name: &str) -> SymbolName {
        let n = self.shared.next_object.fetch_add(1, Ordering::Relaxed);
        let name = self.shared.session.intern(&format!("$orcjit.init.{n}.{unit_name}"));
        self.shared.inits.add_init_symbol(dylib.id(), None, name.clone());
        name
    }

    /// As [`initializer_symbol`](Self::initializer_symbol), for a unit added to `defined_in`
    /// whose initializers are `owner`'s (run by `initialize(owner)`); see
    /// [`set_initializer_owner`](Self::set_initializer_owner). Returns the symbol and the
    /// link order its object should be emitted with (see
    /// [`emit_in_order`](Self::emit_in_order)), so initializers run in the order units were added.
    pub fn initializer_symbol_in(&self, owner: &JitDylib, defined_in: &JitDylib, unit_name: &str) -> (SymbolName, u64) {
        let n = self.shared.next_object.fetch_add(1, Ordering::Relaxed);
        let name = self.shared.session.intern(&format!("$orcjit.init.{n}.{unit_name}"));
        self.shared.inits.add_init_symbol(owner.id(), Some(defined_in.clone()), name.clone());
        (name, n)
    }

    /// Makes the initializers and finalizers of objects linked into `dylib` count as
    /// `owner`'s: [`initialize`](Self::initialize) and [`deinitialize`](Self::deinitialize) of
    /// `owner` run them. For layers that link a dylib's code into a companion dylib.
    pub fn set_initializer_owner(&self, dylib: &JitDylib, owner: &JitDylib) {
        self.shared.inits.set_owner(dylib.id(), owner.id());
    }

    /// Links `bytes` for symbols `mr` is responsible for (for layers above that produce
    /// objects, such as an IR compiler): the object must define `mr`'s symbols (and may define
    /// others of its own, which the dylib does not see).
    pub fn emit(&self, mr: MaterializationResponsibility, name: &str, bytes: &[u8]) {
        self.emit_renamed(mr, name, bytes, Vec::new())
    }

    /// As [`emit`](Self::emit), first renaming the object's symbols `(from, to)` on its link
    /// graph. A compiler that gives local symbols canonical names (so that equal code makes
    /// equal, cacheable objects) restores their real names this way, for profilers and
    /// debuggers.
    pub fn emit_renamed(
        &self,
        mr: MaterializationResponsibility,
        name: &str,
        bytes: &[u8],
        renames: Vec<(String, String)>,
    ) {
        let order = self.shared.next_object.fetch_add(1, Ordering::Relaxed);
        self.emit_in_order(mr, name, bytes, renames, order)
    }

    /// As [`emit_renamed`](Self::emit_renamed), with the object's place in link order (which
    /// orders initializers) given, e.g. reserved when the unit was added.
    pub fn emit_in_order(
        &self,
        mr: MaterializationResponsibility,
        name: &str,
        bytes: &[u8],
        renames: Vec<(String, String)>,
        order: u64,
    ) {
        match renamed_graph(name, bytes, &renames, &[]) {
            Ok(graph) => link_for(self.shared.clone(), mr, graph, vec![order], FxHashSet::default()),
            Err(e) => mr.fail(link_error(e)),
        }
    }

    /// As [`emit_in_order`](Self::emit_in_order) of `object` (its name and bytes), linking
    /// `objects` into the same graph (after the renames), as `ld -r` would combine them (see
    /// [`jit_link::LinkGraph::absorb`]); the initializers of all of them run at `order`. `mr`
    /// holds the symbols all of them define (see [`objects_interface`]) but those in
    /// `discarded`: definitions that lost to others in the dylib, made external before
    /// linking. For a compiler whose module's `__start_X` / `__stop_X` enclose section `X` of
    /// objects, or the other way round.
    pub fn emit_with_objects(
        &self,
        mr: MaterializationResponsibility,
        object: (&str, &[u8]),
        renames: Vec<(String, String)>,
        order: u64,
        objects: &[(String, ObjectBytes)],
        discarded: FxHashSet<SymbolName>,
    ) {
        let (name, bytes) = object;
        match renamed_graph(name, bytes, &renames, objects) {
            Ok(graph) => link_for(self.shared.clone(), mr, graph, vec![order], discarded),
            Err(e) => mr.fail(link_error(e)),
        }
    }

    /// Links every object of `dylib` that has initializers, then runs the initializers of
    /// `dylib` that have not run yet, in static-link order (by priority, then by the order the
    /// objects were added). `argc`, `argv` and `envp` are passed on as glibc does.
    pub fn initialize(&self, dylib: &JitDylib, args: InitArgs) -> Result<()> {
        let names = self.shared.inits.init_symbols(dylib.id());
        // One lookup per dylib the symbols are defined in, in the order they were added.
        let mut by_dylib: Vec<(JitDylib, SymbolLookupSet)> = Vec::new();
        for (defined_in, name) in names {
            let defined_in = defined_in.unwrap_or_else(|| dylib.clone());
            let at = match by_dylib.iter().position(|(d, _)| *d == defined_in) {
                Some(at) => at,
                None => {
                    by_dylib.push((defined_in, SymbolLookupSet::new()));
                    by_dylib.len() - 1
                }
            };
            by_dylib[at].1.push(name, SymbolLookupFlags::WeaklyReferenced);
        }
        for (defined_in, set) in by_dylib {
            self.shared.session.lookup_blocking(&defined_in.search_order(), set, RequiredState::Ready)?;
        }
        let gate = self.shared.entry_gate()?;
        self.shared.inits.run_pending(dylib.id(), args, &gate);
        Ok(())
    }

    /// Runs, in reverse static-link order, the finalizers of the objects of `dylib` whose
    /// initializers ran, and the `atexit`/static-destructor handlers they registered.
    pub fn deinitialize(&self, dylib: &JitDylib) -> Result<()> {
        let gate = self.shared.entry_gate()?;
        self.shared.inits.run_finalizers(dylib.id(), &gate);
        Ok(())
    }

    /// At process exit: runs only the `.fini_array`/`.dtors` entries of `dylib`'s initialized
    /// objects (libc runs their `atexit` handlers and static destructors itself, in `exit`).
    /// Register it with `atexit` before running initializers, as the C runtime registers
    /// `_dl_fini`, so it runs after the handlers the program registers.
    pub fn run_exit_finalizers(&self, dylib: DylibId) -> Result<()> {
        let gate = self.shared.entry_gate()?;
        self.shared.inits.run_fini_arrays(dylib, &gate);
        Ok(())
    }
}

/// What initializers are called with (glibc passes `argc, argv, envp` to `.init_array`
/// functions; most ignore them).
#[derive(Clone, Copy, Debug)]
pub struct InitArgs {
    pub argc: i32,
    pub argv: *const *const std::ffi::c_char,
    pub envp: *const *const std::ffi::c_char,
}

impl Default for InitArgs {
    fn default() -> Self {
        InitArgs { argc: 0, argv: std::ptr::null(), envp: std::ptr::null() }
    }
}

// SAFETY: the pointers are only passed through to JIT'd initializers on the calling thread;
// whoever built the arguments keeps them alive for the call.
unsafe impl Send for InitArgs {}

/// An object waiting to be linked.
struct ObjectUnit {
    shared: Arc<LayerShared>,
    name: String,
    /// The object, or the objects linked as one, with their names.
    objects: Vec<(String, ObjectBytes)>,
    interface: Interface,
    /// The place in link order of each object.
    orders: Vec<u64>,
    /// Names the dylib discarded (weak definitions that lost): made external before linking.
    discarded: FxHashSet<SymbolName>,
    /// The side-effects-only symbol standing for the object's initializers, if it has any.
    init_symbol: Option<SymbolName>,
}

impl ObjectUnit {
    fn new(
        shared: Arc<LayerShared>,
        name: &str,
        objects: Vec<(String, ObjectBytes)>,
        orders: Vec<u64>,
    ) -> Result<Self> {
        let (mut interface, has_initializers) = objects_interface(&shared.session, name, &objects)?;
        let first = orders.first().copied().unwrap_or_default();
        let init_symbol = has_initializers.then(|| shared.session.intern(&format!("$orcjit.init.{first}.{name}")));
        if let Some(init) = &init_symbol {
            interface.push(init.clone(), SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
        }
        let discarded = FxHashSet::default();
        Ok(ObjectUnit { shared, name: name.to_string(), objects, interface, orders, discarded, init_symbol })
    }
}

/// The symbols `objects` (linked as one graph, `name` in errors) define for a dylib, and
/// whether they have initializers or finalizers.
pub(crate) fn objects_interface(
    session: &ExecutionSession,
    name: &str,
    objects: &[(String, ObjectBytes)],
) -> Result<(Interface, bool)> {
    let graph = jit_link::interface_graph_from_elf_objects(name, &borrowed(objects)).map_err(link_error)?;
    let mut interface = Interface::new();
    for (_, sym) in graph.symbols() {
        let Some(name) = sym.name() else { continue };
        if !sym.is_defined() || sym.scope() == Scope::Local {
            continue;
        }
        interface.push(session.intern(name.as_str()), flags_of(sym));
    }
    Ok((interface, has_initializers(&graph)))
}

/// A unit's objects as `jit_link::graph_from_elf_objects` and its interface twin take them.
fn borrowed(objects: &[(String, ObjectBytes)]) -> Vec<(&str, &[u8])> {
    objects.iter().map(|(object, bytes)| (object.as_str(), &bytes[..])).collect()
}

fn flags_of(sym: &jit_link::Symbol) -> SymbolFlags {
    let mut flags = SymbolFlags::empty();
    if sym.scope() == Scope::Default {
        flags |= SymbolFlags::EXPORTED;
    }
    if sym.linkage() == jit_link::Linkage::Weak {
        flags |= SymbolFlags::WEAK;
    }
    if sym.is_callable() {
        flags |= SymbolFlags::CALLABLE;
    }
    flags
}

fn has_initializers(graph: &LinkGraph) -> bool {
    graph.sections().iter().any(|(_, s)| jit_link::init_fini::is_init_fini_section(s.name()))
}

impl MaterializationUnit for ObjectUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        match jit_link::graph_from_elf_objects(&self.name, &borrowed(&self.objects)) {
            Ok(graph) => link_for(self.shared, mr, graph, self.orders, self.discarded),
            Err(e) => mr.fail(link_error(e)),
        }
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.discarded.insert(name.clone());
    }
}

/// The graph of the object `bytes` with its symbols renamed `(from, to)`, and `objects` (if
/// any) linked into it, the whole named by all of them joined with " + ".
fn renamed_graph(
    name: &str,
    bytes: &[u8],
    renames: &[(String, String)],
    objects: &[(String, ObjectBytes)],
) -> Result<LinkGraph, LinkError> {
    let mut graph = jit_link::graph_from_elf_object(name, bytes)?;
    rename_symbols(&mut graph, renames)?;
    if objects.is_empty() {
        return Ok(graph);
    }
    let names: Vec<&str> = std::iter::once(name).chain(objects.iter().map(|(object, _)| object.as_str())).collect();
    let mut combined = LinkGraph::new(names.join(" + "));
    combined.absorb(graph)?;
    for (object, data) in objects {
        combined.absorb(jit_link::graph_from_elf_object(object, data)?)?;
    }
    Ok(combined)
}

fn rename_symbols(graph: &mut LinkGraph, renames: &[(String, String)]) -> Result<(), LinkError> {
    for (from, to) in renames {
        if let Some(id) = graph.find_symbol(from) {
            graph.rename_symbol(id, jit_link::SymbolName::new(to))?;
        }
    }
    Ok(())
}

fn link_error(e: LinkError) -> Error {
    Error::other(e)
}

fn link_for(
    shared: Arc<LayerShared>,
    mr: MaterializationResponsibility,
    graph: LinkGraph,
    orders: Vec<u64>,
    discarded: FxHashSet<SymbolName>,
) {
    let dylib = mr.dylib();
    let link_order = dylib.link_order();
    let ctx = Arc::new(LayerContext {
        shared,
        object: graph.name().to_string(),
        orders,
        dylib,
        link_order,
        discarded,
        mr: Mutex::new(Some(mr)),
        deps: Mutex::new(Vec::new()),
        found: Arc::default(),
    });
    let _span = tracing::debug_span!(target: "orcjit", "link", object = %ctx.object).entered();
    jit_link::link(graph, ctx);
}

/// The session side of one link.
struct LayerContext {
    shared: Arc<LayerShared>,
    object: String,
    /// The place in link order of each object of the graph (see `LinkedRecord`).
    orders: Vec<u64>,
    dylib: JitDylib,
    link_order: SearchOrder,
    discarded: FxHashSet<SymbolName>,
    /// Taken by `notify_finalized` or `notify_failed`.
    mr: Mutex<Option<MaterializationResponsibility>>,
    deps: Mutex<Vec<SymbolDependencies>>,
    /// External names found by the lookup: where each is defined (a dependency).
    found: Arc<Mutex<FoundExternals>>,
}

type FoundExternals = FxHashMap<jit_link::SymbolName, (DylibId, SymbolName)>;

impl LayerContext {
    fn with_mr<T>(&self, f: impl FnOnce(&mut MaterializationResponsibility) -> T) -> Option<T> {
        self.mr.lock().as_mut().map(f)
    }
}

impl LinkContext for LayerContext {
    fn memory_manager(&self) -> Arc<dyn MemoryManager> {
        self.shared.memory.clone()
    }

    fn modify_pass_config(&self, graph: &LinkGraph, config: &mut PassConfig) -> Result<(), LinkError> {
        // Keep what the responsibility must produce; turn definitions the dylib discarded (weak
        // ones that lost) into references to the winner.
        let session = self.shared.session.clone();
        let wanted: FxHashSet<SymbolName> =
            self.with_mr(|mr| mr.symbols().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
        let discarded = self.discarded.clone();
        config.prepend(Phase::PrePrune, "orcjit_roots_and_discards", move |graph: &mut LinkGraph| {
            for id in graph.symbol_ids() {
                let Some(sym) = graph.symbol(id) else { continue };
                let Some(name) = sym.name() else { continue };
                if !sym.is_defined() || sym.scope() == Scope::Local {
                    continue;
                }
                let name = session.intern(name.as_str());
                if wanted.contains(&name) {
                    if let Some(sym) = graph.symbol_mut(id) {
                        sym.set_live(true);
                    }
                } else if discarded.contains(&name) {
                    // Another definition won: bind to it, as a static linker would. (Other
                    // definitions the responsibility does not hold are the code generator's own,
                    // such as DW.ref.__gxx_personality_v0, and stay this object's.)
                    graph.make_external(id)?;
                }
            }
            Ok(())
        });
        for plugin in self.shared.plugins.read().iter() {
            plugin
                .modify_pass_config(&self.dylib, graph, config)
                .map_err(|e| LinkError::custom(&self.object, "plugin", e))?;
        }
        Ok(())
    }

    fn notify_resolved(&self, graph: &LinkGraph) -> Result<(), LinkError> {
        let session = &self.shared.session;
        let mut defs = Vec::new();
        for (id, sym) in graph.symbols() {
            let Some(name) = sym.name() else { continue };
            if !sym.is_defined() || sym.scope() == Scope::Local {
                continue;
            }
            let name = session.intern(name.as_str());
            if let Some(addr) = graph.symbol_addr(id) {
                defs.push((name, addr));
            }
        }
        let result = self.with_mr(|mr| {
            let defs: Vec<(SymbolName, SymbolDef)> = defs
                .into_iter()
                .filter_map(|(name, addr)| {
                    let flags = mr.flags_of(&name)?;
                    Some((name, SymbolDef::new(ExecutorAddr(addr.0), flags)))
                })
                .collect();
            mr.notify_resolved(defs)
        });
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(LinkError::custom(&self.object, "reporting addresses", e)),
            None => return Err(LinkError::custom(&self.object, "reporting addresses", "responsibility gone")),
        }
        *self.deps.lock() = jit_link::external_dependencies(graph);
        Ok(())
    }

    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation) {
        // Everything is looked up as weakly referenced: jit-link itself reports a missing
        // required symbol, naming the object and the place that needs it.
        let session = &self.shared.session;
        let mut set = SymbolLookupSet::new();
        let mut names: FxHashMap<SymbolName, jit_link::SymbolName> = FxHashMap::default();
        for (name, _flags) in request.symbols {
            let core = session.intern(name.as_str());
            set.push(core.clone(), SymbolLookupFlags::WeaklyReferenced);
            names.insert(core, name);
        }
        let priority = self.with_mr(|mr| mr.priority()).unwrap_or_default();
        let options = LookupOptions { priority, kind: LookupKind::Static };
        let found_sink = self.found.clone();
        session.lookup_detailed(&self.link_order, set, RequiredState::Resolved, options, move |result| match result {
            Ok(found) => {
                let mut map = std::collections::HashMap::with_capacity(found.len());
                let mut record = found_sink.lock();
                for f in found.0 {
                    if let Some(link_name) = names.get(&f.name) {
                        map.insert(link_name.clone(), TargetAddr(f.def.addr.0));
                        record.insert(link_name.clone(), (f.dylib, f.name));
                    }
                }
                drop(record);
                continuation.resolve(Ok(map));
            }
            Err(e) => continuation.resolve(Err(Box::new(e))),
        });
    }

    fn describe_external(&self, name: &jit_link::SymbolName, addr: TargetAddr) -> jit_link::ExternalDefinition {
        // Every address the session hands out is in this process: JIT'd memory or a loaded
        // library. What a library's symbol is decides whether non-PIC code may reach it
        // through a stub or a read-only copy.
        jit_link::process::describe_definition(name.as_str(), addr)
    }

    fn notify_finalized(&self, linked: LinkedObject) {
        let Some(mr) = self.mr.lock().take() else { return };
        for plugin in self.shared.plugins.read().iter() {
            plugin.notify_finalized(&self.dylib, &linked);
        }
        let groups = self.emission_groups(&mr);
        let owner = self.shared.inits.owner_of(self.dylib.id());
        let record = LinkedRecord::new(&self.object, self.orders.clone(), owner, linked);
        let inits = &self.shared.inits;
        let recorded = mr.with_resource_key(|key| inits.record(key, record));
        match recorded {
            // Removed while linking: the memory goes with the record, before anything runs.
            Err(e) => mr.fail(e),
            Ok(()) => {
                // A failure here means a dependency failed first: the session has failed the
                // symbols concerned and told their waiters.
                let _ = mr.notify_emitted(groups);
            }
        }
    }

    fn notify_failed(&self, error: LinkError) {
        for plugin in self.shared.plugins.read().iter() {
            plugin.notify_failed(&self.object, &error);
        }
        if let Some(mr) = self.mr.lock().take() {
            mr.fail(link_error(error));
        }
    }
}

impl LayerContext {
    /// One group per distinct dependency set (jit-link shares equal sets), so symbols that
    /// reach the same externals share one node in the session's graph.
    fn emission_groups(&self, mr: &MaterializationResponsibility) -> Vec<EmissionGroup> {
        let session = &self.shared.session;
        let found = self.found.lock();
        let mut by_set: FxHashMap<*const [jit_link::SymbolName], usize> = FxHashMap::default();
        let mut groups: Vec<EmissionGroup> = Vec::new();
        let record = self.shared.references.on.load(Ordering::Relaxed);
        let mut referring: Vec<(SymbolRef, usize)> = Vec::new();
        for dep in self.deps.lock().iter() {
            let name = session.intern(dep.name.as_str());
            if !mr.contains(&name) {
                continue;
            }
            let key = Arc::as_ptr(&dep.depends_on);
            let index = *by_set.entry(key).or_insert_with(|| {
                let on = dep.depends_on.iter().filter_map(|ext| found.get(ext).cloned());
                groups.push(EmissionGroup::new([], on));
                groups.len() - 1
            });
            if record {
                referring.push(((self.dylib.id(), name.clone()), index));
            }
            groups[index].symbols.push(name);
        }
        if record {
            // The same sets, as references: the groups' dependencies are where each was found.
            let sets: Vec<Arc<[SymbolRef]>> = groups.iter().map(|g| g.depends_on.iter().cloned().collect()).collect();
            let _ = mr.with_resource_key(|key| {
                let mut table = self.shared.references.table.lock();
                let ReferenceTable { by_symbol, by_tracker } = &mut *table;
                let owned = by_tracker.entry(key).or_default();
                for (symbol, index) in referring {
                    owned.push(symbol.clone());
                    by_symbol.insert(symbol, sets[index].clone());
                }
            });
        }
        groups
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use jit_core::ProcessSymbolsGenerator;
    use jit_mem::{ManagerConfig, Placement};

    use super::*;

    /// Compiles C `source` without PIC for the small code model; returns the object's bytes.
    fn nopic_object(dir: &std::path::Path, name: &str, source: &str) -> Vec<u8> {
        c_object(dir, name, source, &["-fno-pic", "-mcmodel=small"])
    }

    /// Compiles C `source` at -O1 with `flags`; returns the object's bytes.
    pub(crate) fn c_object(dir: &std::path::Path, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
        let (src, obj) = (dir.join(format!("{name}.c")), dir.join(format!("{name}.o")));
        std::fs::write(&src, source).unwrap();
        let out = std::process::Command::new("clang-19")
            .args(["-c", "-O1"])
            .args(flags)
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(obj).unwrap()
    }

    /// Looks `name` up on another thread, failing the test if that hangs.
    fn lookup_watched(jd: &JitDylib, name: &'static str) -> Result<SymbolDef> {
        let jd = jd.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(jd.lookup(name));
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("watchdog: lookup hung")
    }

    #[test]
    fn non_pic_small_model_objects_reach_libc_through_the_layers_context() {
        let tmp = tempfile::tempdir().unwrap();
        let es = ExecutionSession::with_threads(2).unwrap();
        let low = ManagerConfig::default().with_placement(Placement::Low);
        let layer = ObjectLinkingLayer::new(&es, jit_mem::default_manager(low).unwrap());
        let jd = es.create_dylib("main").unwrap();
        jd.add_generator(ProcessSymbolsGenerator::new());
        let far = nopic_object(
            tmp.path(),
            "far",
            "#include <stdio.h>\n#include <string.h>\n\
             FILE *get_stdout(void) { return stdout; }\n\
             size_t (*get_strlen(void))(const char *) { return strlen; }\n",
        );
        assert!(jit_link::needs_low_placement(&far));
        layer.add(&jd, "far.o", far).unwrap();
        let get_stdout = lookup_watched(&jd, "get_stdout").unwrap();
        let get_strlen = lookup_watched(&jd, "get_strlen").unwrap();
        type Getter = extern "C" fn() -> usize;
        // SAFETY: the functions of the object above, linked and ready; they take nothing.
        let get_stdout = unsafe { std::mem::transmute::<usize, Getter>(get_stdout.addr.0 as usize) };
        // SAFETY: as above.
        let get_strlen = unsafe { std::mem::transmute::<usize, Getter>(get_strlen.addr.0 as usize) };
        // The process's own `stdout`, found through the dylib's process-symbols generator.
        let libc_stdout = lookup_watched(&jd, "stdout").unwrap().addr.0 as usize;
        // SAFETY: libc's `stdout` is a pointer-sized variable.
        let stdout_now = unsafe { *(libc_stdout as *const usize) };
        assert_eq!(get_stdout(), stdout_now, "read through a copy of stdout");
        // SAFETY: the pointer stands for libc's strlen.
        let strlen: extern "C" fn(*const std::ffi::c_char) -> usize = unsafe { std::mem::transmute(get_strlen()) };
        assert_eq!(strlen(c"four".as_ptr()), 4);

        let mutable =
            nopic_object(tmp.path(), "opt", "#include <unistd.h>\nint first_operand(void) { return optind; }\n");
        layer.add(&jd, "opt.o", mutable).unwrap();
        let err = lookup_watched(&jd, "first_operand").expect_err("optind cannot be copied").to_string();
        assert!(
            err.contains("opt.o") && err.contains("'optind'") && err.contains("may change after the link"),
            "{err}"
        );
    }

    #[test]
    fn references_are_recorded_where_found_only_when_asked_and_forgotten_with_their_tracker() {
        let tmp = tempfile::tempdir().unwrap();
        let es = ExecutionSession::with_threads(2).unwrap();
        let layer = ObjectLinkingLayer::new(&es, jit_mem::default_manager(ManagerConfig::default()).unwrap());
        let jd = es.create_dylib("main").unwrap();
        let other = es.create_dylib("other").unwrap();
        jd.set_link_order(jit_core::SearchOrder::new().then(&other, jit_core::MatchFlags::ExportedOnly), true);
        jd.add_generator(ProcessSymbolsGenerator::new());
        let defs = c_object(tmp.path(), "defs", "int counter; int bump(void) { return ++counter; }\n", &["-fPIC"]);
        layer.add(&other, "defs.o", defs).unwrap();
        let source = "int bump(void); extern int counter;\n\
                      static int (*const table[])(void) = {bump};\n\
                      int first(void) { return table[0]() + counter; }\n\
                      int second(void) { return first(); }\n";
        let symbol = |dylib: &JitDylib, name: &str| (dylib.id(), es.intern(name));

        // Off: nothing recorded.
        let unrecorded = jd.create_tracker();
        layer
            .add_with_tracker(&jd, "early.o", c_object(tmp.path(), "early", source, &["-fPIC"]), Some(&unrecorded))
            .unwrap();
        lookup_watched(&jd, "second").unwrap();
        assert!(layer.references(&symbol(&jd, "first")).is_none());
        unrecorded.remove().unwrap();

        layer.record_references();
        let tracker = jd.create_tracker();
        layer
            .add_with_tracker(&jd, "uses.o", c_object(tmp.path(), "uses", source, &["-fPIC"]), Some(&tracker))
            .unwrap();
        lookup_watched(&jd, "second").unwrap();
        // Through the table (anonymous data) to `bump`, and `counter`, each where it was found.
        let first = layer.references(&symbol(&jd, "first")).expect("recorded");
        let mut names: Vec<(DylibId, String)> = first.iter().map(|(d, n)| (*d, n.as_str().to_string())).collect();
        names.sort();
        assert_eq!(names, [(other.id(), "bump".to_string()), (other.id(), "counter".to_string())]);
        // `second` reaches them through `first`, defined beside it.
        assert_eq!(layer.references(&symbol(&jd, "second")).expect("recorded"), first);
        // The other object's symbols refer to nothing outside it, and were linked before.
        assert!(layer.references(&symbol(&other, "bump")).is_none());
        tracker.remove().unwrap();
        assert!(layer.references(&symbol(&jd, "first")).is_none(), "forgotten with its tracker");
        es.end_session().unwrap();
    }
}
