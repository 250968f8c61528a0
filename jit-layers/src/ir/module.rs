//! IR inputs: bitcode, textual IR, or a module built on the compile thread; parsing them into
//! an LLVM context, and reading the symbols a module defines (its interface).

use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::values::{AsValueRef, GlobalValue};
use inkwell::{GlobalVisibility, ThreadLocalMode, llvm_sys};
use jit_core::{Error, ExecutionSession, Interface, Result, SymbolFlags};

/// Builds a module in the context it is given, on the thread that compiles it.
pub type ModuleBuilder = Box<dyn for<'c> FnOnce(&'c Context) -> std::result::Result<Module<'c>, String> + Send>;

/// Where a module's IR comes from.
pub enum IrSource {
    /// LLVM bitcode (`.bc`).
    Bitcode(Arc<[u8]>),
    /// Textual IR (`.ll`).
    Text(Arc<[u8]>),
    /// A front end's module, built when (and where) it is compiled. Its interface must be given
    /// up front, since nothing is built before the first lookup.
    Built { interface: Interface, build: ModuleBuilder },
}

/// A module of LLVM IR to compile, with a name for messages.
pub struct IrModule {
    pub(crate) name: String,
    pub(crate) source: IrSource,
}

impl IrModule {
    pub fn bitcode(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        IrModule { name: name.into(), source: IrSource::Bitcode(bytes.into()) }
    }

    pub fn text(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        IrModule { name: name.into(), source: IrSource::Text(Arc::from(text.into_bytes())) }
    }

    /// A module built by `build` on the compile thread; `interface` lists the symbols it will
    /// define (with their flags).
    pub fn built(name: impl Into<String>, interface: Interface, build: ModuleBuilder) -> Self {
        IrModule { name: name.into(), source: IrSource::Built { interface, build } }
    }

    /// Reads a `.bc` or `.ll` file (bitcode is recognized by its magic, whatever the name).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("cannot read '{}': {e}", path.display())))?;
        let name = path.display().to_string();
        Ok(if jit_link::is_llvm_bitcode(&bytes) {
            IrModule::bitcode(name, bytes)
        } else {
            IrModule { name, source: IrSource::Text(bytes.into()) }
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Reads `source` only as far as its globals' headers (bitcode: function bodies are left
/// unread; text: parsed whole), enough to read its interface; errors carry LLVM's diagnostic.
pub(crate) fn parse_headers<'c>(context: &'c Context, name: &str, source: &IrSource) -> Result<Module<'c>> {
    let IrSource::Bitcode(bytes) = source else { return parse(context, name, source) };
    let buffer = MemoryBuffer::create_from_memory_range_copy(bytes, name);
    let raw = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    let mut module = std::ptr::null_mut();
    // The lazy reader reports errors through the context's diagnostic handler, whose default
    // exits the process: collect them instead, for as long as the call lasts.
    let mut messages: Vec<String> = Vec::new();
    // SAFETY: the handler and its context pointer (`messages`, on this stack frame) are
    // installed for the duration of the call only and removed before `messages` goes away. On
    // success LLVMGetBitcodeModuleInContext2 takes ownership of the buffer (hence the forget
    // above) and stores a module owned by `context` in `module`; on failure the buffer is
    // disposed of below.
    let failed = unsafe {
        let ctx = context.raw();
        llvm_sys::core::LLVMContextSetDiagnosticHandler(ctx, Some(collect_diagnostic), (&raw mut messages).cast());
        let failed = llvm_sys::bit_reader::LLVMGetBitcodeModuleInContext2(ctx, raw, &mut module);
        llvm_sys::core::LLVMContextSetDiagnosticHandler(ctx, None, std::ptr::null_mut());
        failed
    };
    if failed != 0 || module.is_null() {
        // It owns the buffer only on success.
        // SAFETY: `raw` is the buffer created above, owned by nothing else on failure.
        unsafe { llvm_sys::core::LLVMDisposeMemoryBuffer(raw) };
        let reason = if messages.is_empty() { "unreadable bitcode".to_string() } else { messages.join("; ") };
        return Err(Error::msg(format!("{name}: invalid bitcode: {reason}")));
    }
    // SAFETY: `module` is a live module owned by `context`, handed to inkwell's owner type.
    Ok(unsafe { Module::new(module) })
}

/// An LLVM diagnostic handler that appends each message to the `Vec<String>` it is given.
extern "C" fn collect_diagnostic(info: llvm_sys::prelude::LLVMDiagnosticInfoRef, sink: *mut std::ffi::c_void) {
    // SAFETY: `sink` is the `Vec<String>` installed with this handler in `parse_headers`, alive
    // while the handler is installed; `info` is valid for the duration of the call, and the
    // description LLVM returns is a NUL-terminated string we must free.
    unsafe {
        let text = llvm_sys::core::LLVMGetDiagInfoDescription(info);
        if !text.is_null() {
            let message = CStr::from_ptr(text).to_string_lossy().into_owned();
            llvm_sys::core::LLVMDisposeMessage(text);
            (*sink.cast::<Vec<String>>()).push(message);
        }
    }
}

/// Parses bitcode or text into `context` and strips its debug info (see [`strip_debug_info`]);
/// errors carry LLVM's diagnostic and the module's name.
pub(crate) fn parse<'c>(context: &'c Context, name: &str, source: &IrSource) -> Result<Module<'c>> {
    parse_stripped(context, name, source).map(|(module, _)| module)
}

