//! Far references: what becomes of non-PIC code's direct references to externals that lie out
//! of their reach.
//!
//! `-fno-pic` code reads data PC-relatively (`movq stdout(%rip), %rdi`: `R_X86_64_PC32`) and
//! takes addresses as 32-bit immediates (`movl $f, %edi`, `.long _ZTIi` in an exception
//! table: `R_X86_64_32`/`32S`). A static linker makes these reach a shared library's symbols
//! with a PLT entry (for code; the entry becomes the function's address) and a copy relocation
//! (for data: a copy in the executable, which the dynamic linker makes the library use
//! instead of its own). A JIT cannot make a loaded library use a copy, so a copy is correct
//! only for data that does not change after the link. So, after the lookup, each such
//! reference whose fixup would not fit gets a stand-in in reach, in a second allocation from
//! the same memory manager (so within rel32 of the graph, and below 2 GiB when the manager is
//! placed low), chosen by what the context says the external is
//! ([`crate::LinkContext::describe_external`]):
//!
//! - [`ExternalDefinition::Function`]: a stub `jmp *slot(%rip)` whose slot holds its address;
//! - [`ExternalDefinition::StableData`]: a read-only copy of the bytes the context gives;
//! - anything else: [`LinkError::FarReference`], naming the symbol, the object and the place.
//!
//! References that fit are left alone, so PIC objects and objects placed near their targets
//! link as before.

use rustc_hash::FxHashMap as HashMap;
use std::ops::Range;

use jit_mem::{MemoryManager, Prot, TargetAddr};

use crate::layout::{self, PlannedAlloc};
use crate::{BlockId, Edge, EdgeKind, LinkContext, LinkError, LinkGraph, SectionKind, SymbolId, SymbolName};

/// The section of the stubs that stand for far functions.
pub const FAR_STUBS_SECTION: &str = "$__FAR_STUBS";
/// The section of the stubs' address slots and of the copies of far data (read-only).
pub const FAR_DATA_SECTION: &str = "$__FAR_DATA";

/// `jmp *slot(%rip)`: `FF 25` + rel32 (Intel SDM vol. 2, JMP, "FF /4"; as the GOT/PLT pass's
/// stubs and LLVM's `x86_64::PointerJumpStubContent`). The rel32 is at offset 2.
const STUB_CONTENT: [u8; 6] = [0xFF, 0x25, 0, 0, 0, 0];

/// Copies are aligned like the original, up to this (an AVX-512 load's natural alignment).
const MAX_COPY_ALIGN: u64 = 64;

/// What a context knows of an external symbol's definition: what a reference that cannot
/// reach it may be given instead.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ExternalDefinition {
    /// Nothing is known (the default): a far reference to it is an error.
    Unknown,
    /// Code: a far reference gets the address of a stub that jumps to it. Calls through it
    /// behave as calls to the function; the address differs from the function's own (as a
    /// non-PIE executable's PLT address differs from the library's view of a function, but
    /// here the library is not redirected to it, and each graph has its own stub).
    Function,
    /// Data whose bytes do not change while the linked code lives: read-only after
    /// relocation (`.rodata`, `PT_GNU_RELRO`: C++ type_info objects), or written only while
    /// the process starts (glibc's `stdout`). `snapshot` is its bytes now (its ELF size); a
    /// far reference gets a read-only copy of them.
    StableData {
        /// The bytes of the whole object.
        snapshot: Vec<u8>,
    },
    /// Data that may change after the link (`optind`, `environ`, `std::cout`): a copy would
    /// go stale, or the library would not see the program's writes, so a far reference to it
    /// is an error.
    MutableData {
        /// Its size in bytes.
        size: u64,
    },
}

/// One far reference: the edge `index` of `block`.
#[derive(Clone, Copy)]
struct FarRef {
    block: BlockId,
    index: usize,
    edge: Edge,
}

