//! Indirect functions (`STT_GNU_IFUNC`): a symbol whose value is a resolver that returns the
//! implementation to use, as `__attribute__((ifunc))` and `target_clones` make them.
//!
//! A static linker turns each into a PLT entry that jumps through a GOT slot, and an
//! `R_X86_64_IRELATIVE` relocation that fills the slot by calling the resolver at load, before
//! any constructor (x86-64 psABI, 4.4.1 and the `IRELATIVE` relocation). Here the symbol is a
//! stub, `jmp *slot(%rip)`, and the slot first holds a thunk that calls the resolver on the
//! first call, stores its answer in the slot and goes on to it with the caller's arguments.
//! Every reference (calls, addresses taken, other objects') sees the stub, so function
//! pointers compare equal everywhere, as they do natively. The resolver runs on the first
//! call rather than at link time because only then is everything it may call Ready: a resolver
//! made by `target_clones` calls `__cpu_indicator_init`, which another object (libgcc.a's)
//! defines. Two threads that call first at once both run the resolver and store the same
//! answer, which is harmless; the thunk is as async-signal-safe as the resolver.

use jit_mem::Prot;

use crate::{Edge, EdgeKind, LinkError, LinkGraph, Linkage, Scope, SymbolId, SymbolName};

/// The section of the stubs and thunks.
pub const IFUNC_SECTION: &str = "$__IFUNC";
/// The section of the slots: written by the thunks, so writable for good.
pub const IFUNC_SLOTS_SECTION: &str = "$__IFUNC_SLOTS";

/// The stub, `jmp *slot(%rip)`: `FF 25` + rel32 (Intel SDM vol. 2, JMP, "FF /4"), as the GOT
/// stubs. The rel32 is at offset 2.
const STUB: [u8; 6] = [0xFF, 0x25, 0, 0, 0, 0];

/// The thunk, entered by the stub's jump with the caller's frame untouched (return address on
/// top, so `%rsp` is 8 modulo 16). It keeps every register that may carry arguments (x86-64
/// psABI 3.2.3: `%rdi %rsi %rdx %rcx %r8 %r9`, `%al` for variadic calls, `%xmm0`-`%xmm7`),
/// calls the resolver with the stack 16-byte aligned, stores its answer in the slot, restores
/// them and jumps to the answer through `%r11` (a scratch register no argument uses). Encodings
/// from the Intel SDM vol. 2 (PUSH 50+rd, SUB/ADD REX.W 81 /5 and /0 id, MOVDQU F3 0F 7F and
/// F3 0F 6F with a SIB byte for `%rsp`, CALL E8 cd, MOV REX.W 89 /r, POP 58+rd, JMP FF /4).
const THUNK: &[u8] = &[
    0x57, // push %rdi
    0x56, // push %rsi
    0x52, // push %rdx
    0x51, // push %rcx
    0x41, 0x50, // push %r8
    0x41, 0x51, // push %r9
    0x50, // push %rax: seven pushes make %rsp 0 modulo 16
    0x48, 0x81, 0xEC, 0x80, 0x00, 0x00, 0x00, // sub $128, %rsp
    0xF3, 0x0F, 0x7F, 0x04, 0x24, // movdqu %xmm0, (%rsp)
    0xF3, 0x0F, 0x7F, 0x4C, 0x24, 0x10, // movdqu %xmm1, 16(%rsp)
    0xF3, 0x0F, 0x7F, 0x54, 0x24, 0x20, // movdqu %xmm2, 32(%rsp)
    0xF3, 0x0F, 0x7F, 0x5C, 0x24, 0x30, // movdqu %xmm3, 48(%rsp)
    0xF3, 0x0F, 0x7F, 0x64, 0x24, 0x40, // movdqu %xmm4, 64(%rsp)
    0xF3, 0x0F, 0x7F, 0x6C, 0x24, 0x50, // movdqu %xmm5, 80(%rsp)
    0xF3, 0x0F, 0x7F, 0x74, 0x24, 0x60, // movdqu %xmm6, 96(%rsp)
    0xF3, 0x0F, 0x7F, 0x7C, 0x24, 0x70, // movdqu %xmm7, 112(%rsp)
    0xE8, 0, 0, 0, 0, // call resolver (rel32 at CALL_AT)
    0x48, 0x89, 0x05, 0, 0, 0, 0, // mov %rax, slot(%rip) (rel32 at STORE_AT)
    0x49, 0x89, 0xC3, // mov %rax, %r11
    0xF3, 0x0F, 0x6F, 0x04, 0x24, // movdqu (%rsp), %xmm0
    0xF3, 0x0F, 0x6F, 0x4C, 0x24, 0x10, // movdqu 16(%rsp), %xmm1
    0xF3, 0x0F, 0x6F, 0x54, 0x24, 0x20, // movdqu 32(%rsp), %xmm2
    0xF3, 0x0F, 0x6F, 0x5C, 0x24, 0x30, // movdqu 48(%rsp), %xmm3
    0xF3, 0x0F, 0x6F, 0x64, 0x24, 0x40, // movdqu 64(%rsp), %xmm4
    0xF3, 0x0F, 0x6F, 0x6C, 0x24, 0x50, // movdqu 80(%rsp), %xmm5
    0xF3, 0x0F, 0x6F, 0x74, 0x24, 0x60, // movdqu 96(%rsp), %xmm6
    0xF3, 0x0F, 0x6F, 0x7C, 0x24, 0x70, // movdqu 112(%rsp), %xmm7
    0x48, 0x81, 0xC4, 0x80, 0x00, 0x00, 0x00, // add $128, %rsp
    0x58, // pop %rax
    0x41, 0x59, // pop %r9
    0x41, 0x58, // pop %r8
    0x59, // pop %rcx
    0x5A, // pop %rdx
    0x5E, // pop %rsi
    0x5F, // pop %rdi
    0x41, 0xFF, 0xE3, // jmp *%r11
];
/// Offset of the call's rel32 in [`THUNK`] (nine bytes of pushes, seven of `sub`, 47 of
/// stores, one of opcode).
const CALL_AT: u64 = 9 + 7 + 47 + 1;
/// Offset of the store's rel32 in [`THUNK`]: after the call (4) and `48 89 05`.
const STORE_AT: u64 = CALL_AT + 4 + 3;