/// As [`parse`], and whether debug info was stripped. Such a module took much longer to read
/// than its stripped bitcode takes (CPython in one module: 2.5 s against 0.8 s, and 25 MB of
/// bitcode against 7 MB), so a caller that reads it again reads [`stripped_bitcode`] instead.
pub(crate) fn parse_stripped<'c>(context: &'c Context, name: &str, source: &IrSource) -> Result<(Module<'c>, bool)> {
    let fail = |what: &str, msg: String| Error::msg(format!("{name}: {what}: {}", msg.trim_end()));
    let module = match source {
        IrSource::Bitcode(bytes) => {
            let buffer = MemoryBuffer::create_from_memory_range(bytes, name);
            Module::parse_bitcode_from_buffer(&buffer, context).map_err(|e| fail("invalid bitcode", e.to_string()))
        }
        IrSource::Text(text) => {
            // LLVM's IR parser wants a NUL-terminated buffer.
            let buffer = MemoryBuffer::create_from_memory_range_copy(&[text.as_ref(), b"\0"].concat(), name);
            context.create_module_from_ir(buffer).map_err(|e| fail("invalid IR", e.to_string()))
        }
        IrSource::Built { .. } => Err(Error::msg(format!("{name}: a built module is not parsed"))),
    }?;
    let stripped = strip_debug_info(&module);
    Ok((module, stripped))
}

/// `module` as bitcode, for reading it again: called right after [`parse_stripped`], before
/// anything else changes the module.
pub(crate) fn stripped_bitcode(module: &Module<'_>) -> Arc<[u8]> {
    module.write_bitcode_to_memory().as_slice().into()
}

/// Removes `module`'s debug info, which no part of the JIT reads: the linker skips `.debug_*`
/// sections, and the GDB and perf registrations name functions from the symbol table. Emitting
/// it would be work thrown away, and often most of the work. The code generator writes every
/// compile unit's global variables, enumerations and retained types into each object it makes
/// from the module, so a module compiled a partition at a time wrote them once per function
/// (see "Profiling and debugging JIT'd code" in the crate's README for what that cost).
/// Returns whether there was any.
pub(crate) fn strip_debug_info(module: &Module<'_>) -> bool {
    // SAFETY: `module` is a live module owned by the calling thread's context; LLVM's
    // `StripDebugInfo` removes debug intrinsics and records, `!dbg` attachments and the
    // debug compile units, leaving valid IR.
    unsafe { llvm_sys::debuginfo::LLVMStripModuleDebugInfo(module.as_mut_ptr()) != 0 }
}

