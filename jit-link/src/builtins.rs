//! Symbols the linker defines itself: `__dso_handle` and `__start_SECTION`/`__stop_SECTION`.

use jit_mem::Prot;

use crate::{LinkError, LinkGraph, Scope};

/// The name C++ static destructors (`__cxa_atexit`) and `atexit` pass as their DSO.
pub const DSO_HANDLE: &str = "__dso_handle";

/// If the graph references `__dso_handle` without defining it, defines a local one (eight
/// bytes of its own), recorded as [`LinkGraph::dso_handle`] and reported at finalize, so
/// the caller can run `__cxa_finalize` on it before freeing the graph. A pre-prune pass;
/// remove it (see [`crate::PassConfig::remove`]) to resolve `__dso_handle` through the
/// context instead, for example one per dylib.
pub fn define_dso_handle(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let Some(sym) = graph.find_symbol(DSO_HANDLE) else {
        return Ok(());
    };
    if !graph.symbol(sym).is_some_and(|s| s.is_external()) {
        return Ok(());
    }
    let section = graph.add_section("$__DSO_HANDLE", Prot::R);
    let block = graph.add_content_block(section, vec![0; 8], 8, 0)?;
    graph.make_defined(sym, block, 0)?;
    graph.set_scope(sym, Scope::Local)?;
    if let Some(s) = graph.symbol_mut(sym) {
        s.set_live(true);
    }
    graph.dso_handle = Some(sym);
    Ok(())
}

/// Defines external `__start_X` / `__stop_X` at the start and end of section `X` (GNU ld's
/// encapsulation symbols, for sections whose name is a C identifier), keeping all of `X`.
/// A pre-prune pass.
pub fn define_section_start_stop(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let wanted: Vec<_> = graph
        .symbols()
        .filter(|(_, s)| s.is_external())
        .filter_map(|(id, s)| {
            let name = s.name()?.as_str();
            let (section, start) = if let Some(rest) = name.strip_prefix("__start_") {
                (rest, true)
            } else {
                (name.strip_prefix("__stop_")?, false)
            };
            Some((id, section.to_string(), start))
        })
        .collect();
    for (sym, section_name, start) in wanted {
        let Some(section) = graph.section_by_name(&section_name) else {
            continue;
        };
        let blocks = graph.blocks_in_section(section);
        let (Some(&first), Some(&last)) = (blocks.first(), blocks.last()) else {
            continue;
        };
        for &b in &blocks {
            graph.add_anonymous_symbol(b, 0, 0, false, true)?;
        }
        if start {
            graph.make_defined(sym, first, 0)?;
        } else {
            let size = graph.block(last).map(|b| b.size()).unwrap_or(0);
            graph.make_defined(sym, last, size)?;
        }
        graph.set_scope(sym, Scope::Local)?;
    }
    Ok(())
}

/// `atexit(f)` as glibc's `libc_nonshared.a` defines it (glibc `stdlib/atexit.c`:
/// `return __cxa_atexit ((void (*) (void *)) func, NULL, __dso_handle);`), since the shared
/// libc exports no `atexit` for a JIT to find:
///
/// ```text
/// 31 f6                 xor    %esi, %esi              ; arg = NULL
/// 48 8d 15 <rel32>      lea    __dso_handle(%rip), %rdx
/// e9 <rel32>            jmp    __cxa_atexit
/// ```
///
/// (Encodings: Intel SDM vol. 2, XOR "31 /r", LEA "REX.W 8D /r" with a RIP-relative ModRM
/// of 0x15, JMP "E9 cd".) `f` stays in `%rdi`.
const ATEXIT_STUB: [u8; 14] = [0x31, 0xF6, 0x48, 0x8D, 0x15, 0, 0, 0, 0, 0xE9, 0, 0, 0, 0];

/// If the graph calls `atexit` without defining it, defines a local `atexit` that registers
/// the handler with `__cxa_atexit` against the graph's `__dso_handle`, so handlers run at
/// `exit` or when the caller runs `__cxa_finalize` on that handle. A pre-prune pass, before
/// `dso_handle`.
pub fn define_atexit(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let Some(sym) = graph.find_symbol("atexit") else {
        return Ok(());
    };
    if !graph.symbol(sym).is_some_and(|s| s.is_external()) {
        return Ok(());
    }
    let dso = graph.add_external_symbol(DSO_HANDLE.into(), crate::Linkage::Strong);
    let cxa_atexit = graph.add_external_symbol("__cxa_atexit".into(), crate::Linkage::Strong);
    let section = graph.add_section("$__ATEXIT", Prot::RX);
    let block = graph.add_content_block(section, ATEXIT_STUB.to_vec(), 16, 0)?;
    graph.add_edge(block, crate::Edge::new(crate::EdgeKind::Delta32, 5, dso, -4))?;
    graph.add_edge(block, crate::Edge::new(crate::EdgeKind::BranchPCRel32, 10, cxa_atexit, -4))?;
    graph.make_defined(sym, block, 0)?;
    graph.set_scope(sym, Scope::Local)?;
    if let Some(s) = graph.symbol_mut(sym) {
        s.set_callable(true);
        s.set_size(ATEXIT_STUB.len() as u64);
    }
    Ok(())
}
