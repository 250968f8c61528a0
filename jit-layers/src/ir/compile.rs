//! Turning one parsed module into an object, on the thread that runs the materialization: the
//! module is made to define exactly what its responsibility holds, its local names are made
//! canonical (so equal code hashes equal), optimized if asked, and compiled by this thread's
//! own `TargetMachine`.

use std::cell::RefCell;
use std::sync::OnceLock;

use inkwell::OptimizationLevel;
use inkwell::llvm_sys;
use inkwell::llvm_sys::prelude::LLVMValueRef;
use inkwell::module::{Linkage, Module};
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::values::{AsValueRef, GlobalValue};
use jit_core::{Error, FxHashSet, Result};

use crate::{CacheKey, CacheKeyBuilder};

use super::module::{aliases, object_name};

/// Code generation settings; part of every cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    /// The code generator's optimization level (`-O0`..`-O3`, as lli's `-O`; IR pipelines are
    /// transforms, see `IrTransformLayer`).
    pub opt_level: u8,
    /// The CPU and features to compile for (the host's by default).
    pub cpu: String,
    pub features: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { opt_level: 2, cpu: host().cpu.clone(), features: host().features.clone() }
    }
}

/// The host target, found once.
pub(crate) struct Host {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

pub(crate) fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        // The JIT runs code here, so the native target is the only one it needs.
        let _ = Target::initialize_native(&InitializationConfig::default());
        Host {
            triple: TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    })
}

/// The LLVM version the objects are made by.
pub(crate) fn llvm_version() -> String {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: writes three integers through valid pointers.
    unsafe { llvm_sys::core::LLVMGetVersion(&mut major, &mut minor, &mut patch) };
    format!("{major}.{minor}.{patch}")
}

/// The object cache key of `module` (already restricted and canonicalized) compiled with
/// `options` after `transforms`: everything that decides the object's bytes.
pub(crate) fn cache_key(module: &Module<'_>, options: &CompileOptions, transforms: &[&str]) -> CacheKey {
    let bitcode = module.write_bitcode_to_memory();
    let mut key = CacheKeyBuilder::new().part("object", b"v1").part("settings", settings_id(options).as_bytes());
    for t in transforms {
        key = key.part("transform", t.as_bytes());
    }
    key.part("bitcode", bitcode.as_slice()).finish()
}

/// Everything about code generation that decides an object's bytes, besides its IR.
pub(crate) fn settings_id(options: &CompileOptions) -> String {
    format!(
        "llvm {}; triple {}; cpu {}; features {}; codegen -O{}; code model of the module; reloc model pic; no pie level; no debug info; init array",
        llvm_version(),
        host().triple,
        options.cpu,
        options.features,
        options.opt_level
    )
}

fn level(opt: u8) -> OptimizationLevel {
    match opt {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    }
}

/// What a module asks of code generation beyond [`CompileOptions`]: clang's `-mcmodel=` and
/// `-mlarge-data-threshold=`, which it records as the module flags "Code Model" and "Large Data
/// Threshold". Small by default: the linker places all JIT'd code and data within 2 GiB of each
/// other. A program built for the medium or large model, as it must be natively to keep
/// arrays of more than 2 GiB, gets that model here too: its large data goes to sections
/// (`.lbss`...) that the linker may place apart, of any size.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct ModuleModel {
    code_model: CodeModel,
    large_data_threshold: Option<u64>,
}

