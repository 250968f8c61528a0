//! A module parsed once and compiled a partition at a time ("at rest" between compiles).
//!
//! Every function body is renamed `<name>.body`, and a declaration takes the function's own
//! name, so that every reference to the function (calls from other partitions, addresses
//! taken anywhere) goes through the symbol the layer above makes a lazy stub: the stub is the
//! function's one address. Calls within one partition go straight to the body.
//!
//! At rest, the module defines nothing: bodies' blocks and variables' initializers are kept
//! aside. Compiling partition `p` puts back its bodies (and, for partition 0, the variables,
//! comdats and module assembly), runs the code generator, and takes them out again; a body,
//! once compiled, is deleted. So each compile costs what its partition holds, not what the
//! module holds, and the module is read and prepared once.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use inkwell::context::Context;
use inkwell::llvm_sys;
use inkwell::llvm_sys::prelude::{LLVMBasicBlockRef, LLVMValueRef};
use inkwell::llvm_sys::{LLVMLinkage, LLVMVisibility};
use inkwell::module::{Linkage, Module};
use inkwell::values::{AsValueRef, GlobalValue};
use jit_core::{Error, FxHashMap, FxHashSet, Result};

use super::super::compile::{CompileOptions, compile_with, make_declaration, module_model, restrict_to, with_machine};
use super::super::layer::IrTransform;
use super::super::module::{IrSource, aliases, object_name, parse_stripped, stripped_bitcode};
use super::super::partition::{
    blockaddress_functions, callee_operand, functions, instructions, instructions_of, pinned_to_first,
    promote_locals_as,
};
use super::plan::{FunctionInfo, PartitionPolicy, assign};

/// The name a promoted local gets: its own (or `anon<index>`), tagged with the module's
/// content so that equal locals of different modules do not clash.
pub(crate) fn promoted_name(local: &str, index: usize, tag: &str) -> String {
    if local.is_empty() { format!("anon{index}.orcjit.{tag}") } else { format!("{local}.orcjit.{tag}") }
}

/// The symbol a function's body is defined under.
pub(crate) fn body_name(function: &str) -> String {
    format!("{function}.body")
}

/// What a tier-2 body's symbol adds to its tier-1 body's (see [`Build::Renamed`]).
pub(crate) const TIER2_SUFFIX: &str = ".t2";

/// The function first-tier code calls when a partition becomes hot: `void(i64 cookie)`.
/// The cookie is the address of an absolute symbol (see [`Build::Counted`]), so that the
/// object names no value of this process and may be cached.
pub(crate) const TIER_UP_HOOK: &std::ffi::CStr = c"__orcjit_tier_up";

/// How a partition is compiled.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Build<'a> {
    /// As it is.
    Plain,
    /// First tier: every call to one of its functions counts down from `threshold`; the call
    /// that reaches zero calls [`TIER_UP_HOOK`] first, with the address of symbol `cookie`
    /// (which the layer defines as an absolute symbol naming the partition).
    Counted { threshold: u32, cookie: &'a str },
    /// Second tier: its bodies' symbols get [`TIER2_SUFFIX`] (the first tier's are linked).
    Renamed,
}

/// What preparing a module decided: the symbols of the partitions and of the promoted locals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Promoted local functions: each gets a stub (its name) and a body (`<name>.body`).
    pub promoted_functions: Vec<String>,
    /// Promoted local variables.
    pub promoted_variables: Vec<String>,
    /// The symbols each partition defines (bodies, and in partition 0 every variable and data
    /// alias). Partition 0 also holds the module's initializers.
    pub parts: Vec<Vec<String>>,
}

/// What a module is prepared with.
pub(crate) struct Preparation<'a> {
    pub name: &'a str,
    pub source: &'a IrSource,
    /// Names (object names) the dylib kept, and those it discarded (weak definitions that lost).
    pub keep: &'a FxHashSet<String>,
    pub discard: &'a FxHashSet<String>,
    pub transforms: &'a [Arc<dyn IrTransform>],
    pub options: &'a CompileOptions,
    pub tag: &'a str,
    pub policy: &'a dyn PartitionPolicy,
    /// Put everything in one partition whatever the policy says (the module has data aliases).
    pub whole: bool,
    /// Check the module with LLVM's verifier (not needed for a second copy of a module).
    pub verify: bool,
    /// Record each body's direct callees in [`RestingModule::calls`] (for speculation; it
    /// walks every instruction and estimates block frequencies: a sixth of reading SQLite).
    pub calls: bool,
    /// Keep the module's bitcode in [`RestingModule::stripped`] if reading it stripped debug
    /// info, for later copies to read instead.
    pub keep_stripped: bool,
}

struct Body {
    function: LLVMValueRef,
    /// The blocks, kept aside while at rest; empty once compiled.
    blocks: Vec<LLVMBasicBlockRef>,
    linkage: LLVMLinkage,
    part: usize,
    /// Instructions in the body.
    size: usize,
}

struct Variable {
    global: LLVMValueRef,
    init: LLVMValueRef,
    linkage: LLVMLinkage,
    visibility: LLVMVisibility,
    comdat: llvm_sys::prelude::LLVMComdatRef,
    /// Its initializer takes the address of a block (a computed-goto table): a second-tier
    /// compile of partition 0 gets a private copy, pointing into the second-tier code.
    blockaddress: bool,
}

/// The prepared module, in its own LLVM context.
///
/// Contract: used by one thread at a time (the owner keeps it behind a mutex): an LLVM context
/// is not thread-safe, but it is not tied to a thread either.
pub(crate) struct RestingModule {
    name: String,
    // Declared before `context`: the module is disposed of first.
    module: ManuallyDrop<Module<'static>>,
    context: ManuallyDrop<Box<Context>>,
    bodies: Vec<Body>,
    variables: Vec<Variable>,
    asm: Vec<u8>,
    /// Each intrinsic called by a body at rest, and the plain declaration its calls use
    /// meanwhile (see `swap_intrinsics`).
    stand_ins: FxHashMap<usize, LLVMValueRef>,
    intrinsic_of: FxHashMap<usize, LLVMValueRef>,
    /// Whether partition 0 may be compiled in two tiers: its second-tier object defines no
    /// variables (they stay in the first tier's), which holds unless a function uses
    /// `__start_`/`__stop_` bounds (of sections in the first tier's object) or a computed-goto
    /// table can be written.
    first_tierable: bool,
    /// Declarations out of the module's function and variable lists (see
    /// `keep_only_used_declarations`), and whether each is a function.
    unlinked: FxHashMap<usize, bool>,
    /// The tier-up hook's declaration, once made.
    hook: Option<LLVMValueRef>,
    /// Each body's direct callees, as bodies (`<callee>.body`), in the order first called
    /// (for speculation; see [`direct_callees`]).
    pub(crate) calls: Vec<(String, Vec<String>)>,
    /// Per partition: compiled from this copy (or given up, see [`release`](Self::release)).
    spent: Vec<bool>,
    /// The module's bitcode as read but without its debug info (see
    /// [`Preparation::keep_stripped`]), for the owner to take.
    pub(crate) stripped: Option<Arc<[u8]>>,
}

