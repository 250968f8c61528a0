//! The GOT and PLT of one graph, and their relaxation once addresses are known.
//!
//! Each graph gets its own GOT (`$__GOT`, read-only once finalized: every entry is resolved
//! at link time) and stubs (`$__STUBS`), as LLVM JITLink's `x86_64::GOTTableManager` and
//! `PLTTableManager` do. `optimize_got_and_stub_accesses` matches LLVM's
//! `x86_64::optimizeGOTAndStubAccesses` and the psABI's linker optimizations (x86-64 psABI
//! appendix B.2, "Optimize GOTPCRELX Relocations").

use rustc_hash::FxHashMap as HashMap;

use jit_mem::Prot;

use crate::{Edge, EdgeKind, LinkError, LinkGraph, Scope, SectionId, SymbolId};

/// The section holding the graph's GOT entries.
pub const GOT_SECTION: &str = "$__GOT";
/// The section holding the graph's PLT stubs.
pub const STUBS_SECTION: &str = "$__STUBS";
/// The ELF name of the GOT base.
pub const GOT_SYMBOL: &str = "_GLOBAL_OFFSET_TABLE_";

/// `jmp *entry(%rip)`: `FF 25` + rel32 (Intel SDM vol. 2, JMP, "FF /4"; the stub of LLVM's
/// `x86_64::PointerJumpStubContent`). The rel32 is at offset 2.
const STUB_CONTENT: [u8; 6] = [0xFF, 0x25, 0, 0, 0, 0];

struct Tables {
    got: Option<SectionId>,
    stubs: Option<SectionId>,
    entries: HashMap<SymbolId, SymbolId>,
    stub_for: HashMap<SymbolId, SymbolId>,
}

impl Tables {
    fn got_section(&mut self, graph: &mut LinkGraph) -> Result<SectionId, LinkError> {
        if let Some(id) = self.got {
            return Ok(id);
        }
        let id = graph.add_section(GOT_SECTION, Prot::R);
        // The GOT base: an empty block first in the section, so it exists even when every
        // GOT-relative reference is GOTOFF64 and no entry is made.
        let head = graph.add_content_block(id, Vec::new(), 8, 0)?;
        let base = match graph.find_symbol(GOT_SYMBOL) {
            Some(existing) if graph.symbol(existing).is_some_and(|s| s.is_external()) => {
                graph.make_defined(existing, head, 0)?;
                graph.set_scope(existing, Scope::Local)?;
                existing
            }
            Some(_) => {
                return Err(LinkError::Malformed {
                    object: graph.name().to_string(),
                    what: format!("the object defines {GOT_SYMBOL} itself"),
                });
            }
            None => graph.add_defined_symbol(
                head,
                0,
                Some(GOT_SYMBOL.into()),
                0,
                crate::Linkage::Strong,
                Scope::Local,
                false,
                true,
            )?,
        };
        if let Some(sym) = graph.symbol_mut(base) {
            sym.set_live(true);
        }
        self.got = Some(id);
        Ok(id)
    }

    fn entry(&mut self, graph: &mut LinkGraph, target: SymbolId) -> Result<SymbolId, LinkError> {
        if let Some(&e) = self.entries.get(&target) {
            return Ok(e);
        }
        let section = self.got_section(graph)?;
        let block = graph.add_content_block(section, vec![0; 8], 8, 0)?;
        graph.add_edge(block, Edge::new(EdgeKind::Pointer64, 0, target, 0))?;
        let sym = graph.add_anonymous_symbol(block, 0, 8, false, false)?;
        self.entries.insert(target, sym);
        Ok(sym)
    }

    fn stub(&mut self, graph: &mut LinkGraph, target: SymbolId) -> Result<SymbolId, LinkError> {
        if let Some(&s) = self.stub_for.get(&target) {
            return Ok(s);
        }
        let entry = self.entry(graph, target)?;
        let section = match self.stubs {
            Some(id) => id,
            None => {
                let id = graph.add_section(STUBS_SECTION, Prot::RX);
                self.stubs = Some(id);
                id
            }
        };
        let block = graph.add_content_block(section, STUB_CONTENT.to_vec(), 1, 0)?;
        graph.add_edge(block, Edge::new(EdgeKind::Delta32, 2, entry, -4))?;
        let sym = graph.add_anonymous_symbol(block, 0, STUB_CONTENT.len() as u64, true, false)?;
        self.stub_for.insert(target, sym);
        Ok(sym)
    }
}

