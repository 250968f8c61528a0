//! IR inputs: bitcode, textual IR, or a module built on the compile thread; parsing them into
//! an LLVM context, and reading the symbols a module defines (its interface).

use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::values::{AsValueRef, GlobalValue};
use inkwell::{GlobalVisibility, llvm_sys};
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
        Ok(if is_bitcode(&bytes) {
            IrModule::bitcode(name, bytes)
        } else {
            IrModule { name, source: IrSource::Text(bytes.into()) }
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Bitcode starts with 'BC' 0xC0DE, or with the wrapper magic 0x0B17C0DE.
fn is_bitcode(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BC\xC0\xDE") || bytes.starts_with(&[0xDE, 0xC0, 0x17, 0x0B])
}

/// Parses bitcode or text into `context`; errors carry LLVM's diagnostic and the module's name.
pub(crate) fn parse<'c>(context: &'c Context, name: &str, source: &IrSource) -> Result<Module<'c>> {
    let fail = |what: &str, msg: String| Error::msg(format!("{name}: {what}: {}", msg.trim_end()));
    match source {
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
    }
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
    interface
}

/// The module's global aliases (inkwell has no iterator for them).
pub(crate) fn aliases<'c>(module: &Module<'c>) -> Vec<GlobalValue<'c>> {
    let mut out = Vec::new();
    // SAFETY: walks the module's alias list with LLVM's own iterator functions; the values are
    // owned by the module, which outlives the returned handles (same 'c lifetime).
    unsafe {
        let mut cur = llvm_sys::core::LLVMGetFirstGlobalAlias(module.as_mut_ptr());
        while !cur.is_null() {
            out.push(GlobalValue::new(cur));
            cur = llvm_sys::core::LLVMGetNextGlobalAlias(cur);
        }
    }
    out
}

fn alias_is_callable(alias: GlobalValue<'_>) -> bool {
    // SAFETY: reads the alias's aliasee and its type kind; both owned by the module.
    unsafe {
        let aliasee = llvm_sys::core::LLVMAliasGetAliasee(alias.as_value_ref());
        !aliasee.is_null() && !llvm_sys::core::LLVMIsAFunction(aliasee).is_null()
    }
}
