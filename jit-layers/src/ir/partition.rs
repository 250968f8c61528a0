//! Splitting one large module into partitions that compile in parallel, each on its own thread
//! in its own LLVM context (contexts are not thread-safe, so every partition re-reads the
//! module and keeps only its part).
//!
//! Every partition must describe the same symbols the same way, so everything here is
//! deterministic: it depends only on the module's content. Locals become hidden globals with
//! names derived from that content, so partitions can reach each other's, and a function body
//! lives in exactly one partition (global variables in partition 0).

use inkwell::GlobalVisibility;
use inkwell::llvm_sys;
use inkwell::llvm_sys::prelude::LLVMValueRef;
use inkwell::module::{Linkage, Module};
use inkwell::values::{AsValueRef, GlobalValue};
use jit_core::{FxHashMap, FxHashSet};

use super::compile::make_declaration;
use super::module::{aliases, object_name};

/// A module is split only above this many instructions: below, one thread compiles it faster
/// than several threads can each re-read it.
pub(crate) const SPLIT_ABOVE: usize = 30_000;

/// About this many instructions per partition.
const PART_SIZE: usize = 15_000;

/// How a module is split: the functions whose bodies each partition keeps, and the locals
/// made global (with whether each is a function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SplitPlan {
    pub parts: Vec<Vec<String>>,
    pub promoted: Vec<(String, bool)>,
}

pub(crate) fn functions<'c>(module: &Module<'c>) -> impl Iterator<Item = GlobalValue<'c>> {
    module.get_functions().map(|f| f.as_global_value())
}

/// Instructions in a function's body (0 for a declaration).
pub(crate) fn instructions(f: GlobalValue<'_>) -> usize {
    // SAFETY: `f` is a function of a module that is alive for the call.
    unsafe { instructions_of(f.as_value_ref()) }.count()
}

/// The instructions of function `f`, block after block, in order. Each is read from LLVM's
/// lists before the caller gets the one before it: the caller may change the instruction it
/// holds (its operands), not remove instructions or blocks.
///
/// # Safety
///
/// `f` is a function of a module the calling thread owns, alive while the iterator is.
pub(crate) unsafe fn instructions_of(f: LLVMValueRef) -> impl Iterator<Item = LLVMValueRef> {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) `f` is a live function.
    let mut bb = unsafe { LLVMGetFirstBasicBlock(f) };
    // SAFETY: `bb` is a block of `f` (or there is none).
    let mut next = if bb.is_null() { std::ptr::null_mut() } else { unsafe { LLVMGetFirstInstruction(bb) } };
    std::iter::from_fn(move || {
        // SAFETY: (the caller's) `bb` and `next` are a block of `f` and an instruction in it,
        // still in their lists (the caller removes nothing).
        unsafe {
            while next.is_null() {
                if bb.is_null() {
                    return None;
                }
                bb = LLVMGetNextBasicBlock(bb);
                if bb.is_null() {
                    return None;
                }
                next = LLVMGetFirstInstruction(bb);
            }
            let i = next;
            next = LLVMGetNextInstruction(i);
            Some(i)
        }
    })
}

/// The callee operand of `i` if it is a call, invoke or callbr (the last operand: LLVM's
/// `CallBase::getCalledOperand` is `Op<-1>`), with its index.
///
/// # Safety
///
/// `i` is a live instruction.
pub(crate) unsafe fn callee_operand(i: LLVMValueRef) -> Option<(u32, LLVMValueRef)> {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) inspects a live instruction.
    unsafe {
        let is_call =
            !LLVMIsACallInst(i).is_null() || !LLVMIsAInvokeInst(i).is_null() || !LLVMIsACallBrInst(i).is_null();
        let n = LLVMGetNumOperands(i);
        (is_call && n > 0).then(|| (n as u32 - 1, LLVMGetOperand(i, n as u32 - 1)))
    }
}

