//! The front door (LLVM's LLJIT, for orcjit): an [`ObjectJit`] (a session with a thread pool,
//! a main dylib that sees the process, the object linking layer) with the IR layers over the
//! same memory manager, put together by a builder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jit_core::{Error, ExecutionSession, ExecutorAddr, JitDylib, Result};
use jit_mem::MemoryManager;

use crate::ir::{
    CompileOnDemandLayer, CompileOptions, IrCompileLayer, IrModule, IrTransformLayer, PartitionPolicy, PerFunction,
    TierUp, WholeModule,
};
use crate::object_jit::{JitFunction, ObjectJit, ObjectJitBuilder};
use crate::speculate::{ReplayProfile, SpeculationPolicy, Speculator, StaticCallees};
use crate::{InitArgs, LazyReexports, ObjectBytes, ObjectCache, ObjectLinkingLayer};

/// When IR added to a [`Jit`] is compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Laziness {
    /// A module when one of its symbols is first looked up (the default).
    #[default]
    None,
    /// A module when one of its functions is first called (behind lazy stubs).
    Module,
    /// Each function when it is first called.
    Function,
}

/// Builds a [`Jit`].
#[must_use]
pub struct JitBuilder {
    base: ObjectJitBuilder,
    compile: CompileOptions,
    pipeline: Option<String>,
    cache: Option<(PathBuf, u64)>,
    laziness: Laziness,
    policy: Option<Arc<dyn PartitionPolicy>>,
    tier: Option<TierUp>,
    speculation: Speculation,
    record_first_calls: bool,
}

/// What a lazy JIT compiles ahead (see [`crate::speculate`]).
#[derive(Clone, Default)]
pub enum Speculation {
    /// Nothing: each function when first called.
    #[default]
    None,
    /// The direct callees of each function first called ([`StaticCallees`], 16 at most).
    Static,
    /// A recorded first-call order, from the start ([`ReplayProfile`]).
    Profile(Arc<ReplayProfile>),
    /// A policy of one's own.
    Custom(Arc<dyn SpeculationPolicy>),
}

/// The object cache's size cap unless told otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

impl JitBuilder {
    /// Worker threads for compiling and linking (default: one per CPU).
    pub fn threads(mut self, n: usize) -> Self {
        self.base = self.base.threads(n);
        self
    }

    /// The code generator's optimization level, 0..=3 (default 2), as lli's `-O`.
    pub fn opt_level(mut self, level: u8) -> Self {
        self.compile.opt_level = level.min(3);
        self
    }

    /// An IR pipeline run on every module before code generation, e.g. `default<O2>`.
    pub fn ir_pipeline(mut self, pipeline: &str) -> Self {
        self.pipeline = Some(pipeline.to_string());
        self
    }

    /// Whether the main dylib sees the symbols of this process (default: yes).
    pub fn process_symbols(mut self, yes: bool) -> Self {
        self.base = self.base.process_symbols(yes);
        self
    }

    /// Loads a shared library whose symbols the main dylib sees (searched before the process's).
    pub fn dlopen(mut self, library: &str) -> Self {
        self.base = self.base.dlopen(library);
        self
    }

    /// A static library whose members the main dylib links when it needs a symbol they define
    /// (see [`ObjectJitBuilder::static_library`](crate::ObjectJitBuilder::static_library)).
    pub fn static_library(mut self, library: crate::StaticLibrary) -> Self {
        self.base = self.base.static_library(library);
        self
    }

    /// Keeps compiled objects in `dir` (created if needed), shared safely with other threads
    /// and processes, capped at [`DEFAULT_CACHE_BYTES`] (least recently used go first).
    pub fn cache(self, dir: impl Into<PathBuf>) -> Self {
        self.cache_with_limit(dir, DEFAULT_CACHE_BYTES)
    }

    pub fn cache_with_limit(mut self, dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.cache = Some((dir.into(), max_bytes));
        self
    }

    /// When added IR is compiled (default: [`Laziness::None`], a module when first looked up).
    pub fn lazy(mut self, laziness: Laziness) -> Self {
        self.laziness = laziness;
        self
    }

    /// Lazy compilation with a partition policy of one's own (see [`PartitionPolicy`]).
    pub fn partition_policy(mut self, policy: Arc<dyn PartitionPolicy>) -> Self {
        self.laziness = Laziness::Function;
        self.policy = Some(policy);
        self
    }

