//! The IR compile and transform layers: LLVM IR modules become units that compile, on the
//! dispatcher's threads, into objects for the object linking layer.

use std::sync::Arc;

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::TargetMachine;
use jit_core::{
    Error, FxHashSet, Interface, JitDylib, MaterializationResponsibility, MaterializationUnit, ResourceTracker, Result,
    SymbolFlags, SymbolName,
};

use super::compile::{CompileOptions, cache_key, canonicalize_locals, compile_with, restrict_to, settings_id};
use super::module::{IrModule, IrSource, ModuleBuilder, has_initializers, interface_of, parse, parse_headers};
use crate::{CacheKey, CacheKeyBuilder, ObjectCache, ObjectLinkingLayer};

/// A change to a module before it is compiled (an optimization pipeline, instrumentation...).
///
/// Contract: runs on the compile thread, after the module was made to define exactly the
/// symbols its responsibility holds; it must not remove or rename those. `name` identifies the
/// transform in object cache keys: two transforms with one name must do the same thing.
pub trait IrTransform: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn transform(&self, module: &Module<'_>, machine: &TargetMachine) -> Result<()>;
}

/// An LLVM new-pass-manager pipeline, e.g. `default<O2>`.
pub struct PassPipeline(pub String);

impl IrTransform for PassPipeline {
    fn name(&self) -> &str {
        &self.0
    }
    fn transform(&self, module: &Module<'_>, machine: &TargetMachine) -> Result<()> {
        module
            .run_passes(&self.0, machine, inkwell::passes::PassBuilderOptions::create())
            .map_err(|e| Error::msg(format!("pipeline '{}': {e}", self.0)))
    }
}

pub(crate) struct IrShared {
    pub(crate) objects: ObjectLinkingLayer,
    pub(crate) options: CompileOptions,
    pub(crate) cache: Option<ObjectCache>,
}

/// Compiles LLVM IR modules into objects and links them through an [`ObjectLinkingLayer`].
///
/// Contract: `add` reads the module's interface at once (a module that does not parse, or
/// does not verify, is an error then, with LLVM's diagnostic) and defines those symbols; the
/// module compiles when one is first looked up, on a dispatcher thread, in a context of its
/// own, with that thread's target machine. A compile failure fails the symbols with LLVM's
/// message and leaves the session working for other modules.
#[derive(Clone)]
pub struct IrCompileLayer {
    pub(crate) shared: Arc<IrShared>,
}

impl IrCompileLayer {
    pub fn new(objects: ObjectLinkingLayer, options: CompileOptions) -> Self {
        IrCompileLayer { shared: Arc::new(IrShared { objects, options, cache: None }) }
    }

    /// A layer that looks every module up in `cache` before compiling it, and stores what it
    /// compiles. The key is the module's bitcode (with local names made canonical, so modules
    /// differing only in local names share an entry) and everything else that decides the
    /// object: LLVM version, target triple, CPU, features, code generation level, code and
    /// relocation model, and the names of the transforms.
    pub fn with_cache(objects: ObjectLinkingLayer, options: CompileOptions, cache: ObjectCache) -> Self {
        IrCompileLayer { shared: Arc::new(IrShared { objects, options, cache: Some(cache) }) }
    }

    pub fn cache(&self) -> Option<&ObjectCache> {
        self.shared.cache.as_ref()
    }

    pub fn options(&self) -> &CompileOptions {
        &self.shared.options
    }

    pub fn object_layer(&self) -> &ObjectLinkingLayer {
        &self.shared.objects
    }

    /// Adds `module` to `dylib` (default tracker), compiled as is.
    pub fn add(&self, dylib: &JitDylib, module: IrModule) -> Result<()> {
        self.add_transformed(dylib, module, None, Arc::from([]))
    }

