//! Sections: each allocated section becomes one block; the rest are skipped.

use jit_mem::Prot;
use object::elf;
use object::read::elf::SectionHeader;

use super::file::{Builder, Contents};
use crate::{LinkError, SectionKind};

/// `SHF_GNU_RETAIN`: keep the section even if nothing references it.
const SHF_GNU_RETAIN: u64 = 0x20_0000;

/// `SHF_X86_64_LARGE`: a large data section of the medium or large code model, which code
/// reaches only through 64-bit addresses or the GOT (x86-64 psABI, "Section Flags").
pub(super) const SHF_X86_64_LARGE: u64 = 0x1000_0000;

impl Builder<'_> {
    /// Makes a block for every allocated section.
    pub(super) fn sections(&mut self) -> Result<(), LinkError> {
        self.comdat_groups()?;
        for (index, sh) in self.sections.enumerate() {
            let index = index.0;
            let sh_type = sh.sh_type(self.endian);
            let flags = sh.sh_flags(self.endian).0;
            if flags & elf::SHF_ALLOC.0 == 0 {
                // Debug info, symbol and string tables, relocations, groups, notes, addrsig:
                // nothing of them is loaded.
                continue;
            }
            let name = self.section_name(index);
            let zero_fill = match sh_type {
                elf::SHT_NOBITS => true,
                elf::SHT_PROGBITS
                | elf::SHT_INIT_ARRAY
                | elf::SHT_FINI_ARRAY
                | elf::SHT_PREINIT_ARRAY
                | elf::SHT_X86_64_UNWIND => false,
                // `.note.gnu.property` and friends are allocated in executables only.
                elf::SHT_NOTE => continue,
                other => {
                    return Err(LinkError::Unsupported {
                        object: self.object(),
                        what: format!("allocated section {name} of type {:#x}", other.0),
                    });
                }
            };
            if flags & elf::SHF_COMPRESSED.0 != 0 {
                return Err(LinkError::Unsupported {
                    object: self.object(),
                    what: format!("compressed allocated section {name}"),
                });
            }
            let exec = flags & elf::SHF_EXECINSTR.0 != 0;
            let write = flags & elf::SHF_WRITE.0 != 0;
            let tls = flags & elf::SHF_TLS.0 != 0;
            let prot = match (exec, write) {
                (true, false) => Prot::RX,
                (false, true) => Prot::RW,
                (false, false) => Prot::R,
                (true, true) => {
                    return Err(LinkError::Unsupported {
                        object: self.object(),
                        what: format!("section {name} is both writable and executable"),
                    });
                }
            };
            // Thread-local data is `.tdata` (PROGBITS) or `.tbss` (NOBITS), laid out in a TLS
            // image at offsets, not at addresses: code, unwind tables and initializer tables
            // there would be registered or called at those offsets.
            let tls_data = matches!(sh_type, elf::SHT_PROGBITS | elf::SHT_NOBITS)
                && !exec
                && name != crate::eh_frame::EH_FRAME_SECTION
                && !crate::init_fini::is_init_fini_section(&name);
            if tls && !tls_data {
                return Err(self.malformed(format!(
                    "section {name} (type {:#x}{}) is marked thread-local (SHF_TLS), which only data sections may be",
                    sh_type,
                    if exec { ", executable" } else { "" }
                )));
            }
            let kind = if tls { SectionKind::ThreadLocal } else { SectionKind::Regular };
            let align = sh.sh_addralign(self.endian).max(1);
            if !align.is_power_of_two() {
                return Err(self.malformed(format!("section {name} has alignment {align}, not a power of two")));
            }
            let size = sh.sh_size(self.endian);
            let large = flags & SHF_X86_64_LARGE != 0 && !exec;
            let key = (name.clone(), prot, kind, large);
            let section = match self.graph_sections.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.graph.add_section_of_kind(name.clone(), prot, kind);
                    if let Some(s) = self.graph.section_mut(id) {
                        s.set_large(large);
                    }
                    self.graph_sections.insert(key, id);
                    id
                }
            };
            let block = if zero_fill {
                self.graph.add_zero_fill_block(section, size, align, 0)?
            } else {
                let bytes =
                    sh.data(self.endian, self.data).map_err(|e| self.malformed(format!("section {name}: {e}")))?;
                match self.contents {
                    Contents::Copied => self.graph.add_content_block(section, bytes.to_vec(), align, 0)?,
                    Contents::Sized => self.graph.add_zero_fill_block(section, bytes.len() as u64, align, 0)?,
                }
            };
            self.section_blocks[index] = Some(block);
            // Sections that must stay whether or not anything references them.
            let retained = flags & SHF_GNU_RETAIN != 0
                || matches!(sh_type, elf::SHT_INIT_ARRAY | elf::SHT_FINI_ARRAY | elf::SHT_PREINIT_ARRAY)
                || crate::init_fini::is_init_fini_section(&name);
            let sym = self.graph.add_anonymous_symbol(block, 0, 0, false, retained)?;
            self.section_symbols.insert(index, sym);
        }
        Ok(())
    }
}