// SAFETY: the context and module are only touched through `&mut self` (the owner's mutex
// serializes threads), and LLVM contexts may move between threads.
unsafe impl Send for RestingModule {}

impl Drop for RestingModule {
    fn drop(&mut self) {
        // Declarations kept out of the module go back in, so that disposing of it frees them.
        for (g, function) in std::mem::take(&mut self.unlinked) {
            // SAFETY: `g` is a global unlinked from this module, alive; a name clash only
            // renames it.
            unsafe {
                match function {
                    true => orcjit_relink_function(self.module.as_mut_ptr(), g as LLVMValueRef),
                    false => orcjit_relink_variable(self.module.as_mut_ptr(), g as LLVMValueRef),
                }
            }
        }
        // Blocks kept aside belong to no function: give them back so that disposing of the
        // module frees them before the values they use.
        for body in &mut self.bodies {
            for bb in body.blocks.drain(..) {
                // SAFETY: `bb` was taken out of `body.function`, which is still alive.
                unsafe { llvm_sys::core::LLVMAppendExistingBasicBlock(body.function, bb) };
            }
        }
        // SAFETY: the module lives in the boxed context; it is dropped first, then the context,
        // and neither is used again.
        unsafe {
            ManuallyDrop::drop(&mut self.module);
            ManuallyDrop::drop(&mut self.context);
        }
    }
}

impl RestingModule {
    /// Reads, checks and prepares a module; returns it at rest, with its layout.
    pub(crate) fn prepare(p: &Preparation<'_>) -> Result<(RestingModule, Layout)> {
        let context = Box::new(Context::create());
        // SAFETY: the context is boxed (its address is stable) and outlives the module: the
        // module is disposed of first in `drop`. 'static only erases that pairing.
        let context_ref: &'static Context = unsafe { &*(&*context as *const Context) };
        let (module, had_debug_info) = parse_stripped(context_ref, p.name, p.source)?;
        let stripped = (p.keep_stripped && had_debug_info).then(|| stripped_bitcode(&module));
        let mut rest = RestingModule {
            name: p.name.to_string(),
            module: ManuallyDrop::new(module),
            context: ManuallyDrop::new(context),
            bodies: Vec::new(),
            variables: Vec::new(),
            asm: Vec::new(),
            stand_ins: FxHashMap::default(),
            intrinsic_of: FxHashMap::default(),
            first_tierable: true,
            unlinked: FxHashMap::default(),
            hook: None,
            calls: Vec::new(),
            spent: Vec::new(),
            stripped,
        };
        let layout = rest.split(p)?;
        Ok((rest, layout))
    }

