//! The IR compile and transform layers: LLVM IR modules become units that compile, on the
//! dispatcher's threads, into objects for the object linking layer.

use std::sync::Arc;

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::TargetMachine;
use jit_core::{Error, FxHashMap, FxHashSet, Interface, JitDylib, ResourceTracker, Result, SymbolFlags, SymbolName};

use super::compile::CompileOptions;
use super::module::{IrModule, IrSource, has_initializers, interface_of, parse_headers};
use super::unit::{IrInput, IrUnit, UnitSource};
use crate::object_layer::objects_interface;
use crate::{ObjectBytes, ObjectCache, ObjectLinkingLayer};

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
        self.add_transformed(dylib, module, Vec::new(), None, Arc::from([]))
    }

    /// Adds `module` with relocatable `objects` to link in the same graph as its object (see
    /// [`ObjectLinkingLayer::emit_with_objects`]); one unit defines the symbols of all of them.
    /// `objects` may be empty.
    pub(crate) fn add_transformed(
        &self,
        dylib: &JitDylib,
        module: IrModule,
        objects: Vec<(String, ObjectBytes)>,
        tracker: Option<&ResourceTracker>,
        transforms: Arc<[Arc<dyn IrTransform>]>,
    ) -> Result<()> {
        let session = dylib.session();
        let IrModule { name, source } = module;
        let (mut interface, source, mut initializers) = match source {
            IrSource::Built { interface, build } => (interface, UnitSource::Built(build), false),
            source => {
                // Only the globals' headers are read now: bodies are read, and the module
                // verified, when it is compiled.
                let context = Context::create();
                let parsed = parse_headers(&context, &name, &source)?;
                let interface = interface_of(session, &parsed);
                let input = IrInput::from_source(source).ok_or_else(|| Error::msg(format!("{name}: not IR")))?;
                (interface, UnitSource::Ir(input), has_initializers(&parsed))
            }
        };
        if !objects.is_empty() {
            let (theirs, their_initializers) = objects_interface(session, &name, &objects)?;
            interface = merged_interface(&interface, &theirs);
            initializers |= their_initializers;
        }
        if initializers {
            let init = self.shared.objects.initializer_symbol(dylib, &name);
            interface.push(init, SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY);
        }
        // Its place in link order is where it is added, as for objects: its initializers run
        // before those of what is added after it, whenever each is compiled.
        let order = self.shared.objects.reserve_orders(1);
        let unit = IrUnit {
            shared: self.shared.clone(),
            name,
            source,
            interface,
            transforms,
            order,
            objects,
            discarded: FxHashSet::default(),
        };
        dylib.define_boxed(Box::new(unit), tracker)
    }
}

/// The symbols of two parts linked as one graph: a name both define is strong if either
/// definition is, as [`jit_link::LinkGraph::absorb`] binds it.
fn merged_interface(ours: &Interface, theirs: &Interface) -> Interface {
    let mut entries: Vec<(SymbolName, SymbolFlags)> = Vec::with_capacity(ours.len() + theirs.len());
    let mut at: FxHashMap<&SymbolName, usize> = FxHashMap::default();
    for (name, flags) in ours.iter().chain(theirs.iter()) {
        match at.get(name) {
            Some(&i) => {
                if entries[i].1.contains(SymbolFlags::WEAK) && !flags.contains(SymbolFlags::WEAK) {
                    entries[i].1 = flags;
                }
            }
            None => {
                at.insert(name, entries.len());
                entries.push((name.clone(), flags));
            }
        }
    }
    entries.into_iter().collect()
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

    pub(crate) fn transforms(&self) -> Vec<Arc<dyn IrTransform>> {
        self.transforms.clone()
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
        self.compile.add_transformed(dylib, module, Vec::new(), tracker, self.transforms.clone().into())
    }

    /// Adds `module` and relocatable `objects` as one unit: the module's object and `objects`
    /// are linked as one graph, as `ld -r` would combine them. For a module whose
    /// `__start_X` / `__stop_X` enclose section `X` of objects, or the other way round (see
    /// [`crate::Jit::add_program`]). The module is compiled whole, when one of the symbols of
    /// any of them is first looked up.
    pub fn add_with_objects(
        &self,
        dylib: &JitDylib,
        module: IrModule,
        objects: Vec<(String, ObjectBytes)>,
        tracker: Option<&ResourceTracker>,
    ) -> Result<()> {
        self.compile.add_transformed(dylib, module, objects, tracker, self.transforms.clone().into())
    }
}

#[cfg(test)]
mod tests {
    use jit_core::{ExecutionSession, Interface, SymbolFlags};

    use super::merged_interface;

    #[test]
    fn a_name_both_parts_define_is_strong_if_either_definition_is() {
        let es = ExecutionSession::in_place();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| es.intern(n));
        let (weak, strong) = (SymbolFlags::EXPORTED | SymbolFlags::WEAK, SymbolFlags::EXPORTED);
        let callable = strong | SymbolFlags::CALLABLE;
        let ours = Interface::new().with(a.clone(), weak).with(b.clone(), callable).with(c.clone(), weak);
        let theirs = Interface::new().with(a.clone(), callable).with(b.clone(), weak).with(d.clone(), strong);
        let merged = merged_interface(&ours, &theirs);
        assert_eq!(merged.len(), 4, "each name once");
        assert_eq!(merged.get(&a), Some(callable), "their strong definition takes the place of our weak one");
        assert_eq!(merged.get(&b), Some(callable), "our strong definition stays");
        assert_eq!(merged.get(&c), Some(weak));
        assert_eq!(merged.get(&d), Some(strong));
        es.end_session().unwrap();
    }
}
