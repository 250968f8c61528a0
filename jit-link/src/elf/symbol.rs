//! Symbols: definitions in blocks, externals, absolutes and common symbols.

use std::borrow::Cow;

use jit_mem::{Prot, TargetAddr};
use object::elf;
use object::read::elf::Sym;

use super::file::Builder;
use crate::{LinkError, Linkage, Scope};

impl Builder<'_> {
    /// Makes a graph symbol for every ELF symbol that can be referenced.
    pub(super) fn symbols(&mut self) -> Result<(), LinkError> {
        let endian = self.endian;
        for (index, sym) in self.symtab.enumerate() {
            if index.0 == 0 {
                continue;
            }
            let st_type = sym.st_type();
            if st_type == elf::STT_FILE {
                continue;
            }
            let raw_name = self
                .symtab
                .symbol_name(endian, sym)
                .map_err(|e| self.malformed(format!("name of symbol #{}: {e}", index.0)))?;
            // Names are almost always UTF-8: borrow them rather than copy them.
            let name = match std::str::from_utf8(raw_name) {
                Ok(name) => Cow::Borrowed(name),
                Err(_) => String::from_utf8_lossy(raw_name),
            };
            let bind = sym.st_bind();
            let local = bind == elf::STB_LOCAL;
            let mut linkage = match bind {
                elf::STB_LOCAL | elf::STB_GLOBAL => Linkage::Strong,
                elf::STB_WEAK | elf::STB_GNU_UNIQUE => Linkage::Weak,
                other => {
                    return Err(self.malformed(format!("symbol {name} has binding {}", other.0)));
                }
            };
            let scope = if local {
                Scope::Local
            } else {
                match sym.st_visibility() {
                    elf::STV_HIDDEN | elf::STV_INTERNAL => Scope::Hidden,
                    _ => Scope::Default,
                }
            };
            let thread_local = st_type == elf::STT_TLS;
            let ifunc = st_type == elf::STT_GNU_IFUNC;
            let shndx = sym.st_shndx(endian);
            if ifunc && matches!(shndx, elf::SHN_UNDEF | elf::SHN_ABS | elf::SHN_COMMON) {
                return Err(LinkError::Unsupported {
                    object: self.object(),
                    what: format!("indirect function (STT_GNU_IFUNC) {name} not defined in a section"),
                });
            }
            let value = sym.st_value(endian);
            let size = sym.st_size(endian);
            let graph_sym = if shndx == elf::SHN_UNDEF {
                if name.is_empty() || local {
                    return Err(self.malformed(format!("undefined symbol #{} has no name or is local", index.0)));
                }
                let id = self.graph.add_external_symbol(name.as_ref().into(), linkage);
                self.graph.set_thread_local(id, thread_local);
                Some(id)
            } else if shndx == elf::SHN_ABS {
                if name.is_empty() {
                    None
                } else {
                    Some(self.graph.add_absolute_symbol(
                        Some(name.as_ref().into()),
                        TargetAddr(value),
                        linkage,
                        scope,
                        !local,
                    )?)
                }
            } else if shndx == elf::SHN_COMMON {
                // A tentative definition: zero fill aligned to its value, weak as in LLVM.
                let align = value.max(1);
                if !align.is_power_of_two() {
                    return Err(self.malformed(format!("common symbol {name} has alignment {align}")));
                }
                let section = match self.common {
                    Some(s) => s,
                    None => {
                        let s = self.graph.add_section(".common", Prot::RW);
                        self.common = Some(s);
                        s
                    }
                };
                let block = self.graph.add_zero_fill_block(section, size, align, 0)?;
                Some(self.graph.add_defined_symbol(
                    block,
                    0,
                    Some(name.as_ref().into()),
                    size,
                    Linkage::Weak,
                    scope,
                    false,
                    true,
                )?)
            } else {
                let section = self
                    .symtab
                    .symbol_section(endian, sym, index)
                    .map_err(|e| self.malformed(format!("section of symbol {name}: {e}")))?;
                let Some(section) = section else {
                    return Err(self.malformed(format!("symbol {name} has section index {:#x}", shndx.0)));
                };
                if section.0 >= self.section_blocks.len() {
                    return Err(
                        self.malformed(format!("symbol {name} is in section #{}, which does not exist", section.0))
                    );
                }
                match self.section_blocks[section.0] {
                    // A symbol of a skipped (debug, non-allocated) section.
                    None => None,
                    Some(_) if st_type == elf::STT_SECTION => self.section_symbols.get(&section.0).copied(),
                    Some(block) => {
                        let block_size = self.graph.block(block).map(|b| b.size()).unwrap_or(0);
                        if value > block_size {
                            return Err(self.malformed(format!(
                                "symbol {name} at offset {value:#x} lies outside its {block_size}-byte section {}",
                                self.section_name(section.0)
                            )));
                        }
                        if !local && self.in_comdat[section.0] {
                            linkage = Linkage::Weak;
                        }
                        let sym_name = if name.is_empty() { None } else { Some(name.as_ref().into()) };
                        if ifunc {
                            // `value` is the resolver; the name goes to the stub that calls it.
                            let resolver = self.graph.add_anonymous_symbol(block, value, size, true, false)?;
                            let edges = self.contents == super::file::Contents::Copied;
                            let stub = crate::x86_64::add_indirect_function(
                                &mut self.graph,
                                sym_name,
                                linkage,
                                scope,
                                resolver,
                                edges,
                            )?;
                            self.symbols[index.0] = Some(stub);
                            continue;
                        }
                        let id = self.graph.add_defined_symbol(
                            block,
                            value,
                            sym_name,
                            size,
                            linkage,
                            scope,
                            st_type == elf::STT_FUNC,
                            !local,
                        )?;
                        self.graph.set_thread_local(id, thread_local);
                        Some(id)
                    }
                }
            };
            self.symbols[index.0] = graph_sym;
        }
        Ok(())
    }
}