    fn module(&self) -> &Module<'static> {
        &self.module
    }

    /// Whether partition `part` may still be compiled from this copy (each compiles once).
    pub(crate) fn holds(&self, part: usize) -> bool {
        self.spent.get(part).is_some_and(|spent| !spent)
    }

    /// Whether any partition may still be compiled from this copy.
    pub(crate) fn holds_any(&self) -> bool {
        self.spent.iter().any(|spent| !spent)
    }

    /// Gives partition `part` up: its object came from elsewhere.
    pub(crate) fn release(&mut self, part: usize) {
        if let Some(spent) = self.spent.get_mut(part) {
            *spent = true;
        }
    }

    /// Instructions in partition `part`'s bodies.
    pub(crate) fn part_size(&self, part: usize) -> usize {
        self.bodies.iter().filter(|b| b.part == part).map(|b| b.size).sum()
    }

    /// Whether partition `part` may be compiled in two tiers (see `first_tierable`).
    pub(crate) fn tierable(&self, part: usize) -> bool {
        part != 0 || self.first_tierable
    }

    fn split(&mut self, p: &Preparation<'_>) -> Result<Layout> {
        let module: &Module<'static> = &self.module;
        restrict_to(module, p.keep, p.discard);
        if !p.transforms.is_empty() {
            with_machine(p.options, module_model(module), |machine| {
                p.transforms.iter().try_for_each(|t| {
                    t.transform(module, machine).map_err(|e| Error::msg(format!("{}: {}: {e}", p.name, t.name())))
                })
            })?;
        }
        if p.verify {
            module
                .verify()
                .map_err(|e| Error::msg(format!("{}: invalid module: {}", p.name, e.to_string().trim_end())))?;
        }
        // Bodies that are only there for inlining are never emitted.
        for f in functions(module) {
            if !f.is_declaration() && f.get_linkage() == Linkage::AvailableExternally {
                make_declaration(f, true);
            }
        }
        // Pinned functions are found by name, so before locals are renamed.
        let mut pinned: FxHashSet<usize> = pinned_to_first(module)
            .iter()
            .filter_map(|name| module.get_function(name))
            .map(|f| f.as_value_ref() as usize)
            .collect();
        // `__start_<section>` and `__stop_<section>` are made by the linker for the object that
        // holds the section: their users must be in the same object as the section's variables.
        for f in functions(module) {
            // SAFETY: walks a function of this thread's module.
            if unsafe { uses_section_bounds(f.as_value_ref()) } {
                pinned.insert(f.as_value_ref() as usize);
                self.first_tierable = false;
            }
        }
        let tag = p.tag;
        let promoted = promote_locals_as(module, |local, index| promoted_name(local, index, tag));

        // The functions with bodies, in module order, and their partitions.
        let defined: Vec<GlobalValue<'static>> = functions(module).filter(|f| !f.is_declaration()).collect();
        let infos: Vec<FunctionInfo> = defined
            .iter()
            .map(|f| FunctionInfo {
                name: object_name(f.get_name()).unwrap_or("").to_string(),
                instructions: instructions(*f),
                pinned: pinned.contains(&(f.as_value_ref() as usize)),
            })
            .collect();
        let part_of = if p.whole { vec![0; infos.len()] } else { assign(p.policy, &infos) };
        let parts = part_of.iter().copied().max().map_or(1, |m| m + 1);
        self.spent = vec![false; parts];

        self.redirect_function_aliases()?;
        let mut declaration_of: FxHashMap<usize, usize> = FxHashMap::default();
        let mut layout_parts: Vec<Vec<String>> = vec![Vec::new(); parts];
        for (index, f) in defined.iter().enumerate() {
            let info = &infos[index];
            // SAFETY: `f` is a function with a body of this thread's module.
            let declaration = unsafe { self.split_function(f.as_value_ref(), &info.name) };
            declaration_of.insert(declaration as usize, index);
            layout_parts[part_of[index]].push(body_name(&info.name));
            self.bodies.push(Body {
                function: f.as_value_ref(),
                blocks: Vec::new(),
                // SAFETY: reads the linkage of a function of the module.
                linkage: unsafe { llvm_sys::core::LLVMGetLinkage(f.as_value_ref()) },
                part: part_of[index],
                size: info.instructions,
            });
        }
        // Calls within a partition go straight to the body.
        let targets: Vec<(LLVMValueRef, usize)> = self.bodies.iter().map(|b| (b.function, b.part)).collect();
        for &(f, part) in &targets {
            // SAFETY: walks the instructions of a body of this thread's module.
            unsafe { direct_calls_within(f, part, &declaration_of, &targets) };
        }
        for &(f, _) in targets.iter().filter(|_| p.calls) {
            // SAFETY: walks the instructions of a body of this thread's module.
            let callees = unsafe { direct_callees(f) };
            // SAFETY: names a function of the module.
            self.calls.push((String::from_utf8_lossy(&unsafe { value_name(f) }).into_owned(), callees));
        }
        for g in self.module().get_globals() {
            if g.is_declaration() || g.get_linkage() == Linkage::AvailableExternally {
                continue;
            }
            if g.get_linkage() != Linkage::Appending {
                if let Some(name) = object_name(g.get_name()) {
                    layout_parts[0].push(name.to_string());
                }
            }
            // SAFETY: reads the parts of a defined variable of the module.
            unsafe {
                let v = g.as_value_ref();
                let init = llvm_sys::core::LLVMGetInitializer(v);
                let mut blockaddress = false;
                blockaddress_functions(init, &mut FxHashSet::default(), &mut |_| blockaddress = true);
                if blockaddress && llvm_sys::core::LLVMIsGlobalConstant(v) == 0 {
                    self.first_tierable = false;
                }
                self.variables.push(Variable {
                    global: v,
                    init,
                    linkage: llvm_sys::core::LLVMGetLinkage(v),
                    visibility: llvm_sys::core::LLVMGetVisibility(v),
                    comdat: llvm_sys::comdat::LLVMGetComdat(v),
                    blockaddress,
                });
            }
        }
        for alias in aliases(self.module()) {
            // Data aliases (function aliases were made inert above) stay with the variables.
            if alias.get_linkage() != Linkage::Private {
                if let Some(name) = object_name(alias.get_name()) {
                    layout_parts[0].push(name.to_string());
                }
            }
        }
        // SAFETY: reads the module's assembly; the bytes are copied before anything changes it.
        unsafe {
            let mut len = 0usize;
            let asm = llvm_sys::core::LLVMGetModuleInlineAsm(self.module.as_mut_ptr(), &mut len);
            if !asm.is_null() && len > 0 {
                self.asm = std::slice::from_raw_parts(asm.cast::<u8>(), len).to_vec();
            }
        }
        self.put_to_rest();
        let (promoted_functions, promoted_variables) = promoted.into_iter().partition::<Vec<_>, _>(|(_, f)| *f);
        Ok(Layout {
            promoted_functions: promoted_functions.into_iter().map(|(n, _)| n).collect(),
            promoted_variables: promoted_variables.into_iter().map(|(n, _)| n).collect(),
            parts: layout_parts,
        })
    }

    /// Renames function `f` (object name `name`) to its body name and gives its references to a
    /// new declaration with its old name (and type, calling convention and attributes).
    /// References that must not move (a `blockaddress` of the function's own blocks) stay.
    /// Returns the declaration.
    ///
    /// # Safety
    ///
    /// `f` is a function with a body of this thread's module.
    unsafe fn split_function(&self, f: LLVMValueRef, name: &str) -> LLVMValueRef {
        use llvm_sys::core::*;
        // SAFETY: (the caller's) every value touched is `f`, its new declaration, or a user of
        // `f` in the same module.
        unsafe {
            let old = value_name(f);
            set_value_name(f, body_name(name));
            let module = self.module.as_mut_ptr();
            let declaration = LLVMAddFunction(module, c"".as_ptr(), LLVMGlobalGetValueType(f));
            set_value_name(declaration, &old);
            copy_function_signature(f, declaration);
            let (mut has_block_addresses, mut use_) = (false, LLVMGetFirstUse(f));
            while !use_.is_null() {
                if !LLVMIsABlockAddress(LLVMGetUser(use_)).is_null() {
                    has_block_addresses = true;
                }
                use_ = LLVMGetNextUse(use_);
            }
            if !has_block_addresses {
                LLVMReplaceAllUsesWith(f, declaration);
            } else {
                // RAUW would move the `blockaddress` constants too (they must stay with the
                // body), so every other use is moved by hand.
                replace_uses_except_block_addresses(f, declaration);
            }
            // A body's comdat only mattered for the static linker; the dylib picks one of
            // several weak bodies by name.
            llvm_sys::comdat::LLVMSetComdat(f, std::ptr::null_mut());
            declaration
        }
    }

    /// Function aliases are made inert: their references go to a declaration with the
    /// alias's name (the layer defines that name as an alias of the function's stub), and the
    /// alias itself becomes a private alias of null, which emits nothing.
    fn redirect_function_aliases(&self) -> Result<()> {
        use llvm_sys::core::*;
        for alias in aliases(self.module()) {
            let a = alias.as_value_ref();
            // SAFETY: reads and rewrites an alias of this thread's module and its users.
            unsafe {
                let aliasee = LLVMAliasGetAliasee(a);
                if aliasee.is_null() || LLVMIsAFunction(aliasee).is_null() {
                    continue;
                }
                let old = value_name(a);
                set_value_name(a, format!("{}.orcjit.inert", object_name(alias.get_name()).unwrap_or("alias")));
                let declaration = LLVMAddFunction(self.module.as_mut_ptr(), c"".as_ptr(), LLVMGlobalGetValueType(a));
                set_value_name(declaration, &old);
                copy_function_signature(aliasee, declaration);
                LLVMReplaceAllUsesWith(a, declaration);
                LLVMAliasSetAliasee(a, LLVMConstNull(LLVMTypeOf(a)));
                LLVMSetLinkage(a, LLVMLinkage::LLVMPrivateLinkage);
            }
        }
        Ok(())
    }

    /// Takes every body's blocks and every variable's initializer out, leaving declarations.
    fn put_to_rest(&mut self) {
        use llvm_sys::core::*;
        let functions: Vec<LLVMValueRef> = self.bodies.iter().map(|b| b.function).collect();
        for f in functions {
            // SAFETY: `f` is a body of this thread's module, its blocks still attached.
            unsafe { self.swap_intrinsics(f, true) };
        }
        for body in &mut self.bodies {
            // SAFETY: detaches the blocks of a function of this thread's module; they are kept
            // in `body.blocks` until put back (or until `drop` gives them back).
            unsafe {
                let mut bb = LLVMGetFirstBasicBlock(body.function);
                while !bb.is_null() {
                    let next = LLVMGetNextBasicBlock(bb);
                    LLVMRemoveBasicBlockFromParent(bb);
                    body.blocks.push(bb);
                    bb = next;
                }
                // A declaration must be external, and a hidden one would be named in every
                // object (as an undefined symbol) whether used or not.
                LLVMSetLinkage(body.function, LLVMLinkage::LLVMExternalLinkage);
                LLVMSetVisibility(body.function, LLVMVisibility::LLVMDefaultVisibility);
            }
        }
        self.variables_to_rest();
        // SAFETY: clears the module's assembly (kept in `self.asm`).
        unsafe { LLVMSetModuleInlineAsm2(self.module.as_mut_ptr(), c"".as_ptr(), 0) };
    }

    /// Blocks at rest belong to no function, but their instructions are still users of what
    /// they use; a code generator pass that walks an intrinsic's users (pre-ISel lowering of
    /// memcpy and friends) would reach them and ask for their function. So at rest their calls
    /// to intrinsics go to stand-in declarations (plain functions no pass looks at), and back
    /// when the body is compiled. `to_rest` says which way.
    ///
    /// # Safety
    ///
    /// `f` is a body of this thread's module with its blocks attached.
    unsafe fn swap_intrinsics(&mut self, f: LLVMValueRef, to_rest: bool) {
        use llvm_sys::core::*;
        // SAFETY: (the caller's) walks `f`'s instructions, changing only callee operands.
        unsafe {
            let module = self.module.as_mut_ptr();
            for (i, (op, callee)) in instructions_of(f).filter_map(|i| Some((i, callee_operand(i)?))) {
                let swapped = if to_rest {
                    let intrinsic = !LLVMIsAFunction(callee).is_null() && LLVMGetIntrinsicID(callee) != 0;
                    intrinsic.then(|| {
                        *self.stand_ins.entry(callee as usize).or_insert_with(|| {
                            let stand_in = LLVMAddFunction(
                                module,
                                c"__orcjit.rest.intrinsic".as_ptr(),
                                LLVMGlobalGetValueType(callee),
                            );
                            self.intrinsic_of.insert(stand_in as usize, callee);
                            stand_in
                        })
                    })
                } else {
                    self.intrinsic_of.get(&(callee as usize)).copied()
                };
                if let Some(to) = swapped {
                    LLVMSetOperand(i, op, to);
                }
            }
        }
    }

    fn variables_to_rest(&self) {
        use llvm_sys::core::*;
        for v in &self.variables {
            // SAFETY: makes a variable of this thread's module a declaration; its initializer,
            // linkage, visibility and comdat are kept in `v`.
            unsafe {
                LLVMSetInitializer(v.global, std::ptr::null_mut());
                LLVMSetLinkage(v.global, LLVMLinkage::LLVMExternalLinkage);
                if v.visibility != LLVMVisibility::LLVMDefaultVisibility {
                    LLVMSetVisibility(v.global, LLVMVisibility::LLVMDefaultVisibility);
                }
                llvm_sys::comdat::LLVMSetComdat(v.global, std::ptr::null_mut());
            }
        }
    }

    /// Compiles partition `part` (at most once; its bodies are deleted after), as `build`
    /// says. Returns the object.
    pub(crate) fn compile(&mut self, part: usize, options: &CompileOptions, build: Build<'_>) -> Result<Vec<u8>> {
        use llvm_sys::core::*;
        let name = format!("{}#{part}", self.name);
        if !self.holds(part) {
            return Err(Error::msg(format!("{name}: compiled twice from one copy of the module")));
        }
        self.release(part);
        let functions: Vec<LLVMValueRef> = self.bodies.iter().filter(|b| b.part == part).map(|b| b.function).collect();
        for f in functions {
            // SAFETY: `f` is a function of this module.
            unsafe { self.link(f) };
        }
        let mut attached = Vec::new();
        for body in self.bodies.iter_mut().filter(|b| b.part == part) {
            // SAFETY: puts back the blocks taken out of this function, in their order.
            unsafe {
                for bb in body.blocks.drain(..) {
                    LLVMAppendExistingBasicBlock(body.function, bb);
                }
                LLVMSetLinkage(body.function, body.linkage);
                LLVMSetVisibility(body.function, LLVMVisibility::LLVMHiddenVisibility);
            }
            attached.push(body.function);
        }
        for f in attached {
            // SAFETY: `f`'s blocks were just put back.
            unsafe { self.swap_intrinsics(f, false) };
        }
        let renamed = matches!(build, Build::Renamed);
        if part == 0 && renamed {
            // The variables stay in the first tier's object; computed-goto tables are copied.
            for v in self.variables.iter().filter(|v| v.blockaddress) {
                // SAFETY: gives a constant of this module its initializer, privately.
                unsafe {
                    LLVMSetInitializer(v.global, v.init);
                    LLVMSetLinkage(v.global, LLVMLinkage::LLVMPrivateLinkage);
                }
            }
        } else if part == 0 {
            for v in &self.variables {
                // SAFETY: gives a variable of this module back what `variables_to_rest` took.
                unsafe {
                    LLVMSetInitializer(v.global, v.init);
                    LLVMSetLinkage(v.global, v.linkage);
                    LLVMSetVisibility(v.global, v.visibility);
                    llvm_sys::comdat::LLVMSetComdat(v.global, v.comdat);
                }
            }
            // SAFETY: sets the module's assembly from bytes we own.
            unsafe { LLVMSetModuleInlineAsm2(self.module.as_mut_ptr(), self.asm.as_ptr().cast(), self.asm.len()) };
        }
        let attached: Vec<LLVMValueRef> = self.bodies.iter().filter(|b| b.part == part).map(|b| b.function).collect();
        let counter = match build {
            // SAFETY: the partition's bodies are attached, in this thread's module.
            Build::Counted { threshold, cookie } => Some(unsafe { self.count_calls(&attached, threshold, cookie) }),
            Build::Plain => None,
            Build::Renamed => {
                for &f in &attached {
                    // SAFETY: renames a function of this module (uses refer to it, not its name)
                    // and takes it out of its comdat: the first tier's object has that group,
                    // and a linker would keep only one of the two.
                    unsafe {
                        set_value_name(f, [value_name(f).as_slice(), TIER2_SUFFIX.as_bytes()].concat());
                        llvm_sys::comdat::LLVMSetComdat(f, std::ptr::null_mut());
                    }
                }
                None
            }
        };
        // Partition 0 (once per module) has variables, which may use any function.
        // SAFETY: the partition's bodies are attached, in this thread's module.
        unsafe { self.keep_only_used_declarations(&attached, part == 0) };
        let object = compile_with(self.module(), &name, options, |_, _| Ok(()));
        // Compiled (or failed for good): the bodies are not needed again.
        for body in self.bodies.iter().filter(|b| b.part == part) {
            // SAFETY: `body.function` is a function of this module whose blocks are attached.
            unsafe { make_declaration(GlobalValue::new(body.function), true) };
            // SAFETY: as above.
            unsafe { LLVMSetVisibility(body.function, LLVMVisibility::LLVMDefaultVisibility) };
        }
        if part == 0 {
            self.variables_to_rest();
            // SAFETY: clears the module's assembly again.
            unsafe { LLVMSetModuleInlineAsm2(self.module.as_mut_ptr(), c"".as_ptr(), 0) };
        }
        if let Some((counter, cookie)) = counter {
            // SAFETY: their only users were in the bodies just made declarations.
            unsafe {
                LLVMDeleteGlobal(counter);
                LLVMDeleteGlobal(cookie);
            }
        }
        object
    }

    /// Leaves in the module's function list only the declarations `bodies` (attached) use, or
    /// all of them if `all`: the code generator visits every declaration in the module for
    /// every partition it compiles (it names each one's symbol), which would make each compile
    /// cost O(module). Declarations out of the list stay alive (uses, names) until needed.
    ///
    /// # Safety
    ///
    /// `bodies` are the attached functions of this thread's module; unless `all`, no variable
    /// with an initializer uses a function.
    unsafe fn keep_only_used_declarations(&mut self, bodies: &[LLVMValueRef], all: bool) {
        use llvm_sys::core::*;
        // SAFETY: (the caller's) reads the bodies' instructions and the module's function list.
        unsafe {
            if all {
                let unlinked: Vec<usize> = self.unlinked.keys().copied().collect();
                for g in unlinked {
                    self.link(g as LLVMValueRef);
                }
                return;
            }
            let mut used: FxHashSet<usize> = FxHashSet::default();
            let mut seen: FxHashSet<usize> = FxHashSet::default();
            for &f in bodies {
                used.insert(f as usize);
                if LLVMHasPersonalityFn(f) != 0 {
                    collect_globals(LLVMGetPersonalityFn(f), &mut seen, &mut used);
                }
                for i in instructions_of(f) {
                    for k in 0..LLVMGetNumOperands(i).max(0) as u32 {
                        collect_globals(LLVMGetOperand(i, k), &mut seen, &mut used);
                    }
                }
            }
            for &g in &used {
                self.link(g as LLVMValueRef);
            }
            let module = self.module.as_mut_ptr();
            let mut f = LLVMGetFirstFunction(module);
            while !f.is_null() {
                let next = LLVMGetNextFunction(f);
                if LLVMIsDeclaration(f) != 0 && !used.contains(&(f as usize)) {
                    orcjit_unlink_function(f);
                    self.unlinked.insert(f as usize, true);
                }
                f = next;
            }
            let mut v = LLVMGetFirstGlobal(module);
            while !v.is_null() {
                let next = LLVMGetNextGlobal(v);
                if LLVMIsDeclaration(v) != 0 && !used.contains(&(v as usize)) {
                    orcjit_unlink_variable(v);
                    self.unlinked.insert(v as usize, false);
                }
                v = next;
            }
        }
    }

    /// Puts global `g` back in the module's function or variable list if it is out. A
    /// declaration the code generator added meanwhile under its name (a library function it
    /// lowered an intrinsic to) gives way to it.
    ///
    /// # Safety
    ///
    /// `g` is a function or variable of this thread's module.
    unsafe fn link(&mut self, g: LLVMValueRef) {
        use llvm_sys::core::*;
        let Some(function) = self.unlinked.remove(&(g as usize)) else { return };
        let module = self.module.as_mut_ptr();
        // SAFETY: (the caller's) `g` is alive, out of its list. A namesake in the list is a
        // declaration of the same thing, made or put back while `g` was out: its uses (in
        // bodies compiled since, declarations now, in the partition about to be compiled, or
        // at rest) and this copy's own references to it (see `replaced`) move to `g` before it
        // is deleted.
        unsafe {
            let name = std::ffi::CString::new(value_name(g)).unwrap_or_default();
            let namesake = match function {
                true => LLVMGetNamedFunction(module, name.as_ptr()),
                false => LLVMGetNamedGlobal(module, name.as_ptr()),
            };
            if !namesake.is_null() && namesake != g && LLVMIsDeclaration(namesake) != 0 {
                LLVMReplaceAllUsesWith(namesake, g);
                self.replaced(namesake, g);
                match function {
                    true => LLVMDeleteFunction(namesake),
                    false => LLVMDeleteGlobal(namesake),
                }
            }
            match function {
                true => orcjit_relink_function(module, g),
                false => orcjit_relink_variable(module, g),
            }
        }
    }

    /// Moves this copy's references to declaration `old`, about to be deleted, to `new`.
    ///
    /// The namesake that [`link`](Self::link) deletes is not always one the code generator
    /// made: an intrinsic a body at rest calls (through its stand-in, see `swap_intrinsics`)
    /// may be put back while the code generator's later declaration of it is out, and then
    /// give way to that one. Its stand-in must then lead to the survivor: CPython under
    /// `--tier-up 1` compiled a second-tier `PyUnicode_FromFormatV` whose call went to an
    /// intrinsic's deleted declaration, and crashed in about half the runs.
    fn replaced(&mut self, old: LLVMValueRef, new: LLVMValueRef) {
        for intrinsic in self.intrinsic_of.values_mut().filter(|i| **i == old) {
            *intrinsic = new;
        }
        if self.hook == Some(old) {
            self.hook = Some(new);
        }
        for body in self.bodies.iter_mut().filter(|b| b.function == old) {
            body.function = new;
        }
        for variable in self.variables.iter_mut().filter(|v| v.global == old) {
            variable.global = new;
        }
    }

    /// Makes each function in `functions` count its calls in one shared counter (a private
    /// variable starting at `threshold`) and call `__orcjit_tier_up(cookie)` on the call that
    /// brings it to zero. Returns the counter and the cookie's declaration. Leading allocas move to the new entry block, so
    /// they stay static. Naked functions are left alone.
    ///
    /// # Safety
    ///
    /// `functions` are functions of this thread's module with their blocks attached.
    unsafe fn count_calls(
        &mut self,
        functions: &[LLVMValueRef],
        threshold: u32,
        cookie: &str,
    ) -> (LLVMValueRef, LLVMValueRef) {
        use llvm_sys::LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic;
        use llvm_sys::LLVMAtomicRMWBinOp::LLVMAtomicRMWBinOpSub;
        use llvm_sys::LLVMIntPredicate::LLVMIntEQ;
        use llvm_sys::core::*;
        // SAFETY: (the caller's) builds instructions in blocks of `functions`, and a variable
        // and a declaration in their module.
        unsafe {
            let module = self.module.as_mut_ptr();
            let ctx = LLVMGetModuleContext(module);
            let i32t = LLVMInt32TypeInContext(ctx);
            let i64t = LLVMInt64TypeInContext(ctx);
            let counter = LLVMAddGlobal(module, i32t, c"__orcjit.calls".as_ptr());
            LLVMSetInitializer(counter, LLVMConstInt(i32t, threshold as u64, 0));
            LLVMSetLinkage(counter, LLVMLinkage::LLVMPrivateLinkage);
            let mut params = [i64t];
            let hook_type = LLVMFunctionType(LLVMVoidTypeInContext(ctx), params.as_mut_ptr(), 1, 0);
            let hook = match self.hook {
                Some(hook) => {
                    self.link(hook);
                    hook
                }
                None => *self.hook.insert(LLVMAddFunction(module, TIER_UP_HOOK.as_ptr(), hook_type)),
            };
            let cookie = std::ffi::CString::new(cookie).expect("a symbol name has no NUL");
            let mut cookie_symbol = LLVMGetNamedGlobal(module, cookie.as_ptr());
            if cookie_symbol.is_null() {
                cookie_symbol = LLVMAddGlobal(module, LLVMInt8TypeInContext(ctx), cookie.as_ptr());
            }
            let builder = LLVMCreateBuilderInContext(ctx);
            let naked = LLVMGetEnumAttributeKindForName(c"naked".as_ptr(), 5);
            for &f in functions {
                // A naked function's body is its assembly, nothing else.
                if !LLVMGetEnumAttributeAtIndex(f, llvm_sys::LLVMAttributeFunctionIndex, naked).is_null() {
                    continue;
                }
                let entry = LLVMGetEntryBasicBlock(f);
                let count = LLVMInsertBasicBlockInContext(ctx, entry, c"orcjit.count".as_ptr());
                let hot = LLVMInsertBasicBlockInContext(ctx, entry, c"orcjit.hot".as_ptr());
                LLVMPositionBuilderAtEnd(builder, count);
                let mut i = LLVMGetFirstInstruction(entry);
                while !i.is_null() && !LLVMIsAAllocaInst(i).is_null() {
                    let next = LLVMGetNextInstruction(i);
                    LLVMInstructionRemoveFromParent(i);
                    LLVMInsertIntoBuilder(builder, i);
                    i = next;
                }
                let one = LLVMConstInt(i32t, 1, 0);
                let old =
                    LLVMBuildAtomicRMW(builder, LLVMAtomicRMWBinOpSub, counter, one, LLVMAtomicOrderingMonotonic, 0);
                let is_hot = LLVMBuildICmp(builder, LLVMIntEQ, old, one, c"".as_ptr());
                LLVMBuildCondBr(builder, is_hot, hot, entry);
                LLVMPositionBuilderAtEnd(builder, hot);
                let mut args = [LLVMConstPtrToInt(cookie_symbol, i64t)];
                LLVMBuildCall2(builder, hook_type, hook, args.as_mut_ptr(), 1, c"".as_ptr());
                LLVMBuildBr(builder, entry);
            }
            LLVMDisposeBuilder(builder);
            (counter, cookie_symbol)
        }
    }
}