/// The psABI name of the relocation a far reference's edge kind came from, for errors.
pub(crate) fn relocation_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Pointer32 => "R_X86_64_32",
        EdgeKind::Pointer32Signed => "R_X86_64_32S",
        _ => "R_X86_64_PC32",
    }
}

/// Whether an edge of `kind` with target `s`, addend `a` at place `p` fits its field (psABI
/// §4.4: `S + A` zero- or sign-extended from 32 bits, `S + A - P` signed 32 bits). `None` for
/// kinds this module does not handle.
fn fits(kind: EdgeKind, s: i128, a: i128, p: i128) -> Option<bool> {
    match kind {
        EdgeKind::Pointer32 => Some(u32::try_from(s + a).is_ok()),
        EdgeKind::Pointer32Signed => Some(i32::try_from(s + a).is_ok()),
        EdgeKind::Delta32 => Some(i32::try_from(s + a - p).is_ok()),
        _ => None,
    }
}

/// The end of the address range an absolute reference of `kind` reaches.
fn absolute_limit(kind: EdgeKind) -> Option<u64> {
    match kind {
        EdgeKind::Pointer32 => Some(1 << 32),
        EdgeKind::Pointer32Signed => Some(1 << 31),
        _ => None,
    }
}

/// Gives every far reference of `graph` its stand-in and allocates the stand-ins from `mm`
/// (the graph's own manager). `None` when no reference is far. Runs after the lookup, before
/// the pre-fixup passes.
pub(crate) fn resolve_far_references(
    graph: &mut LinkGraph,
    ctx: &dyn LinkContext,
    mm: &dyn MemoryManager,
) -> Result<Option<PlannedAlloc>, LinkError> {
    let reservation = mm.reservation();
    let far = find_far_references(graph, &reservation)?;
    if far.is_empty() {
        return Ok(None);
    }
    let _span = tracing::debug_span!("far_references", object = graph.name(), targets = far.len()).entered();
    let mut stubs = None;
    let mut data = None;
    for (target, refs) in far {
        let (name, addr) = match graph.symbol(target) {
            Some(sym) => (sym.name().cloned().unwrap_or_else(|| "<anonymous>".into()), graph.symbol_addr(target)),
            None => continue,
        };
        // Unresolved (or a missing weak reference, 0): the fixup reports its range error.
        let Some(addr) = addr.filter(|a| a.0 != 0) else { continue };
        let definition = ctx.describe_external(&name, addr);
        let stand_in = match definition {
            ExternalDefinition::Function => {
                check_function_refs(graph, &name, addr, &refs)?;
                let data = *data.get_or_insert_with(|| graph.add_section(FAR_DATA_SECTION, Prot::R));
                let stubs = *stubs.get_or_insert_with(|| graph.add_section(FAR_STUBS_SECTION, Prot::RX));
                let slot_block = graph.add_content_block(data, vec![0; 8], 8, 0)?;
                graph.add_edge(slot_block, Edge::new(EdgeKind::Pointer64, 0, target, 0))?;
                let slot = graph.add_anonymous_symbol(slot_block, 0, 8, false, true)?;
                let stub_block = graph.add_content_block(stubs, STUB_CONTENT.to_vec(), 8, 0)?;
                graph.add_edge(stub_block, Edge::new(EdgeKind::Delta32, 2, slot, -4))?;
                graph.add_anonymous_symbol(stub_block, 0, STUB_CONTENT.len() as u64, true, true)?
            }
            ExternalDefinition::StableData { snapshot } => {
                check_data_refs(graph, &name, addr, &refs, snapshot.len() as u64)?;
                let size = snapshot.len() as u64;
                let align = (1u64 << addr.0.trailing_zeros().min(63)).min(MAX_COPY_ALIGN);
                let data = *data.get_or_insert_with(|| graph.add_section(FAR_DATA_SECTION, Prot::R));
                let block = graph.add_content_block(data, snapshot, align, 0)?;
                tracing::debug!(object = graph.name(), symbol = %name, size, "far data reference: read-only copy");
                graph.add_anonymous_symbol(block, 0, size, false, true)?
            }
            ExternalDefinition::MutableData { size } => {
                return Err(far_error(
                    graph,
                    &name,
                    addr,
                    refs[0],
                    format!(
                        "it is {size} bytes of data that may change after the link, so a copy would go stale \
                         (jit-link copies only data that does not change, such as stdout or read-only data); \
                         compile this object with -fPIC or -mcmodel=large"
                    ),
                ));
            }
            ExternalDefinition::Unknown => {
                return Err(far_error(
                    graph,
                    &name,
                    addr,
                    refs[0],
                    "the link context cannot say whether it is code or data (LinkContext::describe_external); \
                     compile this object with -fPIC or -mcmodel=large"
                        .into(),
                ));
            }
        };
        for r in refs {
            if let Some(e) = graph.block_mut(r.block).and_then(|b| b.edges_mut().get_mut(r.index)) {
                e.target = stand_in;
            }
        }
    }
    let plan = layout::plan_sections(graph, |s| Some(s) == stubs || Some(s) == data)?;
    let alloc =
        mm.allocate(&plan.request).map_err(|source| LinkError::Memory { object: graph.name().to_string(), source })?;
    layout::assign_addresses(graph, &plan, &alloc);
    Ok(Some(PlannedAlloc { plan, alloc }))
}

