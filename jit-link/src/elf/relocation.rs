//! Relocations: each `SHT_RELA` entry of an allocated section becomes an edge.
//!
//! The mapping follows the x86-64 psABI's relocation table (§4.4) and LLVM's
//! `ELF_x86_64.cpp` (`addSingleRelocation`); see [`crate::x86_64::EdgeKind`] for formulas.

use object::elf;
use object::read::elf::{Rela, SectionHeader};

use super::file::Builder;
use crate::{Edge, EdgeKind, LinkError};

/// The psABI name of an x86-64 relocation type.
pub fn relocation_name(r_type: u32) -> String {
    let name = match r_type {
        0 => "R_X86_64_NONE",
        1 => "R_X86_64_64",
        2 => "R_X86_64_PC32",
        3 => "R_X86_64_GOT32",
        4 => "R_X86_64_PLT32",
        5 => "R_X86_64_COPY",
        6 => "R_X86_64_GLOB_DAT",
        7 => "R_X86_64_JUMP_SLOT",
        8 => "R_X86_64_RELATIVE",
        9 => "R_X86_64_GOTPCREL",
        10 => "R_X86_64_32",
        11 => "R_X86_64_32S",
        12 => "R_X86_64_16",
        13 => "R_X86_64_PC16",
        14 => "R_X86_64_8",
        15 => "R_X86_64_PC8",
        16 => "R_X86_64_DTPMOD64",
        17 => "R_X86_64_DTPOFF64",
        18 => "R_X86_64_TPOFF64",
        19 => "R_X86_64_TLSGD",
        20 => "R_X86_64_TLSLD",
        21 => "R_X86_64_DTPOFF32",
        22 => "R_X86_64_GOTTPOFF",
        23 => "R_X86_64_TPOFF32",
        24 => "R_X86_64_PC64",
        25 => "R_X86_64_GOTOFF64",
        26 => "R_X86_64_GOTPC32",
        27 => "R_X86_64_GOT64",
        28 => "R_X86_64_GOTPCREL64",
        29 => "R_X86_64_GOTPC64",
        30 => "R_X86_64_GOTPLT64",
        31 => "R_X86_64_PLTOFF64",
        32 => "R_X86_64_SIZE32",
        33 => "R_X86_64_SIZE64",
        34 => "R_X86_64_GOTPC32_TLSDESC",
        35 => "R_X86_64_TLSDESC_CALL",
        36 => "R_X86_64_TLSDESC",
        37 => "R_X86_64_IRELATIVE",
        38 => "R_X86_64_RELATIVE64",
        41 => "R_X86_64_GOTPCRELX",
        42 => "R_X86_64_REX_GOTPCRELX",
        43 => "R_X86_64_CODE_4_GOTPCRELX",
        44 => "R_X86_64_CODE_4_GOTTPOFF",
        45 => "R_X86_64_CODE_4_GOTPC32_TLSDESC",
        other => return format!("relocation type {other}"),
    };
    name.to_string()
}

/// What an ELF relocation becomes.
enum Lowering {
    Edge(EdgeKind, u64),
    Skip,
    StaticTls,
    Unsupported,
}

fn lower(r_type: u32) -> Lowering {
    use EdgeKind::*;
    use Lowering::Edge as E;
    match r_type {
        0 => Lowering::Skip,
        1 => E(Pointer64, 8),
        2 => E(Delta32, 4),
        4 => E(BranchPCRel32, 4),
        9 => E(RequestGotAndTransformToDelta32, 4),
        10 => E(Pointer32, 4),
        11 => E(Pointer32Signed, 4),
        12 => E(Pointer16, 2),
        14 => E(Pointer8, 1),
        17 => E(DtpOffset64, 8),
        19 => E(RequestTlsIndexAndTransformToDelta32, 4),
        20 => E(RequestTlsModuleIndexAndTransformToDelta32, 4),
        21 => E(DtpOffset32, 4),
        // Initial- and local-exec TLS (and their TLS-descriptor relatives in code built for
        // an executable): offsets from the thread pointer into the static TLS block.
        18 | 22 | 23 | 44 => Lowering::StaticTls,
        24 => E(Delta64, 8),
        25 => E(Delta64FromGot, 8),
        // GOTPC32/GOTPC64: `GOT + A - P`, a Delta to the GOT base (the relocation's symbol is
        // `_GLOBAL_OFFSET_TABLE_`, which the GOT builder defines).
        26 => E(Delta32, 4),
        27 => E(RequestGotAndTransformToDelta64FromGot, 8),
        28 => E(RequestGotAndTransformToDelta64, 8),
        29 => E(Delta64, 8),
        // GOTPLT64 is GOT64 with a hint that a PLT entry is wanted; the value is the same.
        30 => E(RequestGotAndTransformToDelta64FromGot, 8),
        31 => E(RequestPltAndTransformToDelta64FromGot, 8),
        // TLS descriptors: the descriptor's address, and the call through it (a marker for
        // relaxations, which a JIT cannot make: the variable is never in static TLS).
        34 => E(RequestTlsDescriptorAndTransformToDelta32, 4),
        35 => Lowering::Skip,
        41 => E(RequestGotAndTransformToPcRel32GotLoadRelaxable, 4),
        42 => E(RequestGotAndTransformToPcRel32GotLoadRexRelaxable, 4),
        _ => Lowering::Unsupported,
    }
}