    /// Lazy code in two tiers: a quick first compile, and hot partitions compiled again at
    /// the JIT's level in the background (see [`TierUp`]; default: off, one compile).
    pub fn tier_up(mut self, tier: Option<TierUp>) -> Self {
        self.tier = tier;
        self
    }

    /// What a lazy JIT compiles ahead of the program (default: nothing).
    pub fn speculation(mut self, speculation: Speculation) -> Self {
        self.speculation = speculation;
        self
    }

    /// Records the order of first calls (a lazy JIT's; see [`Jit::speculator`]).
    pub fn record_first_calls(mut self, yes: bool) -> Self {
        self.record_first_calls = yes;
        self
    }

    /// The memory manager to link into (default: jit-mem's default manager).
    pub fn memory_manager(mut self, memory: Arc<dyn MemoryManager>) -> Self {
        self.base = self.base.memory_manager(memory);
        self
    }

    /// Builds the JIT. If a step fails (a cache directory that cannot be opened, say), the
    /// session it had started is ended, so its threads do not outlive the error.
    pub fn build(mut self) -> Result<Jit> {
        let base = std::mem::take(&mut self.base).build()?;
        let session = base.session().clone();
        self.layers_over(base).inspect_err(|_| {
            let _ = session.end_session();
        })
    }

    /// The IR layers (and, if lazy, the stubs and the speculator) over `base`.
    fn layers_over(self, base: ObjectJit) -> Result<Jit> {
        let (objects, memory) = (base.object_layer().clone(), base.memory_manager().clone());
        let compile = match self.cache {
            Some((dir, max)) => {
                let cache = ObjectCache::open(&dir, max).map_err(Error::other)?;
                IrCompileLayer::with_cache(objects, self.compile, cache)
            }
            None => IrCompileLayer::new(objects, self.compile),
        };
        let mut ir = IrTransformLayer::new(compile);
        if let Some(pipeline) = &self.pipeline {
            ir = ir.with_pipeline(pipeline);
        }
        let session = base.session().clone();
        let (stubs, lazy) = match self.laziness {
            Laziness::None => (None, None),
            laziness => {
                let stubs = LazyReexports::new(&session, memory.clone())?;
                // So that installing a signal handler compiles what it can call (`signals`).
                base.object_layer().record_references();
                let policy: Arc<dyn PartitionPolicy> = match (laziness, self.policy) {
                    (_, Some(policy)) => policy,
                    (Laziness::Module, None) => Arc::new(WholeModule),
                    _ => Arc::new(PerFunction),
                };
                let lazy = CompileOnDemandLayer::with_tier_up(ir.clone(), stubs.clone(), policy, self.tier);
                (Some(stubs), Some(lazy))
            }
        };
        let policy: Option<Arc<dyn SpeculationPolicy>> = match (self.speculation, &lazy) {
            (_, None) | (Speculation::None, _) => None,
            (Speculation::Static, Some(layer)) => {
                layer.record_call_graph();
                let layer = layer.clone();
                Some(Arc::new(StaticCallees::new(move |dylib, body| layer.filed_callees(dylib, body), 16)))
            }
            (Speculation::Profile(profile), Some(layer)) => {
                // What the recording run found hot skips the first tier.
                layer.start_hot(profile.hot().map(|(d, b)| (d.to_string(), b.to_string())));
                Some(profile)
            }
            (Speculation::Custom(policy), Some(layer)) => {
                // A policy of one's own may read `CompileOnDemandLayer::callees`.
                layer.record_call_graph();
                Some(policy)
            }
        };
        let speculator = match &stubs {
            Some(stubs) if policy.is_some() || self.record_first_calls => Some(Speculator::install(stubs, policy)),
            _ => None,
        };
        if let (Some(speculator), Some(layer)) = (&speculator, &lazy) {
            let hot = layer.clone();
            speculator.set_hot_bodies(move || hot.tiered_up_bodies());
            let busy = layer.clone();
            speculator.set_busy_check(move |dylib, body| busy.compiling(dylib, body));
            if speculator.policy().is_some() {
                // Guesses may name promoted locals, which exist only once their module is split.
                let heard = Arc::downgrade(speculator);
                layer.set_split_listener(move |imp, names| {
                    if let Some(speculator) = heard.upgrade() {
                        speculator.names_defined(imp, names);
                    }
                });
                // A first call comes before its module's call graph is filed (the module is read
                // after it, and the graph may come from a second read alongside).
                let heard = Arc::downgrade(speculator);
                layer.set_call_graph_listener(move |imp, bodies| {
                    if let Some(speculator) = heard.upgrade() {
                        speculator.call_graph_filed(imp, bodies);
                    }
                });
            }
        }
        // Static libraries' bitcode members (an -flto build's) are compiled as the modules are.
        let sink: crate::BitcodeSink = match &lazy {
            Some(lazy) => {
                let lazy = lazy.clone();
                Arc::new(move |dylib, name, bytes| lazy.add(dylib, IrModule::bitcode(name, bytes)))
            }
            None => {
                let ir = ir.clone();
                Arc::new(move |dylib, name, bytes| ir.add(dylib, IrModule::bitcode(name, bytes)))
            }
        };
        base.set_bitcode_sink(&sink);
        Ok(Jit { base, ir, lazy, stubs, speculator })
    }
}

