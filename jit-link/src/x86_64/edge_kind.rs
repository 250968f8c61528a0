//! Edge kinds of x86-64 and how each fixup is computed, range-checked and written.
//!
//! Formulas follow the x86-64 psABI (System V ABI AMD64 supplement, §4.4 "Relocation",
//! table "Relocation Types": S = target, A = addend, P = place, GOT = GOT base, G = GOT
//! entry offset) and LLVM's `llvm/include/llvm/ExecutionEngine/JITLink/x86_64.h`, whose
//! vocabulary (Pointer64, Delta32, BranchPCRel32, Request...AndTransformTo...) we keep.
//! Unlike LLVM, every PC-relative kind keeps the ELF addend as is (S + A - P): the `-4`
//! stays in the addend rather than being implied by the kind.

use std::fmt;

use jit_mem::TargetAddr;

use crate::{BlockId, LinkError, LinkGraph, SectionKind, SymbolDef};

/// How an edge's fixup is computed and written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EdgeKind {
    /// No fixup: keeps the target alive while the source block lives (an FDE for its function).
    KeepAlive,
    /// `S + A`, 64 bits (`R_X86_64_64`).
    Pointer64,
    /// `S + A`, zero-extended 32 bits (`R_X86_64_32`).
    Pointer32,
    /// `S + A`, sign-extended 32 bits (`R_X86_64_32S`).
    Pointer32Signed,
    /// `S + A`, 16 bits (`R_X86_64_16`).
    Pointer16,
    /// `S + A`, 8 bits (`R_X86_64_8`).
    Pointer8,
    /// `S + A - P`, 64 bits (`R_X86_64_PC64`, `R_X86_64_GOTPC64` to the GOT base).
    Delta64,
    /// `S + A - P`, signed 32 bits (`R_X86_64_PC32`, `R_X86_64_GOTPC32` to the GOT base).
    Delta32,
    /// `P - S + A`, signed 32 bits: an `.eh_frame` FDE's pointer back to its CIE.
    NegDelta32,
    /// `P - S + A`, 64 bits (64-bit DWARF CIE pointers).
    NegDelta64,
    /// `S + A - GOT`, 64 bits (`R_X86_64_GOTOFF64`).
    Delta64FromGot,
    /// `S + A - P`, signed 32 bits, of a `call`/`jmp` (`R_X86_64_PLT32`). The GOT/PLT pass
    /// sends it through a stub when the target is not in the graph; the relaxation pass
    /// sends it straight to the target when that is in range.
    BranchPCRel32,
    /// `G + GOT + A - P` (`R_X86_64_GOTPCREL`): becomes `Delta32` to a GOT entry.
    RequestGotAndTransformToDelta32,
    /// `R_X86_64_GOTPCRELX`: becomes [`EdgeKind::PcRel32GotLoadRelaxable`] to a GOT entry.
    RequestGotAndTransformToPcRel32GotLoadRelaxable,
    /// `R_X86_64_REX_GOTPCRELX`: becomes [`EdgeKind::PcRel32GotLoadRexRelaxable`].
    RequestGotAndTransformToPcRel32GotLoadRexRelaxable,
    /// A GOT load (`mov`/`call`/`jmp` through `foo@GOTPCREL(%rip)`) that may be rewritten to
    /// reach the target directly; otherwise `Delta32` to the GOT entry.
    PcRel32GotLoadRelaxable,
    /// As [`EdgeKind::PcRel32GotLoadRelaxable`], with a REX prefix (only `mov` relaxes).
    PcRel32GotLoadRexRelaxable,
    /// `G + GOT + A - P`, 64 bits (`R_X86_64_GOTPCREL64`): becomes `Delta64` to a GOT entry.
    RequestGotAndTransformToDelta64,
    /// `G + A`, 64 bits (`R_X86_64_GOT64`): becomes `Delta64FromGot` to a GOT entry.
    RequestGotAndTransformToDelta64FromGot,
    /// `L - GOT + A`, 64 bits (`R_X86_64_PLTOFF64`): becomes `Delta64FromGot` to the
    /// target if the graph defines it, else to a stub.
    RequestPltAndTransformToDelta64FromGot,
    /// `R_X86_64_TLSGD`: `Delta32` to a `tls_index` {module, offset} of the target.
    RequestTlsIndexAndTransformToDelta32,
    /// `R_X86_64_TLSLD`: `Delta32` to the graph's `tls_index` {module, 0}.
    RequestTlsModuleIndexAndTransformToDelta32,
    /// `R_X86_64_GOTPC32_TLSDESC`: `Delta32` to a TLS descriptor {resolver, `tls_index`} of
    /// the target (of the graph's module, offset 0, for `_TLS_MODULE_BASE_`).
    RequestTlsDescriptorAndTransformToDelta32,
    /// Offset of a thread-local symbol in its TLS image, plus `A`, 32 bits (`R_X86_64_DTPOFF32`).
    DtpOffset32,
    /// As [`EdgeKind::DtpOffset32`], 64 bits (`R_X86_64_DTPOFF64`).
    DtpOffset64,
    /// The graph's TLS module id, 64 bits (first word of a `tls_index`).
    TlsModuleId,
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl EdgeKind {
    /// Whether the GOT/PLT or TLS pass must lower it before fixups.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            EdgeKind::RequestGotAndTransformToDelta32
                | EdgeKind::RequestGotAndTransformToPcRel32GotLoadRelaxable
                | EdgeKind::RequestGotAndTransformToPcRel32GotLoadRexRelaxable
                | EdgeKind::RequestGotAndTransformToDelta64
                | EdgeKind::RequestGotAndTransformToDelta64FromGot
                | EdgeKind::RequestPltAndTransformToDelta64FromGot
                | EdgeKind::RequestTlsIndexAndTransformToDelta32
                | EdgeKind::RequestTlsModuleIndexAndTransformToDelta32
                | EdgeKind::RequestTlsDescriptorAndTransformToDelta32
        )
    }

    /// Whether the value depends on the place (`P`).
    fn is_pc_relative(self) -> bool {
        matches!(
            self,
            EdgeKind::Delta64
                | EdgeKind::Delta32
                | EdgeKind::NegDelta32
                | EdgeKind::NegDelta64
                | EdgeKind::BranchPCRel32
                | EdgeKind::PcRel32GotLoadRelaxable
                | EdgeKind::PcRel32GotLoadRexRelaxable
        )
    }
}

