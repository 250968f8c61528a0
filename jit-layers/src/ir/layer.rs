//! The IR compile and transform layers: LLVM IR modules become units that compile, on the
//! dispatcher's threads, into objects for the object linking layer.

use std::sync::Arc;

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::TargetMachine;
use jit_core::{
    Error, FxHashSet, Interface, JitDylib, MaterializationResponsibility, MaterializationUnit, ResourceTracker, Result,
    SymbolName,
};

use super::compile::{CompileOptions, canonicalize_locals, compile_with, restrict_to};
use super::module::{IrModule, IrSource, ModuleBuilder, interface_of, parse};
use crate::ObjectLinkingLayer;

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
        IrCompileLayer { shared: Arc::new(IrShared { objects, options }) }
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
                let context = Context::create();
                let parsed = parse(&context, &name, &source)?;
                parsed
                    .verify()
                    .map_err(|e| Error::msg(format!("{name}: invalid module: {}", e.to_string().trim_end())))?;
                (interface_of(session, &parsed), UnitSource::Ir(source))
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
        let compiled = {
            let _span = tracing::debug_span!(target: "orcjit", "compile", module = %name).entered();
            let context = Context::create();
            let module = match source {
                UnitSource::Ir(source) => parse(&context, &name, &source),
                UnitSource::Built(build) => build(&context).map_err(|e| Error::msg(format!("{name}: {e}"))),
            };
            module.and_then(|module| {
                restrict_to(&module, &keep, &discarded);
                let renames = canonicalize_locals(&module);
                let object = compile_with(&module, &name, &shared.options, |module, machine| {
                    transforms.iter().try_for_each(|t| {
                        t.transform(module, machine).map_err(|e| Error::msg(format!("{name}: {}: {e}", t.name())))
                    })
                })?;
                Ok((object, renames))
            })
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
