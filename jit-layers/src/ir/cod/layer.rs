//! The compile-on-demand layer: what adding a module lazily defines, and where.

use std::sync::{Arc, OnceLock, Weak};

use inkwell::context::Context;
use inkwell::llvm_sys;
use inkwell::module::Linkage;
use inkwell::values::AsValueRef;
use jit_core::{
    AliasTarget, DylibId, Error, ExecutorAddr, FxHashMap, FxHashSet, Interface, JitDylib, MatchFlags,
    MaterializationResponsibility, MaterializationUnit, RequiredState, ResourceKey, ResourceManager, ResourceTracker,
    Result, SearchOrder, SymbolDef, SymbolFlags, SymbolLookupFlags, SymbolLookupSet, SymbolName, absolute_symbols,
    aliases, reexports,
};
use parking_lot::Mutex;

use super::super::layer::IrTransformLayer;
use super::super::module::{
    IrModule, IrSource, aliases as module_aliases, has_initializers, interface_of, object_name,
};
use super::super::unit::{IrInput, content_tag};
use super::plan::PartitionPolicy;
use super::rest::{TIER_UP_HOOK, body_name, promoted_name};
use super::units::{CodShared, CodStats, LazyModule, ModuleState, ModuleUnit, TierUp, tier_up_hook};
use crate::lazy::{LazyReexports, LazyStub};

/// Adds IR modules so that each function is compiled the first time it is called.
///
/// Adding a module to dylib `D` defines, in `D`, a lazy stub for each of its functions and a
/// re-export of each of its variables; the bodies and variables go to `D`'s *implementation
/// dylib* (`D.impl`, made on first use), as one unit that reads and splits the module when
/// something in it is first looked up, by the layer's [`PartitionPolicy`]. A stub is its
/// function's only address: every reference, from any module or from the host, goes through
/// it, so function pointers compare equal everywhere. The implementation dylib searches `D`
/// first, then `D`'s link order (as it was when it was made), then itself.
///
/// Modules that cannot be split (built on the compile thread, or with ifuncs) are added
/// whole, eagerly, through the transform layer. Modules with data aliases are compiled whole
/// on first use.
///
/// Contract: the implementation dylib's definitions of a module are tracked by a tracker of
/// their own, removed and transferred with the tracker the module was added with.
#[derive(Clone)]
pub struct CompileOnDemandLayer {
    shared: Arc<CodShared>,
    eager: IrTransformLayer,
    impls: Arc<Mutex<FxHashMap<DylibId, JitDylib>>>,
    trackers: Arc<ImplTrackers>,
}

/// The implementation dylib's tracker for each tracker modules were added with, and the
/// modules added with it that compile in two tiers (kept for as long as their first-tier
/// code may call for the second).
#[derive(Default)]
struct ImplTrackers(Mutex<FxHashMap<ResourceKey, Implementation>>);

struct Implementation {
    tracker: ResourceTracker,
    tiered: Vec<Arc<LazyModule>>,
}

impl ResourceManager for ImplTrackers {
    fn handle_remove(&self, key: ResourceKey) -> Result<()> {
        let tracker = self.0.lock().remove(&key).map(|i| i.tracker);
        match tracker.map(|t| t.remove()) {
            // The session ended: it removed every tracker, the implementation's among them.
            Some(Err(Error::ResourceTrackerDefunct { .. })) | None => Ok(()),
            Some(result) => result,
        }
    }

    fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey) {
        let mut map = self.0.lock();
        if let Some(from) = map.remove(&src) {
            match map.get_mut(&dst) {
                Some(to) => {
                    if let Err(e) = from.tracker.transfer_to(&to.tracker) {
                        tracing::warn!(target: "orcjit", "cannot transfer an implementation tracker: {e}");
                    }
                    to.tiered.extend(from.tiered);
                }
                None => {
                    map.insert(dst, from);
                }
            }
        }
    }
}