/// Lowers every GOT and PLT request of the graph: GOT entries (one per target) for
/// GOT-relative references, stubs for branches to symbols the graph does not define, and
/// `_GLOBAL_OFFSET_TABLE_` at the start of the GOT. A post-prune pass.
pub fn build_got_and_stubs(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let mut tables = Tables {
        got: graph.section_by_name(GOT_SECTION),
        stubs: graph.section_by_name(STUBS_SECTION),
        entries: HashMap::default(),
        stub_for: HashMap::default(),
    };
    // A reference to the GOT base needs the GOT even with no entries.
    let needs_base = graph.find_symbol(GOT_SYMBOL).is_some_and(|s| graph.symbol(s).is_some_and(|s| s.is_external()))
        || graph.blocks().any(|(_, b)| b.edges().iter().any(|e| e.kind == EdgeKind::Delta64FromGot));
    if needs_base {
        tables.got_section(graph)?;
    }
    for id in graph.block_ids() {
        let count = graph.block(id).map(|b| b.edges().len()).unwrap_or(0);
        for i in 0..count {
            let Some(edge) = graph.block(id).and_then(|b| b.edges().get(i).copied()) else {
                continue;
            };
            let defined_here = graph.symbol(edge.target).is_some_and(|s| s.is_defined());
            let lowered = match edge.kind {
                EdgeKind::RequestGotAndTransformToDelta32 => {
                    Some((EdgeKind::Delta32, tables.entry(graph, edge.target)?))
                }
                EdgeKind::RequestGotAndTransformToPcRel32GotLoadRelaxable => {
                    Some((EdgeKind::PcRel32GotLoadRelaxable, tables.entry(graph, edge.target)?))
                }
                EdgeKind::RequestGotAndTransformToPcRel32GotLoadRexRelaxable => {
                    Some((EdgeKind::PcRel32GotLoadRexRelaxable, tables.entry(graph, edge.target)?))
                }
                EdgeKind::RequestGotAndTransformToDelta64 => {
                    Some((EdgeKind::Delta64, tables.entry(graph, edge.target)?))
                }
                EdgeKind::RequestGotAndTransformToDelta64FromGot => {
                    tables.got_section(graph)?;
                    Some((EdgeKind::Delta64FromGot, tables.entry(graph, edge.target)?))
                }
                EdgeKind::RequestPltAndTransformToDelta64FromGot => {
                    tables.got_section(graph)?;
                    if defined_here {
                        Some((EdgeKind::Delta64FromGot, edge.target))
                    } else {
                        Some((EdgeKind::Delta64FromGot, tables.stub(graph, edge.target)?))
                    }
                }
                EdgeKind::BranchPCRel32 if !defined_here => {
                    Some((EdgeKind::BranchPCRel32, tables.stub(graph, edge.target)?))
                }
                _ => None,
            };
            if let Some((kind, target)) = lowered {
                if let Some(e) = graph.block_mut(id).and_then(|b| b.edges_mut().get_mut(i)) {
                    e.kind = kind;
                    e.target = target;
                }
            }
        }
    }
    Ok(())
}

/// The symbol a GOT entry points at, if `entry` is one.
fn got_entry_target(graph: &LinkGraph, got: Option<SectionId>, entry: SymbolId) -> Option<SymbolId> {
    let block = graph.symbol(entry)?.block()?;
    let b = graph.block(block)?;
    if Some(b.section()) != got {
        return None;
    }
    b.edges().iter().find(|e| e.kind == EdgeKind::Pointer64 && e.offset == 0).map(|e| e.target)
}

/// The symbol a stub jumps to, if `stub` is one.
fn stub_target(
    graph: &LinkGraph,
    got: Option<SectionId>,
    stubs: Option<SectionId>,
    stub: SymbolId,
) -> Option<SymbolId> {
    let block = graph.symbol(stub)?.block()?;
    let b = graph.block(block)?;
    if Some(b.section()) != stubs {
        return None;
    }
    let entry = b.edges().iter().find(|e| e.offset == 2)?.target;
    got_entry_target(graph, got, entry)
}

/// One byte to overwrite in a block's content: (offset, value).
type BytePatch = Option<(usize, u8)>;