unsafe extern "C" {
    /// `Function::removeFromParent` (src/ir/shim.cpp).
    fn orcjit_unlink_function(f: LLVMValueRef);
    /// Appends an unlinked function to module `m`'s function list (src/ir/shim.cpp).
    fn orcjit_relink_function(m: llvm_sys::prelude::LLVMModuleRef, f: LLVMValueRef);
    /// `GlobalVariable::removeFromParent` (src/ir/shim.cpp).
    fn orcjit_unlink_variable(v: LLVMValueRef);
    /// Appends an unlinked variable to module `m`'s variable list (src/ir/shim.cpp).
    fn orcjit_relink_variable(m: llvm_sys::prelude::LLVMModuleRef, v: LLVMValueRef);
    /// LLVM's static estimate of how often each block of `f` runs per call (src/ir/shim.cpp).
    fn orcjit_block_frequencies(
        f: LLVMValueRef,
        blocks: *mut llvm_sys::prelude::LLVMBasicBlockRef,
        frequencies: *mut f64,
        capacity: u32,
    ) -> u32;
}

/// Callees called only from blocks LLVM estimates to run less often than this per call of the
/// caller (error paths: blocks ending in `unreachable` or calling `noreturn` or `cold`
/// functions) are left out of the call graph the static speculation policy reads.
const COLD_CALL_FREQUENCY: f64 = 1.0 / 64.0;