impl Builder<'_> {
    /// Turns every relocation of an allocated section into an edge.
    pub(super) fn relocations(&mut self) -> Result<(), LinkError> {
        let endian = self.endian;
        for (index, sh) in self.sections.enumerate() {
            let sh_type = sh.sh_type(endian);
            if sh_type != elf::SHT_RELA && sh_type != elf::SHT_REL {
                continue;
            }
            let target = sh.sh_info(endian) as usize;
            let Some(target_name) = self.section_names.get(target).cloned() else {
                return Err(self.malformed(format!(
                    "relocation section {} applies to section #{target}, which does not exist",
                    self.section_name(index.0)
                )));
            };
            let Some(block) = self.section_blocks[target] else {
                // Relocations of debug and other skipped sections.
                continue;
            };
            if sh_type == elf::SHT_REL {
                return Err(LinkError::Unsupported {
                    object: self.object(),
                    what: format!("SHT_REL relocations for {target_name} (x86-64 objects use SHT_RELA)"),
                });
            }
            if sh.link(endian) != self.symtab.section() {
                return Err(self.malformed(format!(
                    "relocation section {} does not use the symbol table",
                    self.section_name(index.0)
                )));
            }
            let relas = match sh.rela(endian, self.data) {
                Ok(Some((relas, _))) => relas,
                Ok(None) => continue,
                Err(e) => return Err(self.malformed(format!("relocation section {}: {e}", self.section_name(index.0)))),
            };
            let block_size = self.graph.block(block).map(|b| b.size()).unwrap_or(0);
            if self.graph.block(block).is_some_and(|b| b.is_zero_fill()) && !relas.is_empty() {
                return Err(self.malformed(format!("relocations apply to {target_name}, which has no contents")));
            }
            let mut edges = Vec::with_capacity(relas.len());
            for rela in relas {
                let r_type = rela.r_type(endian, false).0;
                let offset = rela.r_offset(endian);
                let addend = rela.r_addend(endian);
                let sym_index = rela.r_sym(endian, false) as usize;
                let bad = |reason: String| LinkError::BadRelocation {
                    object: self.object(),
                    relocation: relocation_name(r_type),
                    section: target_name.clone(),
                    offset,
                    reason,
                };
                let (kind, width) = match lower(r_type) {
                    Lowering::Skip => continue,
                    Lowering::Edge(kind, width) => (kind, width),
                    Lowering::StaticTls => {
                        return Err(LinkError::StaticTlsModel {
                            object: self.object(),
                            relocation: relocation_name(r_type),
                            section: target_name.clone(),
                            offset,
                        });
                    }
                    Lowering::Unsupported => {
                        return Err(LinkError::UnsupportedRelocation {
                            object: self.object(),
                            relocation: relocation_name(r_type),
                            section: target_name.clone(),
                            offset,
                        });
                    }
                };
                if offset.checked_add(width).is_none_or(|end| end > block_size) {
                    return Err(bad(format!("the {width}-byte field lies outside the {block_size}-byte section")));
                }
                if sym_index == 0 {
                    return Err(bad("it names no symbol".into()));
                }
                let Some(Some(target)) = self.symbols.get(sym_index).copied() else {
                    return Err(bad(format!(
                        "it names symbol #{sym_index}, which does not exist or lies in a section that is not loaded"
                    )));
                };
                edges.push(Edge::new(kind, offset, target, addend));
            }
            if let Some(b) = self.graph.block_mut(block) {
                b.edges_mut().extend(edges);
            }
        }
        Ok(())
    }
}