/// Calls `f` with the key, the node and the value of each of `module`'s flags.
fn for_each_module_flag(module: &Module<'_>, mut f: impl FnMut(&[u8], LLVMValueRef, LLVMValueRef)) {
    let flags = c"llvm.module.flags";
    let m = module.as_mut_ptr();
    // SAFETY: `m` is a live module of this thread. The named metadata's operands are MDNodes
    // (as values), read into a buffer of their count; a module flag is a node of three
    // operands (behavior, key, value), read into a buffer of three, whose key is an MDString
    // (its bytes live as long as the module). Operands that are constants come back as the
    // constants themselves.
    unsafe {
        use llvm_sys::core::*;
        let count = LLVMGetNamedMetadataNumOperands(m, flags.as_ptr()) as usize;
        let mut nodes: Vec<LLVMValueRef> = vec![std::ptr::null_mut(); count];
        LLVMGetNamedMetadataOperands(m, flags.as_ptr(), nodes.as_mut_ptr());
        for node in nodes {
            if LLVMGetMDNodeNumOperands(node) != 3 {
                continue;
            }
            let mut ops: [LLVMValueRef; 3] = [std::ptr::null_mut(); 3];
            LLVMGetMDNodeOperands(node, ops.as_mut_ptr());
            let mut len = 0;
            let key = LLVMGetMDString(ops[1], &mut len);
            if !key.is_null() {
                f(std::slice::from_raw_parts(key.cast::<u8>(), len as usize), node, ops[2]);
            }
        }
    }
}

/// The integer value of module flag `key` of `module`, if it has one.
fn module_flag_int(module: &Module<'_>, key: &str) -> Option<u64> {
    let mut found = None;
    for_each_module_flag(module, |k, _, value| {
        if k == key.as_bytes() {
            // SAFETY: `value` is an operand of a live module's flag; it is read only if it is
            // an integer constant.
            found = unsafe {
                use llvm_sys::core::*;
                (!LLVMIsAConstantInt(value).is_null()).then(|| LLVMConstIntGetZExtValue(value))
            };
        }
    });
    found
}

/// The code model and large-data threshold `module` asks for (see [`ModuleModel`]).
pub(crate) fn module_model(module: &Module<'_>) -> ModuleModel {
    // llvm/Support/CodeGen.h, `CodeModel::Model`: Tiny 0, Small 1, Kernel 2, Medium 3, Large 4.
    let code_model = match module_flag_int(module, "Code Model") {
        Some(3) => CodeModel::Medium,
        Some(4) => CodeModel::Large,
        _ => return ModuleModel::default(),
    };
    ModuleModel { code_model, large_data_threshold: module_flag_int(module, "Large Data Threshold") }
}

thread_local! {
    /// One target machine per worker thread, reused for every module that thread compiles
    /// with the same settings (making one costs about as much as compiling a small function).
    static MACHINE: RefCell<Option<(CompileOptions, ModuleModel, TargetMachine)>> = const { RefCell::new(None) };
}

pub(crate) fn with_machine<T>(
    options: &CompileOptions,
    model: ModuleModel,
    f: impl FnOnce(&TargetMachine) -> Result<T>,
) -> Result<T> {
    MACHINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(o, m, _)| o != options || *m != model) {
            let triple = TargetTriple::create(&host().triple);
            let target =
                Target::from_triple(&triple).map_err(|e| Error::msg(format!("target {}: {e}", host().triple)))?;
            // PIC: the linker reaches libraries through the GOT and PLT stubs.
            let machine = target
                .create_target_machine(
                    &triple,
                    &options.cpu,
                    &options.features,
                    level(options.opt_level),
                    RelocMode::PIC,
                    model.code_model,
                )
                .ok_or_else(|| Error::msg(format!("cannot create a target machine for {}", host().triple)))?;
            if let Some(threshold) = model.large_data_threshold {
                // SAFETY: the machine was just made and is used by this thread alone.
                unsafe { orcjit_set_large_data_threshold(machine.as_mut_ptr(), threshold) };
            }
            // Constructors in `.init_array`, as in clang's objects: linked in one graph with
            // those (`ObjectLinkingLayer::emit_with_objects`), they run in link order.
            // SAFETY: as above.
            unsafe { orcjit_use_init_array(machine.as_mut_ptr()) };
            *slot = Some((options.clone(), model, machine));
        }
        let (_, _, machine) = slot.as_ref().expect("just set");
        f(machine)
    })
}