/// The bodies function `f` calls directly (not intrinsics), most often called first by LLVM's
/// static block frequencies (ties in the order of their first call), without those called only
/// from cold blocks (see [`COLD_CALL_FREQUENCY`]). A call to a body is to itself, a call to a
/// function's declaration (its stub) is to `<name>.body` (which need not exist: an external
/// function has none).
///
/// # Safety
///
/// `f` is a function with its blocks attached, of a module the calling thread owns.
unsafe fn direct_callees(f: LLVMValueRef) -> Vec<String> {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) counts and estimates the blocks of a function with a body.
    let frequency_of: FxHashMap<usize, f64> = unsafe {
        let capacity = LLVMCountBasicBlocks(f);
        let mut blocks = vec![std::ptr::null_mut(); capacity as usize];
        let mut frequencies = vec![0.0; capacity as usize];
        let n = orcjit_block_frequencies(f, blocks.as_mut_ptr(), frequencies.as_mut_ptr(), capacity);
        blocks.iter().take(n as usize).map(|&b| b as usize).zip(frequencies).collect()
    };
    let mut out: Vec<(String, f64)> = Vec::new();
    // SAFETY: (the caller's) walks `f`'s instructions and reads their callees' names.
    unsafe {
        for i in instructions_of(f) {
            let Some((_, callee)) = callee_operand(i) else { continue };
            if LLVMIsAFunction(callee).is_null() || LLVMGetIntrinsicID(callee) != 0 || callee == f {
                continue;
            }
            let frequency = frequency_of.get(&(LLVMGetInstructionParent(i) as usize)).copied().unwrap_or(1.0);
            let name = String::from_utf8_lossy(&value_name(callee)).into_owned();
            let body = if name.ends_with(".body") { name } else { body_name(&name) };
            match out.iter_mut().find(|(b, _)| *b == body) {
                Some((_, most)) => *most = most.max(frequency),
                None => out.push((body, frequency)),
            }
        }
    }
    out.retain(|(_, frequency)| *frequency >= COLD_CALL_FREQUENCY);
    // Stable: equally frequent callees stay in the order of their first call.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.into_iter().map(|(body, _)| body).collect()
}