/// The symbol a global gets in the object: LLVM's `\x01` prefix means "use this name as is"
/// (and is dropped); ELF x86-64 adds no prefix.
pub(crate) fn object_name(raw: &CStr) -> Option<&str> {
    let bytes = raw.to_bytes();
    let bytes = bytes.strip_prefix(b"\x01").unwrap_or(bytes);
    if bytes.is_empty() { None } else { std::str::from_utf8(bytes).ok() }
}

/// How a definition of this linkage appears in the object, if it does: its flags.
fn flags_for(linkage: Linkage, visibility: GlobalVisibility, callable: bool) -> Option<SymbolFlags> {
    let mut flags = match linkage {
        Linkage::External | Linkage::DLLExport => SymbolFlags::empty(),
        Linkage::WeakAny | Linkage::WeakODR | Linkage::LinkOnceAny | Linkage::LinkOnceODR => SymbolFlags::WEAK,
        Linkage::Common => SymbolFlags::WEAK | SymbolFlags::COMMON,
        // Local, or not emitted at all.
        _ => return None,
    };
    if visibility != GlobalVisibility::Hidden {
        flags |= SymbolFlags::EXPORTED;
    }
    if callable {
        flags |= SymbolFlags::CALLABLE;
    }
    Some(flags)
}

/// The symbols `module` defines that other code can see: functions and variables with a
/// body or initializer, and aliases, of non-local linkage.
pub(crate) fn interface_of(session: &ExecutionSession, module: &Module<'_>) -> Interface {
    let mut interface = Interface::new();
    let mut add = |g: GlobalValue<'_>, callable: bool| {
        if g.is_declaration() {
            return;
        }
        let Some(flags) = flags_for(g.get_linkage(), g.get_visibility(), callable) else { return };
        if let Some(name) = object_name(g.get_name()) {
            interface.push(session.intern(name), flags);
        }
    };
    for f in module.get_functions() {
        add(f.as_global_value(), true);
    }
    for g in module.get_globals() {
        add(g, false);
    }
    for alias in aliases(module) {
        add(alias, alias_is_callable(alias));
    }
    for ifunc in ifuncs(module) {
        add(ifunc, true);
    }
    interface
}

/// The module's indirect functions (`ifunc`, `target_clones`), each a function its object
/// defines (inkwell has no iterator for them).
fn ifuncs<'c>(module: &Module<'c>) -> Vec<GlobalValue<'c>> {
    use llvm_sys::core::{LLVMGetFirstGlobalIFunc, LLVMGetNextGlobalIFunc};
    walk(module, LLVMGetFirstGlobalIFunc, LLVMGetNextGlobalIFunc)
}

/// The values of one of the module's global lists, walked with LLVM's iterator functions for
/// it (`first`, `next`).
fn walk<'c>(
    module: &Module<'c>,
    first: unsafe extern "C" fn(llvm_sys::prelude::LLVMModuleRef) -> llvm_sys::prelude::LLVMValueRef,
    next: unsafe extern "C" fn(llvm_sys::prelude::LLVMValueRef) -> llvm_sys::prelude::LLVMValueRef,
) -> Vec<GlobalValue<'c>> {
    let mut out = Vec::new();
    // SAFETY: `first` and `next` are one list's iterator functions; the values are owned by
    // the module, which outlives the returned handles (same 'c lifetime).
    unsafe {
        let mut cur = first(module.as_mut_ptr());
        while !cur.is_null() {
            out.push(GlobalValue::new(cur));
            cur = next(cur);
        }
    }
    out
}

/// Whether the module has static constructors or destructors (its object will have
/// `.init_array`/`.fini_array` entries).
pub(crate) fn has_initializers(module: &Module<'_>) -> bool {
    ["llvm.global_ctors", "llvm.global_dtors"].iter().any(|n| module.get_global(n).is_some_and(|g| !g.is_declaration()))
}