/// What fixups need besides the graph.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FixupEnv {
    /// Address of `_GLOBAL_OFFSET_TABLE_`, if the graph has a GOT.
    pub(crate) got_base: Option<TargetAddr>,
    /// The graph's TLS module id (0 if it has no TLS).
    pub(crate) tls_module: u64,
}

enum Width {
    U64(u64),
    U32(u32),
    U16(u16),
    U8(u8),
    None,
}

/// Applies every edge of every block to the blocks' bytes in the graph.
pub(crate) fn apply_fixups(graph: &mut LinkGraph, env: FixupEnv) -> Result<(), LinkError> {
    for id in graph.block_ids() {
        let has_edges = graph.block(id).is_some_and(|b| b.edges().iter().any(|e| e.kind != EdgeKind::KeepAlive));
        if !has_edges {
            continue;
        }
        let mut bytes = match graph.block_mut(id) {
            Some(b) => std::mem::take(b.bytes_mut()),
            None => continue,
        };
        let result = fix_block(graph, id, &mut bytes, env);
        if let Some(b) = graph.block_mut(id) {
            *b.bytes_mut() = bytes;
        }
        result?;
    }
    Ok(())
}

fn fix_block(graph: &LinkGraph, id: BlockId, bytes: &mut [u8], env: FixupEnv) -> Result<(), LinkError> {
    let Some(block) = graph.block(id) else {
        return Ok(());
    };
    let in_tls = graph.section(block.section()).is_some_and(|s| s.kind() == SectionKind::ThreadLocal);
    for edge in block.edges() {
        let location = || graph.describe_location(id, edge.offset);
        let object = || graph.name().to_string();
        if edge.kind == EdgeKind::KeepAlive {
            continue;
        }
        if edge.kind.is_request() {
            return Err(LinkError::InvalidGraph {
                object: object(),
                what: format!(
                    "{} edge at {} was not lowered (are the default passes disabled?)",
                    edge.kind,
                    location()
                ),
            });
        }
        if in_tls && edge.kind.is_pc_relative() {
            return Err(LinkError::Tls {
                object: object(),
                what: format!("PC-relative {} edge inside thread-local data at {}", edge.kind, location()),
            });
        }
        let target = graph.symbol(edge.target).ok_or_else(|| LinkError::InvalidGraph {
            object: object(),
            what: format!("{} edge at {} targets a removed symbol", edge.kind, location()),
        })?;
        let target_is_tls = match target.def() {
            SymbolDef::Defined { block, .. } => graph
                .block(block)
                .and_then(|b| graph.section(b.section()))
                .is_some_and(|s| s.kind() == SectionKind::ThreadLocal),
            _ => false,
        };
        let dtp = matches!(edge.kind, EdgeKind::DtpOffset32 | EdgeKind::DtpOffset64);
        if dtp && !target_is_tls {
            // Local-dynamic code adds the variable's offset to its own module's block: a
            // variable of another graph is in another module (see `crate::link_ties`).
            let elsewhere = if target.is_defined() {
                String::new()
            } else {
                "; it is defined in another object, and local-dynamic TLS reaches only the variables \
                 of its own TLS module: link the objects that share it as one graph (the object \
                 linking layer's `add_objects` does), or compile with -ftls-model=global-dynamic"
                    .to_string()
            };
            return Err(LinkError::Tls {
                object: object(),
                what: format!(
                    "{} at {} targets '{}', which is not thread-local data of this object{elsewhere}",
                    edge.kind,
                    location(),
                    graph.describe_symbol(edge.target)
                ),
            });
        }
        if target_is_tls && !dtp && edge.kind != EdgeKind::TlsModuleId {
            return Err(LinkError::Tls {
                object: object(),
                what: format!(
                    "{} at {} takes the address of thread-local '{}' directly",
                    edge.kind,
                    location(),
                    graph.describe_symbol(edge.target)
                ),
            });
        }
        let s = graph.symbol_addr(edge.target).ok_or_else(|| LinkError::InvalidGraph {
            object: object(),
            what: format!(
                "{} edge at {} targets '{}', which has no address",
                edge.kind,
                location(),
                graph.describe_symbol(edge.target)
            ),
        })?;
        let s = s.0 as i128;
        let a = edge.addend as i128;
        let p = block.addr().0.wrapping_add(edge.offset) as i128;
        let out_of_range = |value: i128| LinkError::FixupOutOfRange {
            object: object(),
            kind: edge.kind,
            source_location: location(),
            target: graph.describe_symbol(edge.target),
            value,
        };
        let fits_i32 = |v: i128| i32::try_from(v).is_ok();
        let write = match edge.kind {
            EdgeKind::KeepAlive => Width::None,
            EdgeKind::Pointer64 | EdgeKind::DtpOffset64 => Width::U64((s + a) as u64),
            EdgeKind::Pointer32 => {
                let v = s + a;
                Width::U32(u32::try_from(v).map_err(|_| out_of_range(v))?)
            }
            EdgeKind::Pointer32Signed | EdgeKind::DtpOffset32 => {
                let v = s + a;
                Width::U32(i32::try_from(v).map_err(|_| out_of_range(v))? as u32)
            }
            EdgeKind::Pointer16 => {
                let v = s + a;
                Width::U16(u16::try_from(v).map_err(|_| out_of_range(v))?)
            }
            EdgeKind::Pointer8 => {
                let v = s + a;
                Width::U8(u8::try_from(v).map_err(|_| out_of_range(v))?)
            }
            EdgeKind::Delta64 => Width::U64((s + a - p) as u64),
            EdgeKind::Delta32
            | EdgeKind::BranchPCRel32
            | EdgeKind::PcRel32GotLoadRelaxable
            | EdgeKind::PcRel32GotLoadRexRelaxable => {
                let v = s + a - p;
                if !fits_i32(v) {
                    return Err(out_of_range(v));
                }
                Width::U32(v as i32 as u32)
            }
            EdgeKind::NegDelta32 => {
                let v = p - s + a;
                if !fits_i32(v) {
                    return Err(out_of_range(v));
                }
                Width::U32(v as i32 as u32)
            }
            EdgeKind::NegDelta64 => Width::U64((p - s + a) as u64),
            EdgeKind::Delta64FromGot => {
                let got = env.got_base.ok_or_else(|| LinkError::InvalidGraph {
                    object: object(),
                    what: format!("GOT-relative edge at {} in a graph without a GOT", location()),
                })?;
                Width::U64((s + a - got.0 as i128) as u64)
            }
            EdgeKind::TlsModuleId => Width::U64(env.tls_module),
            // Rejected above; listed so a new kind cannot be forgotten here.
            EdgeKind::RequestGotAndTransformToDelta32
            | EdgeKind::RequestGotAndTransformToPcRel32GotLoadRelaxable
            | EdgeKind::RequestGotAndTransformToPcRel32GotLoadRexRelaxable
            | EdgeKind::RequestGotAndTransformToDelta64
            | EdgeKind::RequestGotAndTransformToDelta64FromGot
            | EdgeKind::RequestPltAndTransformToDelta64FromGot
            | EdgeKind::RequestTlsIndexAndTransformToDelta32
            | EdgeKind::RequestTlsModuleIndexAndTransformToDelta32
            | EdgeKind::RequestTlsDescriptorAndTransformToDelta32 => Width::None,
        };
        let off = edge.offset as usize;
        let field: &[u8] = match &write {
            Width::U64(v) => &v.to_le_bytes(),
            Width::U32(v) => &v.to_le_bytes(),
            Width::U16(v) => &v.to_le_bytes(),
            Width::U8(v) => &v.to_le_bytes(),
            Width::None => &[],
        };
        let end = off.checked_add(field.len()).filter(|&end| end <= bytes.len() && edge.offset <= usize::MAX as u64);
        match end {
            Some(end) => bytes[off..end].copy_from_slice(field),
            None => {
                return Err(LinkError::InvalidGraph {
                    object: object(),
                    what: format!(
                        "{} edge at offset {:#x} writes past the end of its {}-byte block",
                        edge.kind,
                        edge.offset,
                        bytes.len()
                    ),
                });
            }
        }
    }
    Ok(())
}