/// A JIT: add IR and objects, look symbols up, run `main`.
///
/// Contract: everything added goes to the main dylib unless a method says otherwise; nothing is
/// compiled or linked before a lookup needs it. Dropping the `Jit` does not end the session
/// (handles may outlive it); [`end`](Self::end) does, freeing all JIT'd memory.
pub struct Jit {
    base: ObjectJit,
    ir: IrTransformLayer,
    lazy: Option<CompileOnDemandLayer>,
    stubs: Option<LazyReexports>,
    speculator: Option<Arc<Speculator>>,
}

impl Jit {
    pub fn builder() -> JitBuilder {
        JitBuilder {
            base: ObjectJit::builder(),
            compile: CompileOptions::default(),
            pipeline: None,
            cache: None,
            laziness: Laziness::None,
            policy: None,
            tier: None,
            speculation: Speculation::None,
            record_first_calls: false,
        }
    }

    pub fn session(&self) -> &ExecutionSession {
        self.base.session()
    }

    pub fn main_dylib(&self) -> &JitDylib {
        self.base.main_dylib()
    }

    pub fn object_layer(&self) -> &ObjectLinkingLayer {
        self.base.object_layer()
    }

    /// The object half of this JIT: what it links, without the IR layers.
    pub fn object_jit(&self) -> &ObjectJit {
        &self.base
    }

    pub fn ir_layer(&self) -> &IrTransformLayer {
        &self.ir
    }

    pub fn memory_manager(&self) -> &Arc<dyn MemoryManager> {
        self.base.memory_manager()
    }

    /// The compile-on-demand layer, if the JIT is lazy.
    pub fn lazy_layer(&self) -> Option<&CompileOnDemandLayer> {
        self.lazy.as_ref()
    }

    /// The speculator, if the JIT is lazy and speculates or records first calls.
    pub fn speculator(&self) -> Option<&Arc<Speculator>> {
        self.speculator.as_ref()
    }

    /// The lazy stubs' manager, if the JIT is lazy (to redirect stubs, or watch first calls).
    pub fn lazy_reexports(&self) -> Option<&LazyReexports> {
        self.stubs.as_ref()
    }

    /// The object cache, if the builder was given one.
    pub fn cache(&self) -> Option<&ObjectCache> {
        self.ir.compile_layer().cache()
    }

    /// Adds an IR module to the main dylib (lazily if the JIT is lazy).
    pub fn add_ir(&self, module: IrModule) -> Result<()> {
        match &self.lazy {
            Some(lazy) => lazy.add(self.main_dylib(), module),
            None => self.ir.add(self.main_dylib(), module),
        }
    }