/// Makes `module` define exactly the symbols in `keep` (the responsibility's): definitions the
/// dylib discarded become declarations (their uses bind to the winning definition), and
/// `linkonce` definitions to keep become `weak`, which optimization may not delete.
pub(crate) fn restrict_to(module: &Module<'_>, keep: &FxHashSet<String>, discard: &FxHashSet<String>) {
    let globals =
        module.get_functions().map(|f| (f.as_global_value(), true)).chain(module.get_globals().map(|g| (g, false)));
    for (g, is_function) in globals {
        if g.is_declaration() {
            continue;
        }
        let Some(name) = object_name(g.get_name()) else { continue };
        if discard.contains(name) {
            make_declaration(g, is_function);
        } else if keep.contains(name) {
            match g.get_linkage() {
                Linkage::LinkOnceAny => g.set_linkage(Linkage::WeakAny),
                Linkage::LinkOnceODR => g.set_linkage(Linkage::WeakODR),
                _ => {}
            }
        }
    }
}

pub(crate) fn make_declaration(g: GlobalValue<'_>, is_function: bool) {
    let v = g.as_value_ref();
    // SAFETY: `v` is a global of the module being prepared on this thread. A function loses
    // its blocks, personality and metadata attachments (a declaration has none of them: the
    // verifier rejects a declaration with a `!dbg` subprogram); a variable its initializer.
    // Either leaves its comdat and becomes external, as LLVM's own deleteBody does.
    unsafe {
        if is_function {
            drop_all_references(v);
            loop {
                let bb = llvm_sys::core::LLVMGetFirstBasicBlock(v);
                if bb.is_null() {
                    break;
                }
                llvm_sys::core::LLVMDeleteBasicBlock(bb);
            }
            llvm_sys::core::LLVMSetPersonalityFn(v, std::ptr::null_mut());
            llvm_sys::core::LLVMGlobalClearMetadata(v);
        } else {
            llvm_sys::core::LLVMSetInitializer(v, std::ptr::null_mut());
        }
        llvm_sys::comdat::LLVMSetComdat(v, std::ptr::null_mut());
        llvm_sys::core::LLVMSetLinkage(v, llvm_sys::LLVMLinkage::LLVMExternalLinkage);
    }
}

/// Clears every operand of every instruction of function `f`, as LLVM's
/// `Function::dropAllReferences` does before it deletes a body: then no instruction or block
/// is used by another one (a loop's header is the target of a later block's branch, a phi
/// uses values from later blocks), and the blocks can be deleted in any order. Blocks whose
/// address is taken are still used by their `blockaddress` constants, which LLVM replaces
/// when the block goes.
///
/// # Safety
///
/// `f` is a function of a module owned by the calling thread; its body is deleted next.
unsafe fn drop_all_references(f: LLVMValueRef) {
    // SAFETY: (the caller's) the blocks and instructions walked belong to `f`; setting an
    // instruction's operand to null is what `User::dropAllReferences` does.
    unsafe {
        for i in super::partition::instructions_of(f) {
            for op in 0..llvm_sys::core::LLVMGetNumOperands(i) {
                llvm_sys::core::LLVMSetOperand(i, op as u32, std::ptr::null_mut());
            }
        }
    }
}

/// Renames every local (internal or private) function, variable and alias to `__orcjit.lN`,
/// in module order (and the source file name to `orcjit`), so that modules differing only in
/// local names are equal bitcode. Returns
/// `(canonical, original)` pairs for the locals that reach the object's symbol table.
pub(crate) fn canonicalize_locals(module: &Module<'_>) -> Vec<(String, String)> {
    // The source file name is recorded in the bitcode too (it only names the object's file
    // symbol): make it the same for every module.
    module.set_source_file_name("orcjit");
    let mut renames = Vec::new();
    let mut n = 0usize;
    let mut visit = |g: GlobalValue<'_>| {
        let linkage = g.get_linkage();
        if !matches!(linkage, Linkage::Internal | Linkage::Private) {
            return;
        }
        let original = g.get_name().to_string_lossy().into_owned();
        let canonical = format!("__orcjit.l{n}");
        n += 1;
        g.set_name(&canonical);
        if linkage == Linkage::Internal && !original.is_empty() {
            renames.push((canonical, original));
        }
    };
    for f in module.get_functions() {
        visit(f.as_global_value());
    }
    for g in module.get_globals() {
        visit(g);
    }
    for a in aliases(module) {
        visit(a);
    }
    renames
}