/// Into how many partitions `module` should be split for `threads` threads (1: not at all).
/// Modules with aliases or ifuncs are not split (LLVM's C API cannot remove an alias from a
/// partition that does not own its target).
pub(crate) fn split_count(module: &Module<'_>, threads: usize) -> usize {
    if threads < 2 || !aliases(module).is_empty() {
        return 1;
    }
    // SAFETY: reads the head of the module's ifunc list.
    if unsafe { !llvm_sys::core::LLVMGetFirstGlobalIFunc(module.as_mut_ptr()).is_null() } {
        return 1;
    }
    let total: usize = functions(module).map(instructions).sum();
    if total < SPLIT_ABOVE { 1 } else { (total / PART_SIZE).clamp(2, 2 * threads) }
}

/// Makes every local function and variable (already given canonical names) a hidden global
/// named `__orcjit.<tag>.<canonical>`, so that partitions can refer to each other's. Returns
/// the promoted names, each with whether it is a function.
pub(crate) fn promote_locals(module: &Module<'_>, tag: &str) -> Vec<(String, bool)> {
    promote_locals_as(module, |name, _| format!("__orcjit.{tag}.{name}"))
}

/// Makes every local function and variable a global named `name(old name, index)` (`index`
/// counts the locals, for unnamed ones), hidden (thread-local variables excepted, see
/// [`recreate_thread_local`]). Returns the new names, each with whether it is a function.
pub(crate) fn promote_locals_as(module: &Module<'_>, name: impl Fn(&str, usize) -> String) -> Vec<(String, bool)> {
    let mut promoted = Vec::new();
    let locals: Vec<(GlobalValue<'_>, bool)> = functions(module)
        .map(|g| (g, true))
        .chain(module.get_globals().map(|g| (g, false)))
        .filter(|(g, _)| matches!(g.get_linkage(), Linkage::Internal | Linkage::Private))
        .collect();
    for (index, (g, is_function)) in locals.into_iter().enumerate() {
        let old = g.get_name().to_string_lossy();
        let new = name(old.strip_prefix('\u{1}').unwrap_or(&old), index);
        if g.is_thread_local() {
            // SAFETY: `g` is a thread-local variable of `module`, which this thread owns.
            unsafe { recreate_thread_local(module, g.as_value_ref(), &new) };
            promoted.push((new, false));
            continue;
        }
        g.set_name(&new);
        g.set_linkage(Linkage::External);
        g.set_visibility(GlobalVisibility::Hidden);
        // A promoted constant keeps its identity: it is one definition, reached by name.
        // SAFETY: clears the unnamed_addr attribute of a global of this module.
        unsafe {
            llvm_sys::core::LLVMSetUnnamedAddress(g.as_value_ref(), llvm_sys::LLVMUnnamedAddr::LLVMNoUnnamedAddr)
        };
        promoted.push((new, is_function));
    }
    promoted
}

/// Replaces local thread-local variable `g` by a fresh external global named `name` with the
/// same type, initializer, TLS mode, alignment, section and metadata. LLVM keeps the
/// `dso_local` mark of a local through any change of linkage or visibility, and code in other
/// partitions would then reach a dso_local thread-local with the local-dynamic model: an
/// offset into *their own* object's TLS block. A fresh default-visibility global is not
/// dso_local, so they use the general-dynamic model and find it by name.
///
/// # Safety
///
/// `g` is a global variable of `module`, owned by the calling thread; it is deleted.
unsafe fn recreate_thread_local(module: &Module<'_>, g: LLVMValueRef, name: &str) {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) every call reads or writes `g`, the fresh global, or the
    // module; the metadata entries copied are disposed of after use.
    unsafe {
        let space = LLVMGetPointerAddressSpace(LLVMTypeOf(g));
        let fresh = LLVMAddGlobalInAddressSpace(module.as_mut_ptr(), LLVMGlobalGetValueType(g), c"".as_ptr(), space);
        let init = LLVMGetInitializer(g);
        if !init.is_null() {
            LLVMSetInitializer(fresh, init);
        }
        LLVMSetThreadLocalMode(fresh, LLVMGetThreadLocalMode(g));
        LLVMSetGlobalConstant(fresh, LLVMIsGlobalConstant(g));
        LLVMSetExternallyInitialized(fresh, LLVMIsExternallyInitialized(g));
        LLVMSetAlignment(fresh, LLVMGetAlignment(g));
        let section = LLVMGetSection(g);
        if !section.is_null() {
            LLVMSetSection(fresh, section);
        }
        let mut count = 0usize;
        let entries = LLVMGlobalCopyAllMetadata(g, &mut count);
        for i in 0..count as u32 {
            let kind = LLVMValueMetadataEntriesGetKind(entries, i);
            LLVMGlobalSetMetadata(fresh, kind, LLVMValueMetadataEntriesGetMetadata(entries, i));
        }
        if !entries.is_null() {
            LLVMDisposeValueMetadataEntries(entries);
        }
        LLVMReplaceAllUsesWith(g, fresh);
        LLVMDeleteGlobal(g);
        LLVMSetValueName2(fresh, name.as_ptr().cast(), name.len());
    }
}

/// Walks `value` and the operands of constant `value`s, calling `found` with the function of
/// every blockaddress it meets.
pub(crate) fn blockaddress_functions(
    value: LLVMValueRef,
    seen: &mut FxHashSet<usize>,
    found: &mut dyn FnMut(LLVMValueRef),
) {
    // SAFETY: inspects a value of a live module: its kind, and its operands when it is a
    // constant (not a global, whose own operands are its initializer, visited separately).
    unsafe {
        if value.is_null() {
            return;
        }
        if !llvm_sys::core::LLVMIsABlockAddress(value).is_null() {
            found(llvm_sys::core::LLVMGetBlockAddressFunction(value));
            return;
        }
        let is_constant = !llvm_sys::core::LLVMIsAConstant(value).is_null();
        let is_global = !llvm_sys::core::LLVMIsAGlobalValue(value).is_null();
        if !is_constant || is_global || !seen.insert(value as usize) {
            return;
        }
        for i in 0..llvm_sys::core::LLVMGetNumOperands(value).max(0) as u32 {
            blockaddress_functions(llvm_sys::core::LLVMGetOperand(value, i), seen, found);
        }
    }
}

/// Functions whose bodies must stay with partition 0: those a global variable's initializer
/// or another function takes a blockaddress of (a block's address only means something next
/// to its function), and those sharing a comdat with a variable.
pub(crate) fn pinned_to_first(module: &Module<'_>) -> FxHashSet<String> {
    let mut pinned = FxHashSet::default();
    let mut seen = FxHashSet::default();
    let pin = |f: LLVMValueRef, pinned: &mut FxHashSet<String>| {
        // SAFETY: `f` is a function of the module; its name is valid while the module lives.
        let name = unsafe { GlobalValue::new(f) }.get_name().to_string_lossy().into_owned();
        pinned.insert(name);
    };
    for g in module.get_globals() {
        // SAFETY: a global variable of the module; its initializer (if any) is a constant.
        let init = unsafe { llvm_sys::core::LLVMGetInitializer(g.as_value_ref()) };
        blockaddress_functions(init, &mut seen, &mut |f| pin(f, &mut pinned));
    }
    for f in functions(module) {
        let this = f.as_value_ref();
        let mut others = Vec::new();
        // SAFETY: walks the instructions of a function of the module and their operands.
        unsafe {
            for i in instructions_of(this) {
                for k in 0..llvm_sys::core::LLVMGetNumOperands(i).max(0) as u32 {
                    blockaddress_functions(llvm_sys::core::LLVMGetOperand(i, k), &mut seen, &mut |t| {
                        if t != this {
                            others.push(t);
                        }
                    });
                }
            }
        }
        if !others.is_empty() {
            pin(this, &mut pinned);
            for t in others {
                pin(t, &mut pinned);
            }
        }
    }
    // Comdats that hold a variable: their functions go with the variables.
    let comdat = |g: GlobalValue<'_>| {
        // SAFETY: reads the comdat of a global of the module (null if none).
        unsafe { llvm_sys::comdat::LLVMGetComdat(g.as_value_ref()) as usize }
    };
    let variable_comdats: FxHashSet<usize> = module.get_globals().map(comdat).filter(|&c| c != 0).collect();
    for f in functions(module) {
        if variable_comdats.contains(&comdat(f)) {
            pinned.insert(f.get_name().to_string_lossy().into_owned());
        }
    }
    pinned
}