impl CompileOnDemandLayer {
    /// A layer compiling through `ir` (its compile layer's settings and cache, its transforms),
    /// with stubs from `stubs`, partitioning by `policy`.
    pub fn new(ir: IrTransformLayer, stubs: LazyReexports, policy: Arc<dyn PartitionPolicy>) -> Self {
        Self::with_tier_up(ir, stubs, policy, None)
    }

    /// As [`new`](Self::new), compiling in two tiers if `tier` is given (see [`TierUp`]).
    pub fn with_tier_up(
        ir: IrTransformLayer,
        stubs: LazyReexports,
        policy: Arc<dyn PartitionPolicy>,
        tier: Option<TierUp>,
    ) -> Self {
        let compile = ir.compile_layer();
        let shared = Arc::new(CodShared {
            ir: compile.shared.clone(),
            transforms: ir.transforms().into(),
            stubs,
            policy,
            stats: Default::default(),
            tier,
            tier_queue: Mutex::default(),
            calls: Default::default(),
            homes: Default::default(),
            want_calls: Default::default(),
            start_hot: Default::default(),
            tiered_bodies: Mutex::default(),
            split_listener: Default::default(),
            calls_listener: Default::default(),
        });
        let trackers = Arc::new(ImplTrackers::default());
        compile.object_layer().session().register_resource_manager(trackers.clone());
        CompileOnDemandLayer { shared, eager: ir, impls: Arc::default(), trackers }
    }

    /// What the layer has done so far: modules split, partitions compiled or found cached.
    pub fn stats(&self) -> CodStats {
        self.shared.stats.snapshot()
    }

    /// Hot partitions queued for their second tier and not started yet (compiled one at a
    /// time, behind demanded work).
    pub fn waiting_for_second_tier(&self) -> usize {
        self.shared.tier_queue.lock().waiting.len()
    }

    /// Makes the partitions holding `bodies` (implementation dylib name, body name) skip the
    /// first tier: compiled once, at the full level, without a call counter. For a profile's
    /// hot functions ([`ReplayProfile`](crate::ReplayProfile)), which would reach the second
    /// tier anyway after running slowly and being compiled twice.
    pub fn start_hot(&self, bodies: impl IntoIterator<Item = (String, String)>) {
        self.shared.start_hot.write().extend(bodies);
    }

    /// The bodies (implementation dylib name, body name) whose partitions reached the second
    /// tier so far.
    pub fn tiered_up_bodies(&self) -> Vec<(String, String)> {
        self.shared.tiered_bodies.lock().clone()
    }