/// Rewrites GOT loads and stub calls whose final target is within rel32 reach into direct
/// references. A pre-fixup pass (every address is known by then).
pub fn optimize_got_and_stub_accesses(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let got = graph.section_by_name(GOT_SECTION);
    let stubs = graph.section_by_name(STUBS_SECTION);
    if got.is_none() && stubs.is_none() {
        return Ok(());
    }
    for id in graph.block_ids() {
        let Some(block) = graph.block(id) else {
            continue;
        };
        let base = block.addr().0 as i128;
        let mut rewrites: Vec<(usize, Edge, BytePatch, BytePatch)> = Vec::new();
        for (i, edge) in block.edges().iter().enumerate() {
            let (relaxable, rex) = match edge.kind {
                EdgeKind::PcRel32GotLoadRelaxable => (true, false),
                EdgeKind::PcRel32GotLoadRexRelaxable => (true, true),
                EdgeKind::BranchPCRel32 => (false, false),
                _ => continue,
            };
            let final_target = if relaxable {
                got_entry_target(graph, got, edge.target)
            } else {
                stub_target(graph, got, stubs, edge.target)
            };
            let Some(final_target) = final_target else {
                continue;
            };
            // Weak references left unresolved (address 0) and thread-local symbols stay
            // indirect.
            let Some(addr) = graph.symbol_addr(final_target).filter(|a| a.0 != 0) else {
                continue;
            };
            if graph.symbol(final_target).is_some_and(|s| s.is_thread_local()) {
                continue;
            }
            let value = addr.0 as i128 + edge.addend as i128 - (base + edge.offset as i128);
            // A relaxed `jmp` moves the rel32 one byte earlier, so allow a byte of slack.
            if i32::try_from(value).is_err() || i32::try_from(value + 1).is_err() {
                continue;
            }
            if !relaxable {
                rewrites.push((i, Edge { target: final_target, ..*edge }, None, None));
                continue;
            }
            let bytes = block.bytes();
            let off = edge.offset as usize;
            if off < 2 || off + 4 > bytes.len() {
                continue;
            }
            let (op, modrm) = (bytes[off - 2], bytes[off - 1]);
            let direct = Edge { kind: EdgeKind::Delta32, target: final_target, ..*edge };
            if op == 0x8B && modrm & 0xC7 == 0x05 {
                // mov foo@GOTPCREL(%rip), %reg  ->  lea foo(%rip), %reg  (8B /r -> 8D /r).
                rewrites.push((i, direct, Some((off - 2, 0x8D)), None));
            } else if !rex && op == 0xFF && modrm == 0x15 {
                // call *foo@GOTPCREL(%rip)  ->  addr32 call foo  (FF 15 -> 67 E8).
                rewrites.push((i, direct, Some((off - 2, 0x67)), Some((off - 1, 0xE8))));
            } else if !rex && op == 0xFF && modrm == 0x25 && off + 4 < bytes.len() + 1 {
                // jmp *foo@GOTPCREL(%rip)  ->  jmp foo; nop  (FF 25 rel32 -> E9 rel32 90): the
                // rel32 moves one byte earlier and the addend stays, as computed above.
                let moved = Edge { offset: edge.offset - 1, ..direct };
                rewrites.push((i, moved, Some((off - 2, 0xE9)), Some((off + 3, 0x90))));
            }
        }
        if rewrites.is_empty() {
            continue;
        }
        let Some(block) = graph.block_mut(id) else {
            continue;
        };
        for (i, edge, p1, p2) in rewrites {
            let needs_bytes = p1.is_some() || p2.is_some();
            if needs_bytes {
                let bytes = block.bytes_mut();
                for (at, byte) in [p1, p2].into_iter().flatten() {
                    if let Some(b) = bytes.get_mut(at) {
                        *b = byte;
                    }
                }
            }
            if let Some(e) = block.edges_mut().get_mut(i) {
                *e = edge;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jit_mem::TargetAddr;

    use super::*;
    use crate::x86_64::{FixupEnv, apply_fixups};
    use crate::{Linkage, SymbolDef};

    /// A graph whose code loads `near` and `far` through the GOT and calls `far`.
    fn graph() -> (LinkGraph, crate::BlockId) {
        let mut g = LinkGraph::new("r.o");
        let text = g.add_section(".text", Prot::RX);
        // mov near@GOTPCREL(%rip),%rax; mov far@GOTPCREL(%rip),%rax; call far@PLT
        let code = vec![0x48, 0x8B, 0x05, 0, 0, 0, 0, 0x48, 0x8B, 0x05, 0, 0, 0, 0, 0xE8, 0, 0, 0, 0];
        let b = g.add_content_block(text, code, 16, 0).unwrap();
        g.add_defined_symbol(b, 0, Some("code".into()), 19, Linkage::Strong, Scope::Default, true, true).unwrap();
        let near = g.add_external_symbol("near".into(), Linkage::Strong);
        let far = g.add_external_symbol("far".into(), Linkage::Strong);
        let rex = EdgeKind::RequestGotAndTransformToPcRel32GotLoadRexRelaxable;
        g.add_edge(b, Edge::new(rex, 3, near, -4)).unwrap();
        g.add_edge(b, Edge::new(rex, 10, far, -4)).unwrap();
        g.add_edge(b, Edge::new(EdgeKind::BranchPCRel32, 15, far, -4)).unwrap();
        (g, b)
    }

    fn place(g: &mut LinkGraph, code: crate::BlockId) {
        let mut next = 0x7000_0000_1000u64;
        for id in g.block_ids() {
            let addr = if id == code { 0x7000_0000_0000 } else { next };
            g.set_block_addr(id, TargetAddr(addr));
            next += 0x10;
        }
        for (name, addr) in [("near", 0x7000_0010_0000u64), ("far", 0x1000)] {
            let s = g.find_symbol(name).unwrap();
            g.set_external_addr(s, TargetAddr(addr));
        }
    }

    #[test]
    fn in_range_got_loads_become_lea_and_out_of_range_ones_stay() {
        let (mut g, code) = graph();
        build_got_and_stubs(&mut g).unwrap();
        place(&mut g, code);
        optimize_got_and_stub_accesses(&mut g).unwrap();
        let b = g.block(code).unwrap();
        assert_eq!(&b.bytes()[..3], [0x48, 0x8D, 0x05], "near: lea");
        assert_eq!(&b.bytes()[7..10], [0x48, 0x8B, 0x05], "far: still a GOT load");
        let near = g.find_symbol("near").unwrap();
        assert_eq!((b.edges()[0].kind, b.edges()[0].target), (EdgeKind::Delta32, near));
        let stub = b.edges()[2].target;
        let stub_block = g.symbol(stub).and_then(|s| s.block()).unwrap();
        assert_eq!(g.section(g.block(stub_block).unwrap().section()).unwrap().name(), STUBS_SECTION);
        let got = g.section_by_name(GOT_SECTION).and_then(|s| g.blocks_in_section(s).first().copied());
        let env = FixupEnv { got_base: got.map(|b| g.block(b).unwrap().addr()), tls_module: 0 };
        apply_fixups(&mut g, env).unwrap();
        let b = g.block(code).unwrap();
        let rel = i32::from_le_bytes(b.bytes()[3..7].try_into().unwrap());
        assert_eq!(0x7000_0000_0007i64 + rel as i64, 0x7000_0010_0000, "lea reaches near");
    }

    #[test]
    fn an_out_of_range_fixup_names_its_source_and_target() {
        let mut g = LinkGraph::new("far.o");
        let text = g.add_section(".text", Prot::RX);
        let b = g.add_content_block(text, vec![0; 8], 1, 0).unwrap();
        g.add_defined_symbol(b, 0, Some("caller".into()), 8, Linkage::Strong, Scope::Default, true, true).unwrap();
        let far = g
            .add_absolute_symbol(Some("faraway".into()), TargetAddr(1 << 40), Linkage::Strong, Scope::Default, false)
            .unwrap();
        g.add_edge(b, Edge::new(EdgeKind::Delta32, 2, far, -4)).unwrap();
        g.set_block_addr(b, TargetAddr(0x1000));
        let err = apply_fixups(&mut g, FixupEnv::default()).unwrap_err().to_string();
        assert!(err.contains("far.o") && err.contains(".text+0x2 (caller+0x2)") && err.contains("'faraway'"), "{err}");
        assert!(matches!(g.symbol(far).unwrap().def(), SymbolDef::Absolute(_)));
    }
}