/// Makes code generation give `module`'s thread-locals the models of a shared library, as
/// JIT'd code is, rather than those of a position-independent executable:
///
/// - Its "PIE Level" module flag, which clang gives every module it builds as PIE (its
///   default), becomes 0. Under a PIE level, LLVM gives thread-locals the initial- and
///   local-exec models (`TargetMachine::getTLSModel` in llvm/lib/Target/TargetMachine.cpp),
///   which address the process's static TLS block at offsets fixed when it started, and
///   JIT'd code cannot join that block: the link failed. With the PIC relocation model and
///   no PIE level they get the general- and local-dynamic models, which jit-link serves
///   through its own `__tls_get_addr`.
/// - A thread-local it only declares loses its `dso_local` mark (clang marks a PIE's own
///   definitions so, and a definition left out of this partition keeps the mark): dso_local,
///   it would get the local-dynamic model, an offset into this object's own TLS block, where
///   it does not lie. (One of non-default visibility keeps the mark, as the verifier
///   wants.)
///
/// A model the source asks for by name (`tls_model("initial-exec")`) is the global's own and
/// stays.
fn use_dynamic_tls_models(module: &Module<'_>) {
    for g in module.get_globals() {
        let v = g.as_value_ref();
        // SAFETY: `v` is a global variable of the module this thread prepares; the calls read
        // its attributes, and the shim clears the mark only of an external declaration of
        // default visibility, for which the verifier asks no mark.
        unsafe {
            use llvm_sys::core::*;
            if LLVMIsThreadLocal(v) != 0
                && LLVMIsDeclaration(v) != 0
                && LLVMGetVisibility(v) == llvm_sys::LLVMVisibility::LLVMDefaultVisibility
            {
                orcjit_clear_dso_local(v);
            }
        }
    }
    let m = module.as_mut_ptr();
    for_each_module_flag(module, |key, node, _| {
        if key == b"PIE Level" {
            // SAFETY: `node` is the flag's node in live module `m`; its value operand becomes
            // an i32 constant of the module's context, which keeps it a valid flag.
            unsafe {
                use llvm_sys::core::*;
                let zero = LLVMConstInt(LLVMInt32TypeInContext(LLVMGetModuleContext(m)), 0, 0);
                LLVMReplaceMDNodeOperandWith(node, 2, LLVMValueAsMetadata(zero));
            }
        }
    });
}

unsafe extern "C" {
    /// `GlobalValue::setDSOLocal(false)` (src/ir/shim.cpp).
    fn orcjit_clear_dso_local(g: LLVMValueRef);
    /// `TargetMachine::setLargeDataThreshold` (src/ir/shim.cpp).
    fn orcjit_set_large_data_threshold(tm: llvm_sys::target_machine::LLVMTargetMachineRef, threshold: u64);
    /// `TargetOptions::UseInitArray = true` (src/ir/shim.cpp).
    fn orcjit_use_init_array(tm: llvm_sys::target_machine::LLVMTargetMachineRef);
}

/// Runs `transform` (with this thread's target machine), then compiles to an ELF object.
pub(crate) fn compile_with(
    module: &Module<'_>,
    name: &str,
    options: &CompileOptions,
    transform: impl FnOnce(&Module<'_>, &TargetMachine) -> Result<()>,
) -> Result<Vec<u8>> {
    if module.get_triple().as_str().to_bytes().is_empty() {
        module.set_triple(&TargetTriple::create(&host().triple));
    }
    // After the program exited, LLVM's statics may be going: nothing more is compiled (the
    // exit waits for no compile; see `at_exit::exit_process`).
    let _permit = crate::at_exit::compile_permit()
        .ok_or_else(|| Error::msg(format!("{name}: not compiled: the program has exited")))?;
    with_machine(options, module_model(module), |machine| {
        if module.get_data_layout().as_str().to_bytes().is_empty() {
            module.set_data_layout(&machine.get_target_data().get_data_layout());
        }
        use_dynamic_tls_models(module);
        transform(module, machine)?;
        let buffer = machine
            .write_to_memory_buffer(module, FileType::Object)
            .map_err(|e| Error::msg(format!("{name}: code generation failed: {e}")))?;
        Ok(buffer.as_slice().to_vec())
    })
}