/// The references to externals whose fixups would not fit, grouped by target in the order
/// first met. An absolute 32-bit reference that does not fit because the graph's own memory
/// is too high is an error here, external target or not: no stand-in could fit either.
fn find_far_references(
    graph: &LinkGraph,
    reservation: &Range<TargetAddr>,
) -> Result<Vec<(SymbolId, Vec<FarRef>)>, LinkError> {
    let mut order: HashMap<SymbolId, usize> = HashMap::default();
    let mut far: Vec<(SymbolId, Vec<FarRef>)> = Vec::new();
    for (block_id, block) in graph.blocks() {
        let in_tls = graph.section(block.section()).is_some_and(|s| s.kind() == SectionKind::ThreadLocal);
        if in_tls {
            continue;
        }
        for (index, edge) in block.edges().iter().enumerate() {
            if !matches!(edge.kind, EdgeKind::Pointer32 | EdgeKind::Pointer32Signed | EdgeKind::Delta32) {
                continue;
            }
            let Some(target) = graph.symbol(edge.target) else { continue };
            let Some(s) = graph.symbol_addr(edge.target) else { continue };
            let p = block.addr().0.wrapping_add(edge.offset) as i128;
            if fits(edge.kind, s.0 as i128, edge.addend as i128, p) != Some(false) {
                continue;
            }
            if let Some(limit) = absolute_limit(edge.kind) {
                if reservation.end.0 > limit {
                    return Err(LinkError::NeedsLowPlacement {
                        object: graph.name().to_string(),
                        kind: edge.kind,
                        location: graph.describe_location(block_id, edge.offset),
                        target: graph.describe_symbol(edge.target),
                        reservation: format!("{}..{}", reservation.start, reservation.end),
                    });
                }
            }
            if !target.is_external() || target.is_thread_local() {
                continue;
            }
            let slot = *order.entry(edge.target).or_insert_with(|| {
                far.push((edge.target, Vec::new()));
                far.len() - 1
            });
            far[slot].1.push(FarRef { block: block_id, index, edge: *edge });
        }
    }
    Ok(far)
}

fn far_error(graph: &LinkGraph, name: &SymbolName, addr: TargetAddr, r: FarRef, reason: String) -> LinkError {
    LinkError::FarReference {
        object: graph.name().to_string(),
        kind: r.edge.kind,
        location: graph.describe_location(r.block, r.edge.offset),
        symbol: name.clone(),
        addr,
        reason,
    }
}

