//! The GDB JIT interface (GDB manual, "JIT Compilation Interface"): for each linked object, a
//! small in-memory ELF file naming its functions at their addresses is put on the list that
//! `__jit_debug_descriptor` heads, and `__jit_debug_register_code` is called; GDB, which keeps
//! a breakpoint there, reads the file, so backtraces name JIT'd frames.
//!
//! The file is a relocatable ELF64 object with one `SHT_NOBITS` `.text` section whose address
//! (`sh_addr`, as LLVM's debug object plugin patches it) spans the object's functions, and a
//! symbol table of those functions, section-relative. Names read as in the perf map
//! ([`crate::PerfMap`]).
//!
//! Files stay registered for the process's life (an object's removal does not unregister it).

use std::ptr::null_mut;
use std::sync::Arc;

use jit_core::{JitDylib, Result};
use jit_link::{LinkGraph, PassConfig, Phase};
use parking_lot::Mutex;

use crate::LinkPlugin;

/// `struct jit_code_entry` of the GDB manual.
#[repr(C)]
struct JitCodeEntry {
    next_entry: *mut JitCodeEntry,
    prev_entry: *mut JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

/// `struct jit_descriptor` of the GDB manual.
#[repr(C)]
pub struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *mut JitCodeEntry,
    first_entry: *mut JitCodeEntry,
}

const JIT_REGISTER_FN: u32 = 1;

/// The descriptor GDB reads (by this name). Written only under [`REGISTRATION`].
#[unsafe(no_mangle)]
pub static mut __jit_debug_descriptor: JitDescriptor =
    JitDescriptor { version: 1, action_flag: 0, relevant_entry: null_mut(), first_entry: null_mut() };

/// The function GDB breaks in (by this name) to read the descriptor.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // Something GDB's breakpoint can sit on that the optimizer keeps.
    std::hint::black_box(());
}

/// Serializes changes to the descriptor's list.
static REGISTRATION: Mutex<()> = Mutex::new(());

/// Adds `file` (leaked: GDB may read it at any time) to the list and tells GDB.
fn register(file: Vec<u8>) {
    let file: &'static [u8] = Box::leak(file.into_boxed_slice());
    let _guard = REGISTRATION.lock();
    // SAFETY: the descriptor and its list are only changed here, under REGISTRATION; the entry
    // and the file are leaked, so they outlive every reader.
    unsafe {
        let descriptor = &raw mut __jit_debug_descriptor;
        let entry = Box::into_raw(Box::new(JitCodeEntry {
            next_entry: (*descriptor).first_entry,
            prev_entry: null_mut(),
            symfile_addr: file.as_ptr(),
            symfile_size: file.len() as u64,
        }));
        if !(*descriptor).first_entry.is_null() {
            (*(*descriptor).first_entry).prev_entry = entry;
        }
        (*descriptor).first_entry = entry;
        (*descriptor).relevant_entry = entry;
        (*descriptor).action_flag = JIT_REGISTER_FN;
    }
    __jit_debug_register_code();
}

/// Registers every object linked by the layer it is added to with GDB
/// ([`ObjectLinkingLayer::add_plugin`](crate::ObjectLinkingLayer::add_plugin)).
#[derive(Default)]
pub struct GdbRegistration;

impl GdbRegistration {
    pub fn new() -> Arc<Self> {
        Arc::new(GdbRegistration)
    }
}

impl LinkPlugin for GdbRegistration {
    fn modify_pass_config(&self, _dylib: &JitDylib, _graph: &LinkGraph, config: &mut PassConfig) -> Result<()> {
        config.add(Phase::PostAllocation, "gdb jit registration", |graph| {
            let functions = crate::perf_map::functions(graph);
            if !functions.is_empty() {
                register(symbol_file(&functions));
            }
            Ok(())
        });
        Ok(())
    }
}