    pub(crate) fn add_transformed(
        &self,
        dylib: &JitDylib,
        module: IrModule,
        tracker: Option<&ResourceTracker>,
        transforms: Arc<[Arc<dyn IrTransform>]>,
    ) -> Result<()> {
        let session = dylib.session();
        let IrModule { name, source } = module;
        let (interface, source) = match source {
            IrSource::Built { interface, build } => (interface, UnitSource::Built(build)),
            source => {
                // Only the globals' headers are read now: bodies are read, and the module
                // verified, when it is compiled.
                let context = Context::create();
                let parsed = parse_headers(&context, &name, &source)?;
                let mut interface = interface_of(session, &parsed);
                if has_initializers(&parsed) {
                    let init = self.shared.objects.initializer_symbol(dylib, &name);
                    interface.push(init, SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
                }
                (interface, UnitSource::Ir(source))
            }
        };
        let unit = IrUnit {
            shared: self.shared.clone(),
            name,
            source,
            interface,
            transforms,
            discarded: FxHashSet::default(),
        };
        dylib.define_boxed(Box::new(unit), tracker)
    }
}

/// Runs transforms (an optimization pipeline, user transforms) on modules before the compile
/// layer compiles them.
#[derive(Clone)]
pub struct IrTransformLayer {
    compile: IrCompileLayer,
    transforms: Vec<Arc<dyn IrTransform>>,
}

impl IrTransformLayer {
    pub fn new(compile: IrCompileLayer) -> Self {
        IrTransformLayer { compile, transforms: Vec::new() }
    }

    /// Adds a standard pipeline: `default<O0>` .. `default<O3>`, or any pipeline text.
    pub fn with_pipeline(self, pipeline: &str) -> Self {
        self.with_transform(Arc::new(PassPipeline(pipeline.to_string())))
    }

    /// Adds a transform, run after those added before it.
    pub fn with_transform(mut self, transform: Arc<dyn IrTransform>) -> Self {
        self.transforms.push(transform);
        self
    }

    pub fn compile_layer(&self) -> &IrCompileLayer {
        &self.compile
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
        self.compile.add_transformed(dylib, module, tracker, self.transforms.clone().into())
    }
}

enum UnitSource {
    Ir(IrSource),
    Built(ModuleBuilder),
}

/// A module waiting to be compiled.
struct IrUnit {
    shared: Arc<IrShared>,
    name: String,
    source: UnitSource,
    interface: Interface,
    transforms: Arc<[Arc<dyn IrTransform>]>,
    discarded: FxHashSet<String>,
}

impl MaterializationUnit for IrUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        let IrUnit { shared, name, source, transforms, discarded, .. } = *self;
        let keep: FxHashSet<String> = mr.symbols().map(|(n, _)| n.as_str().to_string()).collect();
        let plan =
            CompilePlan { shared: &shared, name: &name, transforms: &transforms, keep: &keep, discarded: &discarded };
        let compiled = {
            let _span = tracing::debug_span!(target: "orcjit", "compile", module = %name).entered();
            plan.object(source)
        };
        match compiled {
            Ok((object, renames)) => shared.objects.emit_renamed(mr, &name, &object, renames),
            Err(e) => mr.fail(e),
        }
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.discarded.insert(name.as_str().to_string());
    }
}

/// Local names to restore on the object: `(canonical, original)`.
type Renames = Vec<(String, String)>;

/// How one unit's object is obtained.
struct CompilePlan<'a> {
    shared: &'a IrShared,
    name: &'a str,
    transforms: &'a [Arc<dyn IrTransform>],
    keep: &'a FxHashSet<String>,
    discarded: &'a FxHashSet<String>,
}

