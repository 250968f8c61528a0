//! Whether an object needs memory placed low: it takes absolute addresses in 32 bits.

use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};

use super::file::Elf;

/// Whether the relocatable object `data` takes absolute addresses in 32 bits or fewer
/// (`R_X86_64_32`, `R_X86_64_32S`, `R_X86_64_16`, `R_X86_64_8`) in a section that is loaded,
/// as `-fno-pic -mcmodel=small` code does (`movl $.str, %edi`). Such an object links only
/// into memory placed below 2 GiB (`jit_mem::Placement::Low`). Relocations of sections that
/// are not loaded (DWARF offsets in debug sections) do not count.
///
/// Cheap: reads the section headers and relocation entries only. Malformed input answers
/// `false`; linking it reports what is wrong.
pub fn needs_low_placement(data: &[u8]) -> bool {
    let Ok(header) = Elf::parse(data) else { return false };
    let Ok(endian) = header.endian() else { return false };
    let Ok(sections) = header.sections(endian, data) else { return false };
    sections.iter().any(|sh| {
        if sh.sh_type(endian) != elf::SHT_RELA {
            return false;
        }
        let loaded = sections
            .section(object::SectionIndex(sh.sh_info(endian) as usize))
            .is_ok_and(|target| target.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0);
        let Ok(Some((relas, _))) = sh.rela(endian, data) else { return false };
        loaded
            && relas.iter().any(|r| {
                matches!(
                    r.r_type(endian, false),
                    elf::R_X86_64_32 | elf::R_X86_64_32S | elf::R_X86_64_16 | elf::R_X86_64_8
                )
            })
    })
}

/// An upper bound on the bytes of JIT memory the relocatable object `data` takes once linked:
/// its loaded sections (`SHF_ALLOC`, zero-filled ones included), each at its alignment, and
/// 32 bytes for every relocation of a loaded section, more than the GOT entry, stub or thread
/// pointer slot the linker may add for one. A caller sizes a memory manager's reservation
/// with it, so that a program with a large array links (see `orcjit link`). Large data
/// sections that the linker allocates apart from the manager (at least
/// [`crate::layout::LARGE_DATA_APART`] bytes of them in the object) are not counted.
///
/// Cheap: reads the section headers and counts relocation entries. Malformed input answers
/// 0; linking it reports what is wrong.
pub fn memory_needed(data: &[u8]) -> u64 {
    const PER_RELOCATION: u64 = 32;
    let Ok(header) = Elf::parse(data) else { return 0 };
    let Ok(endian) = header.endian() else { return 0 };
    let Ok(sections) = header.sections(endian, data) else { return 0 };
    let loaded = |sh: &<Elf as FileHeader>::SectionHeader| sh.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0;
    // As `layout::sections_apart` chooses them: large data, neither code nor thread-local.
    let apart = |sh: &<Elf as FileHeader>::SectionHeader| {
        let flags = sh.sh_flags(endian).0;
        flags & super::section::SHF_X86_64_LARGE != 0 && flags & (elf::SHF_EXECINSTR.0 | elf::SHF_TLS.0) == 0
    };
    let (mut total, mut large) = (0u64, 0u64);
    for sh in sections.iter() {
        if loaded(sh) {
            let align = sh.sh_addralign(endian).clamp(1, 1 << 30);
            let size = sh.sh_size(endian).div_ceil(align).saturating_mul(align);
            if apart(sh) {
                large = large.saturating_add(size);
            } else {
                total = total.saturating_add(size);
            }
        } else if sh.sh_type(endian) == elf::SHT_RELA
            && sections.section(object::SectionIndex(sh.sh_info(endian) as usize)).is_ok_and(loaded)
        {
            let entries = sh.sh_size(endian) / (std::mem::size_of::<elf::Rela64<object::Endianness>>() as u64);
            total = total.saturating_add(entries.saturating_mul(PER_RELOCATION));
        }
    }
    if large >= crate::layout::LARGE_DATA_APART { total } else { total.saturating_add(large) }
}

/// Whether the relocatable object `data` was built with `-fprofile-instr-generate`: it counts
/// into a loaded `__llvm_prf_cnts` section, which a profile runtime writes out at exit. clang's
/// driver links that runtime (with `-u__llvm_profile_runtime`: the object names none of it),
/// so a JIT that does not has nothing fail, and no profile written. Reads the section headers
/// only; malformed input answers `false`.
pub fn profile_instrumented(data: &[u8]) -> bool {
    let Ok(header) = Elf::parse(data) else { return false };
    let Ok(endian) = header.endian() else { return false };
    let Ok(sections) = header.sections(endian, data) else { return false };
    sections.iter().any(|sh| {
        sh.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0
            && sections.section_name(endian, sh).is_ok_and(|name| name == b"__llvm_prf_cnts")
    })
}