    /// Adds a program's IR modules and relocatable objects to the main dylib, as a static link
    /// of them would bind them: where the `__start_X` / `__stop_X` of one enclose section `X`
    /// of others (a registration table, such as a C plugin registry or Rust's `linkme`, with
    /// entries in several files), or where the code of one reaches thread-local variables of
    /// another with the local-dynamic model (hidden `extern __thread` variables; see
    /// [`jit_link::link_ties`]), those are linked together (transitively, in the order given,
    /// modules before objects): modules into one module, objects into one graph, and a module
    /// with objects into one graph with its object (compiled whole, not lazily; see
    /// [`IrTransformLayer::add_with_objects`]). Added apart, each would enclose its own part of
    /// the section only (lli-19 finds no entry at all). A static library's member that defines
    /// such variables joins the group of what reaches them (see [`ObjectJit::add_objects`]).
    /// Everything else is added as
    /// [`add_ir`](Self::add_ir) and [`add_objects`](Self::add_objects) add it. Initializers
    /// run in that order: each module's at its place (with those of the objects of its group),
    /// then each object's at its own.
    pub fn add_program(&self, modules: Vec<IrModule>, objects: Vec<(String, ObjectBytes)>) -> Result<()> {
        if modules.len() + objects.len() < 2 && !self.base.has_static_libraries() {
            modules.into_iter().try_for_each(|m| self.add_ir(m))?;
            return self.add_objects(objects);
        }
        let mut ties = crate::ir::link_ties(&modules)?;
        ties.extend(objects.iter().map(|(_, bytes)| jit_link::link_ties(bytes)));
        // The static libraries' members that must share a graph with some of them are pulled
        // now, to join its group (as the last objects, in the order they are found).
        let mut objects = objects;
        for (object, object_ties) in self.base.tied_members(&ties) {
            objects.push(object);
            ties.push(object_ties);
        }
        let first_object = modules.len();
        let mut modules: Vec<Option<IrModule>> = modules.into_iter().map(Some).collect();
        let mut objects: Vec<Option<(String, ObjectBytes)>> = objects.into_iter().map(Some).collect();
        // Groups come in order of their first member: those with a module first, each module
        // taking its place in link order as it is added.
        for group in jit_link::enclosure_groups(&ties) {
            let (ms, os): (Vec<usize>, Vec<usize>) = group.into_iter().partition(|&i| i < first_object);
            if ms.is_empty() {
                continue;
            }
            let module = crate::ir::linked(ms.into_iter().filter_map(|i| modules[i].take()).collect())?;
            let group_objects: Vec<(String, ObjectBytes)> =
                os.into_iter().filter_map(|i| objects[i - first_object].take()).collect();
            if group_objects.is_empty() {
                self.add_ir(module)?;
            } else {
                self.ir.add_with_objects(self.main_dylib(), module, group_objects, None)?;
            }
        }
        // Then the objects of no module's group, after every module in link order, grouped
        // among themselves as `add_objects` groups them.
        let (rest, rest_ties): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .zip(ties.drain(first_object..))
            .filter_map(|(object, ties)| Some((object?, ties)))
            .unzip();
        self.base.add_objects_tied(rest, rest_ties)
    }

    /// Adds a `.bc` or `.ll` file to the main dylib.
    pub fn add_ir_file(&self, path: impl AsRef<Path>) -> Result<()> {
        self.add_ir(IrModule::from_file(path)?)
    }

    /// Adds a relocatable object to the main dylib.
    pub fn add_object(&self, name: &str, bytes: impl Into<ObjectBytes>) -> Result<()> {
        self.base.add_object(name, bytes)
    }

    /// Adds relocatable objects to the main dylib as a static link takes them (see
    /// [`crate::ObjectLinkingLayer::add_objects`]).
    pub fn add_objects(&self, objects: Vec<(String, ObjectBytes)>) -> Result<()> {
        self.base.add_objects(objects)
    }

    pub fn add_object_file(&self, path: impl AsRef<Path>) -> Result<()> {
        self.base.add_object_file(path)
    }

    /// The address of `name` in the main dylib, once it (and all it reaches) is Ready.
    pub fn lookup_address(&self, name: &str) -> Result<ExecutorAddr> {
        self.base.lookup_address(name)
    }

    /// `name` as a typed function pointer (see [`ObjectJit::lookup`]).
    pub fn lookup<F: JitFunction>(&self, name: &str) -> Result<F> {
        self.base.lookup(name)
    }

    /// Links what has static constructors and runs those not run yet (see
    /// [`ObjectLinkingLayer::initialize`]).
    pub fn initialize(&self, args: InitArgs) -> Result<()> {
        self.base.initialize(args)
    }

    /// Runs finalizers, `atexit` handlers and static destructors of what was initialized.
    pub fn deinitialize(&self) -> Result<()> {
        self.base.deinitialize()
    }

    /// [`ObjectJit::run_main`], with the speculator started and, in a lazy JIT, `main`
    /// compiled first (so that errors in its code are reported here, not by ending the
    /// process).
    pub fn run_main(&self, argv0: &str, args: &[String]) -> Result<i32> {
        // Look main up first: a program that does not link fails before anything starts.
        let main = self.lookup_address("main")?;
        if let Some(speculator) = &self.speculator {
            speculator.start();
        }
        if let Some(lazy) = &self.lazy {
            lazy.compile_now(self.main_dylib(), "main")?;
        }
        self.base.run_main_at(main, argv0, args)
    }

    /// Ends the session: fails what is pending and frees all JIT'd memory (running the
    /// finalizers of what was initialized).
    pub fn end(self) -> Result<()> {
        self.base.end()
    }
}