    /// Makes modules read from now on record their call graph, for [`callees`](Self::callees).
    /// Off by default: it costs a walk of every instruction and LLVM's block frequency
    /// estimate of every function (70 to 100 ms of SQLite's half-second read). A module that
    /// compiles in two tiers, with more than one worker, finds it on its second copy at rest,
    /// read up front alongside the first, so that the program's first call into the module
    /// does not wait for it; otherwise the first read finds it.
    pub fn record_call_graph(&self) {
        self.shared.want_calls.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bodies that body `body` of implementation dylib `imp` calls directly, once its
    /// module's call graph is filed (for speculation; empty before, if the module came from
    /// the cache, or without [`record_call_graph`](Self::record_call_graph)).
    pub fn callees(&self, imp: &JitDylib, body: &SymbolName) -> Arc<[SymbolName]> {
        self.filed_callees(imp, body).unwrap_or_else(|| Arc::from([]))
    }

    /// As [`callees`](Self::callees), but `None` while no call graph holding `body` is filed.
    pub fn filed_callees(&self, imp: &JitDylib, body: &SymbolName) -> Option<Arc<[SymbolName]>> {
        self.shared.calls.read().get(&(imp.id(), body.clone())).cloned()
    }

    /// Calls `listener(imp, bodies)` each time a module's call graph is filed: from then on,
    /// [`callees`](Self::callees) answers for `bodies` (every body of the module, in
    /// implementation dylib `imp`). A graph is filed once the module is split (a callee may be
    /// a promoted local, which the split defines) and the copy at rest that found it is read:
    /// the first copy, or the second, read alongside (see
    /// [`record_call_graph`](Self::record_call_graph)). So a first call into the module (heard
    /// before its body is looked up, so before the module is read) comes before. Called on the
    /// thread that filed it, outside the session lock and the module's locks; it should be
    /// quick.
    pub fn set_call_graph_listener(&self, listener: impl Fn(&JitDylib, &[SymbolName]) + Send + Sync + 'static) {
        *self.shared.calls_listener.write() = Some(Box::new(listener));
    }

    /// Calls `listener(imp, names)` each time a module is split, once `names` (every body and
    /// variable of the module, its promoted locals' among them) are defined in implementation
    /// dylib `imp`. A promoted local's name exists only from then on, so whoever looked one up
    /// earlier (a profile replayed from the start) may look again. Called on the splitting
    /// thread, outside the session lock; it should be quick.
    pub fn set_split_listener(&self, listener: impl Fn(&JitDylib, &[SymbolName]) + Send + Sync + 'static) {
        *self.shared.split_listener.write() = Some(Box::new(listener));
    }

    /// Whether the module holding body `body` of implementation dylib `imp` is being read or
    /// compiled right now, so that a compile of `body` would wait for it (false for a body of
    /// a module whose layout is not known yet, or without
    /// [`record_call_graph`](Self::record_call_graph)).
    pub fn compiling(&self, imp: &JitDylib, body: &SymbolName) -> bool {
        let home = self.shared.homes.read().get(&(imp.id(), body.clone())).and_then(Weak::upgrade);
        home.is_some_and(|module| module.busy())
    }

    pub fn policy(&self) -> &Arc<dyn PartitionPolicy> {
        &self.shared.policy
    }

    /// `dylib`'s implementation dylib, made (with its link order) on first use.
    pub fn implementation_dylib(&self, dylib: &JitDylib) -> Result<JitDylib> {
        let mut impls = self.impls.lock();
        if let Some(found) = impls.get(&dylib.id()) {
            return Ok(found.clone());
        }
        let session = dylib.session();
        let imp = session.create_dylib(&format!("{}.impl", dylib.name()))?;
        let mut order = SearchOrder::new().then(dylib, MatchFlags::All);
        for (id, flags) in dylib.link_order().iter() {
            if id != dylib.id() {
                order.push(id, flags);
            }
        }
        order.push(imp.id(), MatchFlags::All);
        imp.set_link_order(order, false);
        self.shared.ir.objects.set_initializer_owner(&imp, dylib);
        if self.shared.tier.is_some() {
            let hook = session.intern(TIER_UP_HOOK.to_str().expect("ASCII"));
            let addr = ExecutorAddr(tier_up_hook as *const () as usize as u64);
            imp.define(absolute_symbols([(hook, SymbolDef::new(addr, SymbolFlags::CALLABLE))]))?;
        }
        impls.insert(dylib.id(), imp.clone());
        Ok(imp)
    }

    /// Compiles the body behind stub `name` of `dylib` now (if this layer made that stub), so
    /// that its errors are returned here rather than ending the process at its first call.
    pub fn compile_now(&self, dylib: &JitDylib, name: &str) -> Result<()> {
        let Some(imp) = self.impls.lock().get(&dylib.id()).cloned() else { return Ok(()) };
        let session = dylib.session();
        let body = session.intern(&body_name(name));
        let mut set = SymbolLookupSet::new();
        set.push(body, SymbolLookupFlags::WeaklyReferenced);
        session.lookup_blocking(&imp.search_order(), set, RequiredState::Ready).map(|_| ())
    }

    pub fn add(&self, dylib: &JitDylib, module: IrModule) -> Result<()> {
        self.add_with_tracker(dylib, module, None)
    }

    pub fn add_with_tracker(
        &self,
        dylib: &JitDylib,
        module: IrModule,
        tracker: Option<&ResourceTracker>,
    ) -> Result<()> {
        let IrModule { name, source } = module;
        if matches!(source, IrSource::Built { .. }) {
            return self.eager.add_with_tracker(dylib, IrModule { name, source }, tracker);
        }
        let context = Context::create();
        let headers = super::super::module::parse_headers(&context, &name, &source)?;
        // SAFETY: reads the head of the module's ifunc list.
        let has_ifuncs = unsafe { !llvm_sys::core::LLVMGetFirstGlobalIFunc(headers.as_mut_ptr()).is_null() };
        if has_ifuncs {
            drop(headers);
            return self.eager.add_with_tracker(dylib, IrModule { name, source }, tracker);
        }
        let session = dylib.session();
        let input = IrInput::from_source(source).ok_or_else(|| Error::msg(format!("{name}: not IR")))?;
        let tag = content_tag(&input);
        let imp = self.implementation_dylib(dylib)?;

        // Aliases: of a function, an alias of its stub; of anything else, the module is
        // compiled whole (a data alias must stay in the object that defines its target).
        let mut function_aliases: FxHashMap<SymbolName, SymbolName> = FxHashMap::default();
        let mut local_aliasees: Vec<(SymbolName, SymbolName)> = Vec::new();
        let mut whole = false;
        for alias in module_aliases(&headers) {
            let Some(alias_name) = object_name(alias.get_name()) else { continue };
            // SAFETY: reads an alias's aliasee, a constant owned by the module.
            let aliasee = unsafe { llvm_sys::core::LLVMAliasGetAliasee(alias.as_value_ref()) };
            // SAFETY: as above; `aliasee` is checked to be a function before its name is read.
            let function = unsafe { !aliasee.is_null() && !llvm_sys::core::LLVMIsAFunction(aliasee).is_null() };
            if !function {
                whole = true;
                continue;
            }
            // SAFETY: `aliasee` is a function of the module.
            let f = unsafe { inkwell::values::GlobalValue::new(aliasee) };
            let Some(target) = object_name(f.get_name()) else { continue };
            let local = matches!(f.get_linkage(), Linkage::Internal | Linkage::Private);
            let target = if local { promoted_name(target, 0, &tag) } else { target.to_string() };
            let target = session.intern(&target);
            if local {
                local_aliasees.push((session.intern(alias_name), target.clone()));
            }
            function_aliases.insert(session.intern(alias_name), target);
        }

        let interface = interface_of(session, &headers);
        let keep: FxHashSet<String> = interface.iter().map(|(n, _)| n.as_str().to_string()).collect();
        let mut facade = FacadeUnit {
            name: name.clone(),
            interface: Interface::new(),
            stubs: Vec::new(),
            data: Vec::new(),
            function_aliases: Vec::new(),
            local_aliases: Vec::new(),
            imp: imp.clone(),
            lazy: self.shared.stubs.clone(),
        };
        let mut implementation = Interface::new();
        for (n, flags) in interface.iter() {
            facade.interface.push(n.clone(), flags);
            let target = function_aliases.get(n);
            match target {
                Some(target) if local_aliasees.iter().any(|(a, _)| a == n) => {
                    facade.local_aliases.push((n.clone(), AliasTarget { aliasee: target.clone(), flags }));
                }
                Some(target) => {
                    facade.function_aliases.push((n.clone(), AliasTarget { aliasee: target.clone(), flags }));
                }
                None if flags.contains(SymbolFlags::CALLABLE) => {
                    let body = session.intern(&body_name(n.as_str()));
                    let mut body_flags = SymbolFlags::CALLABLE;
                    if flags.contains(SymbolFlags::WEAK) {
                        body_flags |= SymbolFlags::WEAK;
                    }
                    implementation.push(body.clone(), body_flags);
                    facade.stubs.push(LazyStub { stub: n.clone(), flags, body_dylib: imp.clone(), body });
                }
                None => {
                    implementation.push(n.clone(), flags);
                    facade.data.push((n.clone(), AliasTarget { aliasee: n.clone(), flags }));
                }
            }
        }
        for (_, target) in &local_aliasees {
            if !implementation.contains(target) {
                implementation.push(target.clone(), SymbolFlags::CALLABLE);
            }
        }
        let init = has_initializers(&headers).then(|| {
            let (init, order) = self.shared.ir.objects.initializer_symbol_in(dylib, &imp, &name);
            implementation.push(init.clone(), SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
            (init, order)
        });
        drop(headers);

        self.shared.stats.added();
        let imp_tracker = self.implementation_tracker(dylib, &imp, tracker);
        let module = Arc::new(LazyModule {
            shared: self.shared.clone(),
            name,
            input,
            stripped: OnceLock::new(),
            tag,
            whole,
            init,
            keep,
            owner: dylib.clone(),
            imp: imp.clone(),
            imp_tracker: imp_tracker.clone(),
            state: Mutex::new(ModuleState::default()),
            first: Mutex::default(),
            second: Mutex::default(),
            found_calls: Mutex::default(),
        });
        dylib.define_boxed(Box::new(facade), tracker)?;
        if self.shared.tier.is_some() {
            let key = tracker.map_or_else(|| dylib.default_tracker().key(), |t| t.key());
            if let Some(i) = self.trackers.0.lock().get_mut(&key) {
                i.tiered.push(module.clone());
            }
        }
        imp.define_boxed(Box::new(ModuleUnit { module, interface: implementation }), Some(&imp_tracker))
    }

    /// The implementation dylib's tracker standing for `tracker` (or `dylib`'s default one).
    fn implementation_tracker(
        &self,
        dylib: &JitDylib,
        imp: &JitDylib,
        tracker: Option<&ResourceTracker>,
    ) -> ResourceTracker {
        let key = tracker.map_or_else(|| dylib.default_tracker().key(), |t| t.key());
        let mut map = self.trackers.0.lock();
        let i = map.entry(key).or_insert_with(|| Implementation { tracker: imp.create_tracker(), tiered: Vec::new() });
        i.tracker.clone()
    }
}

/// What a lazily added module defines in the dylib it is added to: stubs for its functions,
/// re-exports of its variables from the implementation dylib, aliases of stubs for its
/// function aliases. One unit, so that adding it is all or nothing; materializing it hands
/// each kind to a unit of its own.
struct FacadeUnit {
    name: String,
    interface: Interface,
    stubs: Vec<LazyStub>,
    data: Vec<(SymbolName, AliasTarget)>,
    function_aliases: Vec<(SymbolName, AliasTarget)>,
    local_aliases: Vec<(SymbolName, AliasTarget)>,
    imp: JitDylib,
    lazy: LazyReexports,
}

impl MaterializationUnit for FacadeUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let FacadeUnit { stubs, data, function_aliases, local_aliases, imp, lazy, .. } = *self;
        let held = |n: &SymbolName| mr.contains(n);
        let stubs: Vec<LazyStub> = stubs.into_iter().filter(|s| held(&s.stub)).collect();
        let data: Vec<_> = data.into_iter().filter(|(n, _)| held(n)).collect();
        let function_aliases: Vec<_> = function_aliases.into_iter().filter(|(n, _)| held(n)).collect();
        let local_aliases: Vec<_> = local_aliases.into_iter().filter(|(n, _)| held(n)).collect();
        let handed = || -> Result<()> {
            if !stubs.is_empty() {
                mr.replace_boxed(lazy.unit(imp.name(), stubs)?)?;
            }
            if !data.is_empty() {
                mr.replace(reexports(&imp, data, MatchFlags::All))?;
            }
            if !function_aliases.is_empty() {
                mr.replace(aliases(function_aliases))?;
            }
            if !local_aliases.is_empty() {
                mr.replace(reexports(&imp, local_aliases, MatchFlags::All))?;
            }
            Ok(())
        };
        if let Err(e) = handed() {
            mr.fail(e);
        }
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.stubs.retain(|s| &s.stub != name);
        for list in [&mut self.data, &mut self.function_aliases, &mut self.local_aliases] {
            list.retain(|(n, _)| n != name);
        }
    }
}
