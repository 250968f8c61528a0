//! The units of a module added lazily: the module's own unit in the implementation dylib
//! (every body and variable, until something is looked up), the partitions it hands back,
//! and where each partition's object comes from (the cache, or the module at rest).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jit_core::{
    Error, FxHashSet, Interface, JitDylib, MaterializationResponsibility, MaterializationUnit, Result, SymbolFlags,
    SymbolName, Task, TaskKind,
};
use parking_lot::Mutex;

use super::super::compile::settings_id;
use super::super::layer::{IrShared, IrTransform};
use super::super::unit::IrInput;
use super::super::wire::{Reader, put_strings};
use super::plan::PartitionPolicy;
use super::rest::{Layout, Preparation, RestingModule, body_name};
use crate::lazy::{LazyReexports, LazyStub};
use crate::{CacheKey, CacheKeyBuilder};

/// What the layer's units share.
pub(crate) struct CodShared {
    pub ir: Arc<IrShared>,
    pub transforms: Arc<[Arc<dyn IrTransform>]>,
    pub stubs: LazyReexports,
    pub policy: Arc<dyn PartitionPolicy>,
    pub stats: Counters,
}

/// What the layer has done, counted as it happens.
#[derive(Default)]
pub(crate) struct Counters {
    modules_added: AtomicU64,
    modules_prepared: AtomicU64,
    partitions_compiled: AtomicU64,
    partitions_from_cache: AtomicU64,
}

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
}

impl std::fmt::Display for CodStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} modules added lazily, {} prepared, {} partitions compiled, {} from the cache",
            self.modules_added, self.modules_prepared, self.partitions_compiled, self.partitions_from_cache
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
        }
    }
}

/// One module added lazily, shared by its units.
pub(crate) struct LazyModule {
    pub shared: Arc<CodShared>,
    pub name: String,
    pub input: IrInput,
    /// Names the module's locals are promoted with (see `rest::promoted_name`).
    pub tag: String,
    /// One partition whatever the policy (the module has data aliases).
    pub whole: bool,
    /// The initializer symbol and the link order reserved for partition 0, if the module has
    /// static constructors or destructors.
    pub init: Option<(SymbolName, u64)>,
    /// Object names of the module's definitions the dylibs kept.
    pub keep: FxHashSet<String>,
    pub state: Mutex<ModuleState>,
}

#[derive(Default)]
pub(crate) struct ModuleState {
    /// Object names (of the module, before bodies were renamed) whose definitions lost.
    discarded: FxHashSet<String>,
    /// Set when the module is first looked up.
    input_key: Option<Option<CacheKey>>,
    layout: Option<Arc<Layout>>,
    resting: Option<RestingModule>,
    /// Partitions whose objects were made or found; when all are, the module at rest goes.
    done: Vec<bool>,
}

impl LazyModule {
    fn cache(&self) -> Option<&crate::ObjectCache> {
        self.shared.ir.cache.as_ref()
    }

    /// The module's layout: from the cache's record, or by preparing the module (which is kept,
    /// at rest, for the partitions to compile).
    fn layout(&self) -> Result<Arc<Layout>> {
        let mut st = self.state.lock();
        if let Some(layout) = &st.layout {
            return Ok(layout.clone());
        }
        let key = self.input_key(&mut st);
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            if let Some(layout) = cache.get(key).and_then(|r| decode_layout(&r)) {
                let layout = Arc::new(layout);
                st.done = vec![false; layout.parts.len()];
                st.layout = Some(layout.clone());
                return Ok(layout);
            }
        }
        let (resting, layout) = self.prepare(&st.discarded)?;
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            self.store(cache, key, &encode_layout(&layout));
        }
        let layout = Arc::new(layout);
        st.done = vec![false; layout.parts.len()];
        st.layout = Some(layout.clone());
        st.resting = Some(resting);
        Ok(layout)
    }

    fn prepare(&self, discarded: &FxHashSet<String>) -> Result<(RestingModule, Layout)> {
        let _span = tracing::debug_span!(target: "orcjit", "prepare", module = %self.name).entered();
        self.shared.stats.modules_prepared.fetch_add(1, Ordering::Relaxed);
        RestingModule::prepare(&Preparation {
            name: &self.name,
            source: &self.input.source(),
            keep: &self.keep,
            discard: discarded,
            transforms: &self.shared.transforms,
            options: &self.shared.ir.options,
            tag: &self.tag,
            policy: &*self.shared.policy,
            whole: self.whole,
        })
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
        match self.part_object(part) {
            Ok(object) => {
                let objects = &self.shared.ir.objects;
                match (part, &self.init) {
                    (0, Some((_, order))) => objects.emit_in_order(mr, &name, &object, Vec::new(), *order),
                    _ => objects.emit(mr, &name, &object),
                }
            }
            Err(e) => mr.fail(e),
        }
    }

    fn part_object(&self, part: usize) -> Result<Vec<u8>> {
        let mut st = self.state.lock();
        let key = self.input_key(&mut st).map(|input| part_key(&input, part));
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            if let Some(object) = cache.get(key) {
                self.shared.stats.partitions_from_cache.fetch_add(1, Ordering::Relaxed);
                self.finished(&mut st, part);
                return Ok(object);
            }
        }
        if st.resting.is_none() {
            let (resting, layout) = self.prepare(&st.discarded)?;
            if st.layout.as_deref().is_some_and(|l| *l != layout) {
                return Err(Error::msg(format!(
                    "{}: the cached layout of this module does not match the module (corrupt cache?)",
                    self.name
                )));
            }
            st.resting = Some(resting);
        }
        let resting = st.resting.as_mut().expect("prepared above");
        let object = resting.compile(part, &self.shared.ir.options);
        self.shared.stats.partitions_compiled.fetch_add(1, Ordering::Relaxed);
        self.finished(&mut st, part);
        drop(st);
        let object = object?;
        if let (Some(cache), Some(key)) = (self.cache(), &key) {
            self.store(cache, key, &object);
        }
        Ok(object)
    }

    /// Notes partition `part` done; the module at rest goes once every partition is.
    fn finished(&self, st: &mut ModuleState, part: usize) {
        if let Some(done) = st.done.get_mut(part) {
            *done = true;
        }
        if st.done.iter().all(|&d| d) {
            st.resting = None;
        }
    }
}

/// The cache key of partition `part` of the module with input key `input`.
fn part_key(input: &CacheKey, part: usize) -> CacheKey {
    CacheKeyBuilder::new()
        .part("lazy partition of", input.as_bytes())
        .part("index", &(part as u64).to_le_bytes())
        .finish()
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
        match split_responsibility(&module, &layout, &mut mr) {
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
            let held = mr.symbol_flags();
            let interface = names.iter().map(|n| (n.clone(), held.get(n).copied().unwrap_or_default())).collect();
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