/// Adds to `found` the functions and variables `value` is or holds (through constant
/// expressions and aggregates; not through variables' initializers).
///
/// # Safety
///
/// `value` is a live value.
unsafe fn collect_globals(value: LLVMValueRef, seen: &mut FxHashSet<usize>, found: &mut FxHashSet<usize>) {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) inspects a value and, for constants, their operands.
    unsafe {
        if value.is_null() {
            return;
        }
        if !LLVMIsAFunction(value).is_null() || !LLVMIsAGlobalVariable(value).is_null() {
            found.insert(value as usize);
            return;
        }
        let aggregate_or_expr = !LLVMIsAConstantExpr(value).is_null()
            || !LLVMIsAConstantArray(value).is_null()
            || !LLVMIsAConstantStruct(value).is_null()
            || !LLVMIsAConstantVector(value).is_null();
        if aggregate_or_expr && seen.insert(value as usize) {
            for k in 0..LLVMGetNumOperands(value).max(0) as u32 {
                collect_globals(LLVMGetOperand(value, k), seen, found);
            }
        }
    }
}

/// Makes every user of `from` but `blockaddress` constants use `to`: instructions take it as
/// an operand, variables as their initializer; constant arrays, structs and vectors holding
/// `from` are rebuilt holding `to`, and their own users moved to the new constant in turn.
/// (Other constant expressions of a function are left as they are.)
///
/// # Safety
///
/// `from` and `to` are values of one module owned by the calling thread, of one type.
unsafe fn replace_uses_except_block_addresses(from: LLVMValueRef, to: LLVMValueRef) {
    use llvm_sys::LLVMTypeKind;
    use llvm_sys::core::*;
    // SAFETY: (the caller's) reads and rewrites users of `from` in its module.
    unsafe {
        let mut users = Vec::new();
        let mut use_ = LLVMGetFirstUse(from);
        while !use_.is_null() {
            let user = LLVMGetUser(use_);
            if !users.contains(&user) {
                users.push(user);
            }
            use_ = LLVMGetNextUse(use_);
        }
        for user in users {
            if !LLVMIsAInstruction(user).is_null() {
                for i in 0..LLVMGetNumOperands(user).max(0) as u32 {
                    if LLVMGetOperand(user, i) == from {
                        LLVMSetOperand(user, i, to);
                    }
                }
            } else if !LLVMIsAGlobalVariable(user).is_null() {
                if LLVMGetInitializer(user) == from {
                    LLVMSetInitializer(user, to);
                }
            } else if !LLVMIsAConstantArray(user).is_null()
                || !LLVMIsAConstantStruct(user).is_null()
                || !LLVMIsAConstantVector(user).is_null()
            {
                let n = LLVMGetNumOperands(user).max(0) as u32;
                let mut elements: Vec<LLVMValueRef> = (0..n)
                    .map(|i| match LLVMGetOperand(user, i) {
                        e if e == from => to,
                        e => e,
                    })
                    .collect();
                let ty = LLVMTypeOf(user);
                let rebuilt = match LLVMGetTypeKind(ty) {
                    LLVMTypeKind::LLVMArrayTypeKind => {
                        LLVMConstArray2(LLVMGetElementType(ty), elements.as_mut_ptr(), n as u64)
                    }
                    LLVMTypeKind::LLVMStructTypeKind if !LLVMGetStructName(ty).is_null() => {
                        LLVMConstNamedStruct(ty, elements.as_mut_ptr(), n)
                    }
                    LLVMTypeKind::LLVMStructTypeKind => LLVMConstStructInContext(
                        LLVMGetTypeContext(ty),
                        elements.as_mut_ptr(),
                        n,
                        LLVMIsPackedStruct(ty),
                    ),
                    _ => LLVMConstVector(elements.as_mut_ptr(), n),
                };
                replace_uses_except_block_addresses(user, rebuilt);
            }
        }
    }
}