/// Whether `data` is LLVM bitcode (what `clang -flto -c` writes where an object was asked
/// for): the raw magic 'BC' 0xC0DE, or the wrapper's 0x0B17C0DE.
pub fn is_llvm_bitcode(data: &[u8]) -> bool {
    data.starts_with(b"BC\xC0\xDE") || data.starts_with(&[0xDE, 0xC0, 0x17, 0x0B])
}

/// Whether `name` is a C identifier: the section names a static linker makes `__start_` and
/// `__stop_` bounds for.
pub fn is_c_identifier(name: &[u8]) -> bool {
    !name.is_empty() && !name[0].is_ascii_digit() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// What ties the relocatable object `data` to other objects that a static link would bind
/// together, as two lists of keys: those it defines, and those it needs from whichever
/// objects define them ([`enclosure_groups`] puts each with those, transitively):
///
/// - Encapsulation sections: the loaded, non-empty sections whose names are C identifiers
///   (defined), and the sections it refers to through `__start_NAME` / `__stop_NAME` (needed;
///   [`crate::define_section_start_stop`] defines them over the object's own section). A
///   static linker brackets every object's section of that name.
/// - Local-dynamic thread-local storage ([`tls_tie`] of each name): the thread-local
///   variables it defines (not local), and the undefined ones its code reaches through
///   `R_X86_64_DTPOFF32` / `R_X86_64_DTPOFF64` (needed; relocations are read only if some
///   undefined symbol is typed TLS, as assemblers type them). That code asks `__tls_get_addr` for
///   its own module's block once and adds each variable's offset in it, so the variable must
///   be in the same TLS module: a hidden `extern __thread` variable compiled with `-fPIC`, or
///   any with `-ftls-model=local-dynamic`. A static linker makes one module of them all.
///
/// A caller linking objects one by one can see with this when a link apart would miss
/// something. Malformed input answers nothing.
pub fn link_ties(data: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut defines, mut needs) = (Vec::new(), Vec::new());
    let Ok(header) = Elf::parse(data) else { return (defines, needs) };
    let Ok(endian) = header.endian() else { return (defines, needs) };
    let Ok(sections) = header.sections(endian, data) else { return (defines, needs) };
    for sh in sections.iter() {
        let Ok(name) = sections.section_name(endian, sh) else { continue };
        if sh.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0 && sh.sh_size(endian) > 0 && is_c_identifier(name) {
            defines.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    if let Ok(symbols) = sections.symbols(endian, data, elf::SHT_SYMTAB) {
        // Assemblers type a thread-local variable TLS where it is only referred to as well:
        // without one undefined, no relocation needs reading (nearly every object).
        let mut undefined_tls = false;
        for sym in symbols.iter() {
            let Ok(name) = symbols.symbol_name(endian, sym) else { continue };
            if sym.st_shndx(endian) == elf::SHN_UNDEF {
                undefined_tls |= sym.st_type() == elf::STT_TLS;
                let section = name.strip_prefix(b"__start_").or_else(|| name.strip_prefix(b"__stop_"));
                if let Some(section) = section.filter(|s| is_c_identifier(s)) {
                    needs.push(String::from_utf8_lossy(section).into_owned());
                }
            } else if sym.st_type() == elf::STT_TLS && sym.st_bind() != elf::STB_LOCAL && !name.is_empty() {
                defines.push(tls_tie(name));
            }
        }
        for sh in sections.iter().filter(|sh| undefined_tls && sh.sh_type(endian) == elf::SHT_RELA) {
            // Code's relocations, not debug information's (DWARF locates a variable with one).
            let loaded = sections
                .section(object::SectionIndex(sh.sh_info(endian) as usize))
                .is_ok_and(|target| target.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0);
            let Ok(Some((relas, _))) = sh.rela(endian, data) else { continue };
            if !loaded {
                continue;
            }
            for r in relas {
                if !matches!(r.r_type(endian, false), elf::R_X86_64_DTPOFF32 | elf::R_X86_64_DTPOFF64) {
                    continue;
                }
                let Ok(sym) = symbols.symbol(object::SymbolIndex(r.r_sym(endian, false) as usize)) else { continue };
                if sym.st_shndx(endian) == elf::SHN_UNDEF {
                    if let Ok(name) = symbols.symbol_name(endian, sym).map(tls_tie) {
                        needs.push(name);
                    }
                }
            }
        }
    }
    for keys in [&mut defines, &mut needs] {
        keys.sort();
        keys.dedup();
    }
    (defines, needs)
}

const TLS_TIE: &str = "thread-local ";

/// The names the relocatable object `data` defines (not local; common symbols too), each with
/// whether the definition is weak, and those it refers to without defining them, strongly:
/// what a static linker pulls archive members for (a weak reference pulls none). Malformed
/// input answers nothing.
pub fn defined_and_needed_names(data: &[u8]) -> (Vec<(String, bool)>, Vec<String>) {
    let (mut defined, mut needed) = (Vec::new(), Vec::new());
    let Ok(header) = Elf::parse(data) else { return (defined, needed) };
    let Ok(endian) = header.endian() else { return (defined, needed) };
    let Ok(sections) = header.sections(endian, data) else { return (defined, needed) };
    let Ok(symbols) = sections.symbols(endian, data, elf::SHT_SYMTAB) else { return (defined, needed) };
    for sym in symbols.iter().skip(1) {
        let Ok(name) = symbols.symbol_name(endian, sym) else { continue };
        if name.is_empty() || sym.st_bind() == elf::STB_LOCAL {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if sym.st_shndx(endian) != elf::SHN_UNDEF {
            defined.push((name, sym.st_bind() == elf::STB_WEAK));
        } else if sym.st_bind() == elf::STB_GLOBAL {
            needed.push(name);
        }
    }
    (defined, needed)
}

/// The [`link_ties`] key of thread-local variable `name` (never a section's: it has a space).
pub fn tls_tie(name: &[u8]) -> String {
    format!("{TLS_TIE}{}", String::from_utf8_lossy(name))
}

/// The thread-local variable a [`link_ties`] key names, if it is a [`tls_tie`].
pub fn tls_tie_name(key: &str) -> Option<&str> {
    key.strip_prefix(TLS_TIE)
}

/// Groups objects (or modules) as a static link must keep them together, from each one's
/// [`link_ties`] (the keys it defines, and those it needs): one that needs a key goes with
/// every one that defines it, transitively. Returns the groups
/// as indices, each group in order and the groups in order of their first member. Linear in
/// the inputs when none encloses a section (a program of thousands of objects).
pub fn enclosure_groups(sections: &[(Vec<String>, Vec<String>)]) -> Vec<Vec<usize>> {
    // Each input's group, named by the group's first input.
    let mut group: Vec<usize> = (0..sections.len()).collect();
    for (user, (_, encloses)) in sections.iter().enumerate().filter(|(_, (_, encloses))| !encloses.is_empty()) {
        for (definer, (defines, _)) in sections.iter().enumerate() {
            if group[user] != group[definer] && encloses.iter().any(|section| defines.contains(section)) {
                let (keep, gone) = (group[user].min(group[definer]), group[user].max(group[definer]));
                group.iter_mut().filter(|g| **g == gone).for_each(|g| *g = keep);
            }
        }
    }
    let (mut groups, mut index_of): (Vec<Vec<usize>>, Vec<Option<usize>>) = (Vec::new(), vec![None; sections.len()]);
    for (input, &first) in group.iter().enumerate() {
        let at = *index_of[first].get_or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(input);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::enclosure_groups;

    fn sections_of(defines: &[&str], encloses: &[&str]) -> (Vec<String>, Vec<String>) {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        (owned(defines), owned(encloses))
    }

    #[test]
    fn inputs_of_one_enclosed_section_group_together_transitively_and_in_order() {
        let objects = [
            sections_of(&["cmds"], &["cmds"]),   // walks cmds, and defines some
            sections_of(&["tests"], &[]),        // tests, which 3 walks
            sections_of(&[], &[]),               // alone
            sections_of(&["cmds"], &["tests"]),  // defines cmds, walks tests
            sections_of(&["tests"], &[]),        // more tests
            sections_of(&["cmds"], &[]),         // more cmds
            sections_of(&["other"], &["other"]), // walks its own section only
        ];
        assert_eq!(enclosure_groups(&objects), vec![vec![0, 1, 3, 4, 5], vec![2], vec![6]]);
        assert_eq!(enclosure_groups(&objects[..3]), vec![vec![0], vec![1], vec![2]], "nothing encloses another's");
    }
}
