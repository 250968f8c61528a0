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

/// A function glibc keeps in `libc_nonshared.a` (linked into each executable and shared
/// object, so the shared libc exports none for a JIT to find): it forwards its arguments to an
/// exported libc function, adding the caller's `__dso_handle`.
struct Forwarder {
    name: &'static str,
    target: &'static str,
    /// `lea __dso_handle(%rip), %REG` (or more) then `jmp TARGET`, displacements zero.
    code: &'static [u8],
    /// Offsets of the `lea`'s and the `jmp`'s 32-bit displacements.
    dso_at: u64,
    jmp_at: u64,
}

/// The forwarders, as glibc defines them. Encodings: Intel SDM vol. 2, XOR "31 /r", LEA
/// "REX.W 8D /r" with a RIP-relative ModRM (mod 00, r/m 101: 0x15 for %rdx, 0x35 for %rsi,
/// 0x0D for %rcx), JMP "E9 cd"; arguments in the psABI's order (%rdi, %rsi, %rdx, %rcx).
const FORWARDERS: [Forwarder; 3] = [
    // glibc `stdlib/atexit.c`: `return __cxa_atexit ((void (*) (void *)) func, NULL, __dso_handle);`
    //   31 f6              xor    %esi, %esi              ; arg = NULL
    //   48 8d 15 <rel32>   lea    __dso_handle(%rip), %rdx
    //   e9 <rel32>         jmp    __cxa_atexit
    Forwarder {
        name: "atexit",
        target: "__cxa_atexit",
        code: &[0x31, 0xF6, 0x48, 0x8D, 0x15, 0, 0, 0, 0, 0xE9, 0, 0, 0, 0],
        dso_at: 5,
        jmp_at: 10,
    },
    // glibc `stdlib/at_quick_exit.c`: `return __cxa_at_quick_exit ((void (*) (void *)) func, __dso_handle);`
    //   48 8d 35 <rel32>   lea    __dso_handle(%rip), %rsi
    //   e9 <rel32>         jmp    __cxa_at_quick_exit
    Forwarder {
        name: "at_quick_exit",
        target: "__cxa_at_quick_exit",
        code: &[0x48, 0x8D, 0x35, 0, 0, 0, 0, 0xE9, 0, 0, 0, 0],
        dso_at: 3,
        jmp_at: 8,
    },
    // glibc `nptl/pthread_atfork.c`: `return __register_atfork (prepare, parent, child, __dso_handle);`
    //   48 8d 0d <rel32>   lea    __dso_handle(%rip), %rcx
    //   e9 <rel32>         jmp    __register_atfork
    Forwarder {
        name: "pthread_atfork",
        target: "__register_atfork",
        code: &[0x48, 0x8D, 0x0D, 0, 0, 0, 0, 0xE9, 0, 0, 0, 0],
        dso_at: 3,
        jmp_at: 8,
    },
];

/// If the graph calls `atexit`, `at_quick_exit` or `pthread_atfork` without defining it,
/// defines a local one as glibc's `libc_nonshared.a` does: it calls `__cxa_atexit`,
/// `__cxa_at_quick_exit` or `__register_atfork` with the graph's `__dso_handle`, so the
/// handlers are tied to this graph (exit handlers run when the caller runs `__cxa_finalize`
/// on that handle). A pre-prune pass, before `dso_handle`.
pub fn define_libc_nonshared(graph: &mut LinkGraph) -> Result<(), LinkError> {
    for f in &FORWARDERS {
        let Some(sym) = graph.find_symbol(f.name) else {
            continue;
        };
        if !graph.symbol(sym).is_some_and(|s| s.is_external()) {
            continue;
        }
        let dso = graph.add_external_symbol(DSO_HANDLE.into(), crate::Linkage::Strong);
        let target = graph.add_external_symbol(f.target.into(), crate::Linkage::Strong);
        let section = graph.add_section("$__LIBC_NONSHARED", Prot::RX);
        let block = graph.add_content_block(section, f.code.to_vec(), 16, 0)?;
        graph.add_edge(block, crate::Edge::new(crate::EdgeKind::Delta32, f.dso_at, dso, -4))?;
        graph.add_edge(block, crate::Edge::new(crate::EdgeKind::BranchPCRel32, f.jmp_at, target, -4))?;
        graph.make_defined(sym, block, 0)?;
        graph.set_scope(sym, Scope::Local)?;
        if let Some(s) = graph.symbol_mut(sym) {
            s.set_callable(true);
            s.set_size(f.code.len() as u64);
        }
    }
    Ok(())
}