/// Points the calls in function `f` (of partition `part`) at the bodies of callees in the
/// same partition instead of their declarations (stubs).
///
/// # Safety
///
/// `f` is a function of a module owned by the calling thread; `declaration_of` maps the
/// declarations made by `split_function` to indexes of `bodies` (body, partition).
unsafe fn direct_calls_within(
    f: LLVMValueRef,
    part: usize,
    declaration_of: &FxHashMap<usize, usize>,
    bodies: &[(LLVMValueRef, usize)],
) {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) walks `f`'s instructions, changing only callee operands.
    unsafe {
        for i in instructions_of(f) {
            let Some((op, callee)) = callee_operand(i) else { continue };
            if let Some(&(body, body_part)) = declaration_of.get(&(callee as usize)).map(|&k| &bodies[k]) {
                if body_part == part {
                    LLVMSetOperand(i, op, body);
                }
            }
        }
    }
}

/// Whether function `f` refers to a `__start_`/`__stop_` section bound.
///
/// # Safety
///
/// `f` is a function of a module owned by the calling thread.
unsafe fn uses_section_bounds(f: LLVMValueRef) -> bool {
    use llvm_sys::core::*;
    fn visit(v: LLVMValueRef, depth: usize) -> bool {
        // SAFETY: inspects a value of the caller's module: its kind, name, and (for constant
        // expressions) operands.
        unsafe {
            if v.is_null() || depth > 8 {
                return false;
            }
            if !LLVMIsAGlobalValue(v).is_null() {
                let name = value_name(v);
                return name.starts_with(b"__start_") || name.starts_with(b"__stop_");
            }
            if LLVMIsAConstantExpr(v).is_null() {
                return false;
            }
            (0..LLVMGetNumOperands(v).max(0) as u32).any(|k| visit(LLVMGetOperand(v, k), depth + 1))
        }
    }
    // SAFETY: (the caller's) walks `f`'s instructions and their operands.
    unsafe {
        instructions_of(f).any(|i| (0..LLVMGetNumOperands(i).max(0) as u32).any(|k| visit(LLVMGetOperand(i, k), 0)))
    }
}