/// Assigns function bodies to `k` partitions: pinned functions and each comdat group as a
/// whole, the rest largest first to the lightest partition.
pub(crate) fn plan(module: &Module<'_>, k: usize, promoted: Vec<(String, bool)>) -> SplitPlan {
    let pinned = pinned_to_first(module);
    // Units of assignment: a comdat group's functions together, others alone.
    let mut units: Vec<(usize, Vec<String>)> = Vec::new();
    let mut by_comdat: FxHashMap<usize, usize> = FxHashMap::default();
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); k];
    let mut load = vec![0usize; k];
    for f in functions(module) {
        if f.is_declaration() {
            continue;
        }
        let name = f.get_name().to_string_lossy().into_owned();
        let size = instructions(f);
        if pinned.contains(&name) {
            parts[0].push(name);
            load[0] += size;
            continue;
        }
        // SAFETY: reads the comdat of a function of the module (null if none).
        let comdat = unsafe { llvm_sys::comdat::LLVMGetComdat(f.as_value_ref()) as usize };
        match (comdat, by_comdat.get(&comdat)) {
            (0, _) => units.push((size, vec![name])),
            (_, Some(&u)) => {
                units[u].0 += size;
                units[u].1.push(name);
            }
            (c, None) => {
                by_comdat.insert(c, units.len());
                units.push((size, vec![name]));
            }
        }
    }
    // Largest first; ties by name, so the plan depends on the content only.
    units.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (size, names) in units {
        let lightest = (0..k).min_by_key(|&i| (load[i], i)).expect("k >= 1");
        load[lightest] += size;
        parts[lightest].extend(names);
    }
    SplitPlan { parts, promoted }
}