/// The module's global aliases (inkwell has no iterator for them).
pub(crate) fn aliases<'c>(module: &Module<'c>) -> Vec<GlobalValue<'c>> {
    use llvm_sys::core::{LLVMGetFirstGlobalAlias, LLVMGetNextGlobalAlias};
    walk(module, LLVMGetFirstGlobalAlias, LLVMGetNextGlobalAlias)
}

fn alias_is_callable(alias: GlobalValue<'_>) -> bool {
    // SAFETY: reads the alias's aliasee and its type kind; both owned by the module.
    unsafe {
        let aliasee = llvm_sys::core::LLVMAliasGetAliasee(alias.as_value_ref());
        !aliasee.is_null() && !llvm_sys::core::LLVMIsAFunction(aliasee).is_null()
    }
}

/// For each of `modules`: what ties it to other modules or objects, as
/// [`jit_link::link_ties`] finds it in an object (read as far as the globals' headers only):
/// - the C-identifier sections its globals are defined in, and the sections it encloses with
///   `__start_X` / `__stop_X` declarations;
/// - the thread-local variables it defines (not local), and those it declares that its code
///   will reach with the local-dynamic model, which needs them in its own TLS module: hidden
///   or protected ones (known to be in the same module, so LLVM chooses local-dynamic for
///   position-independent code) and any marked `localdynamic`.
///
/// A module built on the compile thread has none.
pub(crate) fn link_ties(modules: &[IrModule]) -> Result<Vec<(Vec<String>, Vec<String>)>> {
    let context = Context::create();
    let mut ties = Vec::with_capacity(modules.len());
    for m in modules {
        if matches!(m.source, IrSource::Built { .. }) {
            ties.push(Default::default());
            continue;
        }
        let module = parse_headers(&context, &m.name, &m.source)?;
        let (mut defines, mut needs) = (Vec::new(), Vec::new());
        for global in module.get_globals() {
            let name = global.get_name().to_bytes();
            if global.is_declaration() {
                let bounded = name.strip_prefix(b"__start_").or_else(|| name.strip_prefix(b"__stop_"));
                if let Some(section) = bounded.filter(|s| jit_link::is_c_identifier(s)) {
                    needs.push(String::from_utf8_lossy(section).into_owned());
                }
                let local_dynamic = global.get_visibility() != GlobalVisibility::Default
                    || global.get_thread_local_mode() == Some(ThreadLocalMode::LocalDynamicTLSModel);
                if global.is_thread_local() && local_dynamic {
                    needs.push(jit_link::tls_tie(name));
                }
                continue;
            }
            if let Some(section) = global.get_section().map(CStr::to_bytes).filter(|s| jit_link::is_c_identifier(s)) {
                defines.push(String::from_utf8_lossy(section).into_owned());
            }
            if global.is_thread_local() && !matches!(global.get_linkage(), Linkage::Internal | Linkage::Private) {
                defines.push(jit_link::tls_tie(name));
            }
        }
        ties.push((defines, needs));
    }
    Ok(ties)
}

/// `group` linked into one module, named by its members' names joined with "+" (the module
/// itself if it is alone). Modules whose `__start_X` / `__stop_X` must enclose section `X` of
/// another are compiled as one this way: each module becomes objects of its own, where they
/// would enclose the section of the module that uses them only.
pub(crate) fn linked(mut group: Vec<IrModule>) -> Result<IrModule> {
    if group.len() == 1 {
        return Ok(group.remove(0));
    }
    let context = Context::create();
    let name = group.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join("+");
    let linked = parse(&context, &group[0].name, &group[0].source)?;
    for m in &group[1..] {
        let other = parse(&context, &m.name, &m.source)?;
        linked.link_in_module(other).map_err(|e| Error::msg(format!("{name}: cannot link {}: {e}", m.name)))?;
    }
    Ok(IrModule::bitcode(name, stripped_bitcode(&linked)))
}