/// Copies calling convention and attributes of function `from` onto `to`.
///
/// # Safety
///
/// Both are functions (of one context) with the same type.
unsafe fn copy_function_signature(from: LLVMValueRef, to: LLVMValueRef) {
    use llvm_sys::core::*;
    // SAFETY: (the caller's) reads `from`'s attributes into a buffer of the size LLVM reports
    // and adds each to `to` at the same index.
    unsafe {
        LLVMSetFunctionCallConv(to, LLVMGetFunctionCallConv(from));
        let params = LLVMCountParams(from);
        // Index ~0 is the function, 0 the return value, 1.. the parameters.
        let indexes = std::iter::once(u32::MAX).chain(0..=params);
        for index in indexes {
            let n = LLVMGetAttributeCountAtIndex(from, index);
            if n == 0 {
                continue;
            }
            let mut attributes = vec![std::ptr::null_mut(); n as usize];
            LLVMGetAttributesAtIndex(from, index, attributes.as_mut_ptr());
            for a in attributes {
                LLVMAddAttributeAtIndex(to, index, a);
            }
        }
    }
}

/// # Safety
/// `v` is a live value.
unsafe fn value_name(v: LLVMValueRef) -> Vec<u8> {
    let mut len = 0usize;
    // SAFETY: (the caller's) LLVM returns a pointer to `len` bytes owned by the value.
    unsafe {
        let p = llvm_sys::core::LLVMGetValueName2(v, &mut len);
        if p.is_null() { Vec::new() } else { std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec() }
    }
}

/// # Safety
/// `v` is a live value.
unsafe fn set_value_name(v: LLVMValueRef, name: impl AsRef<[u8]>) {
    let name = name.as_ref();
    // SAFETY: (the caller's) LLVM copies the `name.len()` bytes.
    unsafe { llvm_sys::core::LLVMSetValueName2(v, name.as_ptr().cast(), name.len()) };
}

#[cfg(test)]
mod tests {
    use super::super::plan::PerFunction;
    use super::*;

    const IR: &str = "
        declare i64 @llvm.smax.i64(i64, i64)
        define i64 @uses_smax(i64 %a, i64 %b) {
          %m = call i64 @llvm.smax.i64(i64 %a, i64 %b)
          ret i64 %m
        }
        define i64 @plain(i64 %a) {
          ret i64 %a
        }
    ";

    fn part_of(layout: &Layout, body: &str) -> usize {
        layout.parts.iter().position(|p| p.iter().any(|n| n == body)).expect("a partition holds the body")
    }

    /// The code generator may declare an intrinsic again while the module's declaration is out
    /// of the function list; when both come back, one gives way to the other. If the module's
    /// own gives way, the stand-in of a body at rest that calls it must lead to the survivor,
    /// or that body's compile calls a deleted function.
    #[test]
    fn a_body_at_rest_reaches_the_surviving_declaration_of_its_intrinsic() {
        let source = IrSource::Text(IR.as_bytes().into());
        let keep: FxHashSet<String> = ["uses_smax", "plain"].iter().map(|s| s.to_string()).collect();
        let options = CompileOptions::default();
        let prep = Preparation {
            name: "smax",
            source: &source,
            keep: &keep,
            discard: &FxHashSet::default(),
            transforms: &[],
            options: &options,
            tag: "t",
            policy: &PerFunction,
            whole: false,
            verify: true,
            calls: false,
            keep_stripped: false,
        };
        let (mut rest, layout) = RestingModule::prepare(&prep).unwrap();
        let module = rest.module.as_mut_ptr();
        let named = |name: &std::ffi::CStr| {
            // SAFETY: looks a name up in the copy's live module.
            unsafe { llvm_sys::core::LLVMGetNamedFunction(module, name.as_ptr()) }
        };
        let original = named(c"llvm.smax.i64");
        assert!(!original.is_null());
        // Compiling `plain` takes the unused intrinsic out of the list.
        rest.compile(part_of(&layout, "plain.body"), &options, Build::Plain).unwrap();
        assert!(named(c"llvm.smax.i64").is_null(), "unused declarations are out while compiling");
        // SAFETY: declares the intrinsic again, as a code generator pass would, and takes it
        // out as a later compile would; then both come back, the later one last.
        let again = unsafe {
            let ty = llvm_sys::core::LLVMGlobalGetValueType(original);
            let again = llvm_sys::core::LLVMAddFunction(module, c"llvm.smax.i64".as_ptr(), ty);
            orcjit_unlink_function(again);
            rest.unlinked.insert(again as usize, true);
            rest.link(original);
            rest.link(again);
            again
        };
        assert_eq!(named(c"llvm.smax.i64"), again, "the later declaration survives");
        assert!(!rest.intrinsic_of.is_empty(), "the call at rest went through a stand-in");
        assert!(rest.intrinsic_of.values().all(|&i| i == again), "stand-ins lead to the survivor");
        let object = rest.compile(part_of(&layout, "uses_smax.body"), &options, Build::Plain).unwrap();
        assert!(object.starts_with(b"\x7fELF"));
    }
}