/// Keeps in `module` only what partition `part` defines: its functions' bodies, and (for
/// partition 0 only) the global variables' initializers. Everything else becomes a
/// declaration, reached through the symbols the other partitions define.
pub(crate) fn keep_partition(module: &Module<'_>, plan: &SplitPlan, part: usize) {
    let mine: FxHashSet<&str> = plan.parts[part].iter().map(String::as_str).collect();
    for f in functions(module) {
        if !f.is_declaration() && !mine.contains(f.get_name().to_str().unwrap_or("")) {
            make_declaration(f, true);
        }
    }
    if part != 0 {
        for g in module.get_globals() {
            // Appending globals (llvm.global_ctors, llvm.used...) only mean something once.
            if !g.is_declaration() {
                if g.get_linkage() == Linkage::Appending {
                    // SAFETY: deletes a special global that no instruction uses.
                    unsafe { llvm_sys::core::LLVMDeleteGlobal(g.as_value_ref()) };
                } else {
                    make_declaration(g, false);
                }
            }
        }
    }
}

/// The object names of what partition `part` defines (partition 0 also every global
/// variable), to split the responsibility by.
pub(crate) fn defined_names(module: &Module<'_>, plan: &SplitPlan, part: usize) -> Vec<String> {
    let object = |ir: &str| ir.strip_prefix('\u{1}').unwrap_or(ir).to_string();
    let mut names: Vec<String> = plan.parts[part].iter().map(|n| object(n)).collect();
    if part == 0 {
        for g in module.get_globals() {
            if !g.is_declaration() && !matches!(g.get_linkage(), Linkage::Appending | Linkage::AvailableExternally) {
                names.extend(object_name(g.get_name()).map(str::to_string));
            }
        }
    }
    names
}
