//! Whether an object needs memory placed low: it takes absolute addresses in 32 bits.

use object::elf;
use object::read::elf::{FileHeader, SectionHeader};

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
/// with it, so that a program with a large array links (see `orcjit link`).
///
/// Cheap: reads the section headers and counts relocation entries. Malformed input answers
/// 0; linking it reports what is wrong.
pub fn memory_needed(data: &[u8]) -> u64 {
    const PER_RELOCATION: u64 = 32;
    let Ok(header) = Elf::parse(data) else { return 0 };
    let Ok(endian) = header.endian() else { return 0 };
    let Ok(sections) = header.sections(endian, data) else { return 0 };
    let loaded = |sh: &<Elf as FileHeader>::SectionHeader| sh.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0;
    let mut total = 0u64;
    for sh in sections.iter() {
        if loaded(sh) {
            let align = sh.sh_addralign(endian).clamp(1, 1 << 30);
            total = total.saturating_add(sh.sh_size(endian).div_ceil(align).saturating_mul(align));
        } else if sh.sh_type(endian) == elf::SHT_RELA
            && sections.section(object::SectionIndex(sh.sh_info(endian) as usize)).is_ok_and(loaded)
        {
            let entries = sh.sh_size(endian) / (std::mem::size_of::<elf::Rela64<object::Endianness>>() as u64);
            total = total.saturating_add(entries.saturating_mul(PER_RELOCATION));
        }
    }
    total
}