/// Makes indirect function `name` (its resolver at `resolver`): the stub it becomes, its slot
/// and its thunk. Returns the stub's symbol, which stands for `name` from now on. Without
/// `edges` (an interface graph, which has none), the blocks are made without their edges.
pub fn add_indirect_function(
    graph: &mut LinkGraph,
    name: Option<SymbolName>,
    linkage: Linkage,
    scope: Scope,
    resolver: SymbolId,
    edges: bool,
) -> Result<SymbolId, LinkError> {
    let code = match graph.section_by_name(IFUNC_SECTION) {
        Some(id) => id,
        None => graph.add_section(IFUNC_SECTION, Prot::RX),
    };
    let slots = match graph.section_by_name(IFUNC_SLOTS_SECTION) {
        Some(id) => id,
        None => graph.add_section(IFUNC_SLOTS_SECTION, Prot::RW),
    };
    let thunk_block = graph.add_content_block(code, THUNK.to_vec(), 16, 0)?;
    let thunk = graph.add_anonymous_symbol(thunk_block, 0, THUNK.len() as u64, true, false)?;
    let slot_block = graph.add_content_block(slots, vec![0; 8], 8, 0)?;
    let slot = graph.add_anonymous_symbol(slot_block, 0, 8, false, false)?;
    let stub_block = graph.add_content_block(code, STUB.to_vec(), 8, 0)?;
    let live = scope != Scope::Local;
    let stub = graph.add_defined_symbol(stub_block, 0, name, STUB.len() as u64, linkage, scope, true, live)?;
    if edges {
        graph.add_edge(stub_block, Edge::new(EdgeKind::Delta32, 2, slot, -4))?;
        graph.add_edge(slot_block, Edge::new(EdgeKind::Pointer64, 0, thunk, 0))?;
        graph.add_edge(thunk_block, Edge::new(EdgeKind::BranchPCRel32, CALL_AT, resolver, -4))?;
        graph.add_edge(thunk_block, Edge::new(EdgeKind::Delta32, STORE_AT, slot, -4))?;
    }
    Ok(stub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thunk_s_fields_are_where_its_edges_say() {
        assert_eq!(THUNK[CALL_AT as usize - 1], 0xE8, "call opcode");
        assert_eq!(&THUNK[CALL_AT as usize..CALL_AT as usize + 4], &[0; 4]);
        assert_eq!(&THUNK[STORE_AT as usize - 3..STORE_AT as usize], &[0x48, 0x89, 0x05], "mov %rax, disp32(%rip)");
        assert_eq!(&THUNK[STORE_AT as usize..STORE_AT as usize + 4], &[0; 4]);
        // Pushes and pops pair up, and the frame is 16-byte aligned at the call.
        let pushes = 7;
        assert_eq!((8 + pushes * 8 + 128) % 16, 0);
        assert_eq!(&THUNK[THUNK.len() - 3..], &[0x41, 0xFF, 0xE3], "jmp *%r11");
    }
}