impl CompilePlan<'_> {
    /// The object and the local names to restore, from the cache when it can be.
    ///
    /// The cache is read at two levels. The *input* key covers the module exactly as given
    /// (bytes, settings, what to keep and discard); its entry is a record naming the canonical
    /// object and the local names, so a warm run does not read the module at all. The
    /// *canonical* key covers the module after its local names were made canonical; its entry
    /// is the object, shared by modules that differ only in local names.
    fn object(&self, source: UnitSource) -> Result<(Vec<u8>, Renames)> {
        let cache = self.shared.cache.as_ref();
        let input = match (cache, &source) {
            (Some(cache), UnitSource::Ir(ir)) => Some((cache, self.input_key(ir))),
            _ => None,
        };
        if let Some((cache, key)) = &input {
            if let Some(found) = cache.get(key).and_then(|record| decode_record(&record)) {
                let (canonical, renames) = found;
                if let Some(object) = cache.get(&canonical) {
                    return Ok((object, renames));
                }
            }
        }
        let (object, renames, canonical) = self.compile(source)?;
        if let (Some((cache, key)), Some(canonical)) = (&input, canonical) {
            self.store(cache, key, &encode_record(&canonical, &renames));
        }
        Ok((object, renames))
    }

    /// Reads, restricts and canonicalizes the module; takes its object from the cache under
    /// the canonical key, or verifies, transforms and compiles it (and stores it).
    fn compile(&self, source: UnitSource) -> Result<(Vec<u8>, Renames, Option<CacheKey>)> {
        let name = self.name;
        let context = Context::create();
        let module = match source {
            UnitSource::Ir(source) => parse(&context, name, &source)?,
            UnitSource::Built(build) => build(&context).map_err(|e| Error::msg(format!("{name}: {e}")))?,
        };
        restrict_to(&module, self.keep, self.discarded);
        let renames = canonicalize_locals(&module);
        let names: Vec<&str> = self.transforms.iter().map(|t| t.name()).collect();
        let cache = self.shared.cache.as_ref();
        let canonical = cache.map(|_| cache_key(&module, &self.shared.options, &names));
        if let (Some(cache), Some(key)) = (cache, &canonical) {
            if let Some(object) = cache.get(key) {
                return Ok((object, renames, canonical));
            }
        }
        module.verify().map_err(|e| Error::msg(format!("{name}: invalid module: {}", e.to_string().trim_end())))?;
        let object = compile_with(&module, name, &self.shared.options, |module, machine| {
            self.transforms.iter().try_for_each(|t| {
                t.transform(module, machine).map_err(|e| Error::msg(format!("{name}: {}: {e}", t.name())))
            })
        })?;
        if let (Some(cache), Some(key)) = (cache, &canonical) {
            self.store(cache, key, &object);
        }
        Ok((object, renames, canonical))
    }

    fn input_key(&self, source: &IrSource) -> CacheKey {
        let (kind, bytes): (&str, &[u8]) = match source {
            IrSource::Bitcode(b) => ("bitcode", b),
            IrSource::Text(t) => ("text", t),
            IrSource::Built { .. } => ("built", &[]),
        };
        let sorted = |set: &FxHashSet<String>| {
            let mut names: Vec<&str> = set.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.join("\n")
        };
        let mut key = CacheKeyBuilder::new()
            .part("input record", b"v1")
            .part("settings", settings_id(&self.shared.options).as_bytes());
        for t in self.transforms {
            key = key.part("transform", t.name().as_bytes());
        }
        key.part("keep", sorted(self.keep).as_bytes())
            .part("discard", sorted(self.discarded).as_bytes())
            .part(kind, bytes)
            .finish()
    }

    fn store(&self, cache: &ObjectCache, key: &CacheKey, bytes: &[u8]) {
        // A cache that cannot store is a slower JIT, not a broken one.
        if let Err(e) = cache.put(key, bytes) {
            tracing::warn!(target: "orcjit", module = %self.name, "not cached: {e}");
        }
    }
}

const RECORD_MAGIC: &[u8; 8] = b"ORCJITIR";

/// magic, canonical key, then for each rename: u32 length + bytes of each name (little-endian).
fn encode_record(canonical: &CacheKey, renames: &Renames) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + renames.len() * 32);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(canonical.as_bytes());
    for (from, to) in renames {
        for s in [from, to] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// The inverse of `encode_record`; `None` for anything malformed (then it is a miss).
fn decode_record(bytes: &[u8]) -> Option<(CacheKey, Renames)> {
    let rest = bytes.strip_prefix(RECORD_MAGIC)?;
    let (key, mut rest) = rest.split_at_checked(CacheKey::LEN)?;
    let canonical = CacheKey::from_bytes(key.try_into().ok()?);
    fn take(rest: &mut &[u8]) -> Option<String> {
        let (len, tail) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (s, tail) = tail.split_at_checked(len)?;
        *rest = tail;
        String::from_utf8(s.to_vec()).ok()
    }
    let mut renames = Vec::new();
    while !rest.is_empty() {
        renames.push((take(&mut rest)?, take(&mut rest)?));
    }
    Some((canonical, renames))
}