/// A stub stands for the function's entry only: the reference must point at it. A PC-relative
/// addend also holds the distance from the field to the end of its instruction (4, plus up to
/// 4 bytes of immediate after the field), or 0 in data (`.long f - .`).
fn check_function_refs(
    graph: &LinkGraph,
    name: &SymbolName,
    addr: TargetAddr,
    refs: &[FarRef],
) -> Result<(), LinkError> {
    for r in refs {
        let a = r.edge.addend;
        let at_entry = match r.edge.kind {
            EdgeKind::Delta32 => (-8..=0).contains(&a),
            _ => a == 0,
        };
        if !at_entry {
            return Err(far_error(
                graph,
                name,
                addr,
                *r,
                format!("it points into the middle of the function (addend {a}), which a stub cannot stand for"),
            ));
        }
    }
    Ok(())
}

/// A copy stands for the whole object: the reference must point into it, and code must not
/// store to it directly (the copy is read-only; stores the check cannot see fault on it).
fn check_data_refs(
    graph: &LinkGraph,
    name: &SymbolName,
    addr: TargetAddr,
    refs: &[FarRef],
    size: u64,
) -> Result<(), LinkError> {
    if size == 0 {
        return Err(far_error(graph, name, addr, refs[0], "its size is unknown, so it cannot be copied".into()));
    }
    for r in refs {
        let a = i128::from(r.edge.addend);
        // A PC-relative addend is the offset into the object minus 4 to 8 bytes in code (see
        // `check_function_refs`), or the offset itself in data.
        let inside = match r.edge.kind {
            EdgeKind::Delta32 => a + 8 >= 0 && a <= i128::from(size),
            _ => a >= 0 && a <= i128::from(size),
        };
        if !inside {
            return Err(far_error(
                graph,
                name,
                addr,
                *r,
                format!("it points outside the object's {size} bytes (addend {a}), outside any copy of it"),
            ));
        }
        let in_code =
            graph.block(r.block).and_then(|b| graph.section(b.section())).is_some_and(|s| s.prot() == Prot::RX);
        let bytes = graph.block(r.block).map(|b| b.bytes()).unwrap_or_default();
        if in_code && is_direct_store(bytes, r.edge.offset as usize, r.edge.kind) {
            return Err(far_error(
                graph,
                name,
                addr,
                *r,
                "the code stores to it, but non-PIC code can only be given a read-only copy of it, taken at link \
                 time; compile this object with -fPIC or -mcmodel=large"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Whether the 32-bit field at `off` is the memory operand of a REX-prefixed `mov` store: the
/// form of every store to a pointer-sized variable (`movq %rax, stdout(%rip)`,
/// `movq $0, stdout`). Encodings (Intel SDM vol. 2, MOV; §2.1.5 and table 2-2/2-3 for ModRM):
///
/// - `REX 89|88 ModRM disp32` (MOV r/m, r) and `REX C7|C6 ModRM disp32 imm` (MOV r/m, imm,
///   ModRM.reg = 0);
/// - PC-relative (`R_X86_64_PC32`): ModRM `00 reg 101` (RIP + disp32) just before the field;
/// - absolute (`R_X86_64_32S`): ModRM `00 reg 100` and SIB `0x25` (no base, no index,
///   disp32) just before the field.
///
/// A REX byte (`0x40..=0x4F`) could also be the last payload byte of a VEX or EVEX prefix,
/// whose escape byte then sits 1, 2 or 3 bytes earlier (`C5`, `C4`, `62`): those are not
/// taken for stores. Anything this misses (32-bit stores, read-modify-write instructions,
/// stores through a pointer) faults on the read-only copy instead of going unnoticed.
fn is_direct_store(bytes: &[u8], off: usize, kind: EdgeKind) -> bool {
    let at = |back: usize| off.checked_sub(back).and_then(|i| bytes.get(i).copied());
    let (modrm, opcode, rex_back) = match kind {
        EdgeKind::Delta32 => match (at(1), at(2)) {
            (Some(m), Some(op)) if m & 0xC7 == 0x05 => (m, op, 3),
            _ => return false,
        },
        EdgeKind::Pointer32Signed | EdgeKind::Pointer32 => match (at(1), at(2), at(3)) {
            (Some(0x25), Some(m), Some(op)) if m & 0xC7 == 0x04 => (m, op, 4),
            _ => return false,
        },
        _ => return false,
    };
    let is_mov_store = match opcode {
        0x88 | 0x89 => true,
        0xC6 | 0xC7 => (modrm >> 3) & 7 == 0,
        _ => false,
    };
    let rex = at(rex_back).is_some_and(|b| (0x40..=0x4F).contains(&b));
    let vex_payload =
        at(rex_back + 1) == Some(0xC5) || at(rex_back + 2) == Some(0xC4) || at(rex_back + 3) == Some(0x62);
    is_mov_store && rex && !vex_payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rex_mov_stores_are_recognised_in_both_addressing_forms() {
        // movq %rax, x(%rip): 48 89 05 disp32.
        assert!(is_direct_store(&[0x48, 0x89, 0x05, 0, 0, 0, 0], 3, EdgeKind::Delta32));
        // movq $0, x(%rip): 48 C7 05 disp32 imm32.
        assert!(is_direct_store(&[0x48, 0xC7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0], 3, EdgeKind::Delta32));
        // movq %rax, x: 48 89 04 25 disp32 (-O0 non-PIC).
        assert!(is_direct_store(&[0x48, 0x89, 0x04, 0x25, 0, 0, 0, 0], 4, EdgeKind::Pointer32Signed));
        // movq %r8, x(%rip): 4C 89 05 disp32.
        assert!(is_direct_store(&[0x4C, 0x89, 0x05, 0, 0, 0, 0], 3, EdgeKind::Delta32));
    }

    #[test]
    fn loads_and_vex_encoded_instructions_are_not_stores() {
        // movq x(%rip), %rdi: 48 8B 3D disp32.
        assert!(!is_direct_store(&[0x48, 0x8B, 0x3D, 0, 0, 0, 0], 3, EdgeKind::Delta32));
        // movq x, %rdi: 48 8B 3C 25 disp32.
        assert!(!is_direct_store(&[0x48, 0x8B, 0x3C, 0x25, 0, 0, 0, 0], 4, EdgeKind::Pointer32Signed));
        // cmpl $1, x(%rip): 83 3D disp32 imm8.
        assert!(!is_direct_store(&[0x83, 0x3D, 0, 0, 0, 0, 1], 2, EdgeKind::Delta32));
        // vshufps $0, x(%rip), %xmm?, %xmm8: C5 48 C6 05 disp32 imm8; 0x48 is VEX payload.
        assert!(!is_direct_store(&[0xC5, 0x48, 0xC6, 0x05, 0, 0, 0, 0, 0], 4, EdgeKind::Delta32));
        // A field at the start of a block has nothing before it.
        assert!(!is_direct_store(&[0, 0, 0, 0], 0, EdgeKind::Delta32));
    }

    #[test]
    fn fit_follows_the_psabi_field_widths() {
        assert_eq!(fits(EdgeKind::Pointer32, 0xFFFF_FFFF, 0, 0), Some(true));
        assert_eq!(fits(EdgeKind::Pointer32, 0x1_0000_0000, 0, 0), Some(false));
        assert_eq!(fits(EdgeKind::Pointer32Signed, 0x7FFF_FFFF, 0, 0), Some(true));
        assert_eq!(fits(EdgeKind::Pointer32Signed, 0x8000_0000, 0, 0), Some(false));
        assert_eq!(fits(EdgeKind::Delta32, 0x7F00_0000_0000, -4, 0x4000_0000), Some(false));
        assert_eq!(fits(EdgeKind::Pointer64, 1 << 40, 0, 0), None);
    }
}