/// The ELF file naming `functions` (address, size, name): see the module's doc. Layout (ELF64,
/// little-endian; System V gABI): header, `.symtab`, `.strtab`, `.shstrtab`, section headers
/// (null, `.text`, `.symtab`, `.strtab`, `.shstrtab`).
fn symbol_file(functions: &[(u64, u64, String)]) -> Vec<u8> {
    let lo = functions.iter().map(|f| f.0).min().unwrap_or(0);
    let hi = functions.iter().map(|f| f.0 + f.1).max().unwrap_or(0);

    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24]; // the null symbol
    for (addr, size, name) in functions {
        let name_at = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        symtab.extend_from_slice(&name_at.to_le_bytes()); // st_name
        symtab.push((1 << 4) | 2); // st_info: STB_GLOBAL, STT_FUNC
        symtab.push(0); // st_other: STV_DEFAULT
        symtab.extend_from_slice(&1u16.to_le_bytes()); // st_shndx: .text
        symtab.extend_from_slice(&(addr - lo).to_le_bytes()); // st_value, section-relative
        symtab.extend_from_slice(&size.to_le_bytes()); // st_size
    }
    let shstrtab = b"\0.text\0.symtab\0.strtab\0.shstrtab\0";
    let (text_name, symtab_name, strtab_name, shstrtab_name) = (1u32, 7u32, 15u32, 23u32);

    let symtab_at = 64usize;
    let strtab_at = symtab_at + symtab.len();
    let shstrtab_at = strtab_at + strtab.len();
    let headers_at = (shstrtab_at + shstrtab.len()).next_multiple_of(8);

    let mut out = Vec::with_capacity(headers_at + 5 * 64);
    // e_ident: ELFMAG, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE, padding.
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&1u16.to_le_bytes()); // e_type: ET_REL
    out.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&(headers_at as u64).to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&5u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&4u16.to_le_bytes()); // e_shstrndx
    out.extend_from_slice(&symtab);
    out.extend_from_slice(&strtab);
    out.extend_from_slice(shstrtab);
    out.resize(headers_at, 0);

    #[allow(clippy::too_many_arguments)]
    fn header(
        out: &mut Vec<u8>,
        name: u32,
        kind: u32,
        flags: u64,
        addr: u64,
        at: u64,
        size: u64,
        link: u32,
        info: u32,
        align: u64,
        entsize: u64,
    ) {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&info.to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&entsize.to_le_bytes());
    }
    header(&mut out, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    // .text: SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, at the functions' addresses.
    header(&mut out, text_name, 8, 0x2 | 0x4, lo, symtab_at as u64, hi - lo, 0, 0, 16, 0);
    // .symtab: SHT_SYMTAB, linked to .strtab; info = index of the first non-local symbol.
    header(&mut out, symtab_name, 2, 0, 0, symtab_at as u64, symtab.len() as u64, 3, 1, 8, 24);
    header(&mut out, strtab_name, 3, 0, 0, strtab_at as u64, strtab.len() as u64, 0, 0, 1, 0);
    header(&mut out, shstrtab_name, 3, 0, 0, shstrtab_at as u64, shstrtab.len() as u64, 0, 0, 1, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_symbol_file_is_an_elf_object_naming_each_function_at_its_address() {
        use object::{Object, ObjectSection, ObjectSymbol};
        let functions = vec![(0x7f00_0000_1000, 0x40, "f".to_string()), (0x7f00_0000_1080, 0x10, "g [tier 2]".into())];
        let bytes = symbol_file(&functions);
        let file = object::File::parse(&*bytes).unwrap();
        let text = file.section_by_name(".text").unwrap();
        assert_eq!((text.address(), text.size()), (0x7f00_0000_1000, 0x90));
        let symbols: Vec<(String, u64, u64)> =
            file.symbols().map(|s| (s.name().unwrap().to_string(), s.address(), s.size())).collect();
        // Relocatable: values are section-relative.
        assert_eq!(symbols, vec![("f".into(), 0, 0x40), ("g [tier 2]".into(), 0x80, 0x10)]);
    }
}
