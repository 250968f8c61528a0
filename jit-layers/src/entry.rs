//! Calling JIT'd entry points (main, initializers, finalizers) as a C runtime would.
//!
//! An exception that escapes JIT'd code (a C++ `throw` with no handler) must end the program
//! the native way: the unwinder's search reaches the bottom of the stack and `__cxa_throw`
//! calls `std::terminate` ("terminate called after throwing an instance of ..."). If it found
//! Rust frames instead, it would unwind into them, which Rust turns into an abort with its own
//! message (and which is undefined behaviour for frames that do not expect it). So entry points
//! are called through a few bytes of code with no unwind information: the unwinder cannot step
//! past them, its search ends there as at the bottom of a native stack, and nothing unwinds
//! into Rust.

use jit_core::{Error, ExecutorAddr, Result};
use jit_mem::{AllocRequest, FinalizedAlloc, MemoryManager, Prot, SegmentRequest};

/// `tramp(f, a, b, c)` calls `f(a, b, c)` and returns its result in `rax`.
///
/// Encodings from the Intel SDM, vol. 2 (System V x86-64 calling convention: arguments in
/// rdi, rsi, rdx, rcx; the stack is 16-byte aligned at each call):
const TRAMPOLINE: [u8; 18] = [
    0x55, //                push rbp            (realigns rsp to 16 for the call)
    0x48, 0x89, 0xf8, //    mov  rax, rdi       (f)
    0x48, 0x89, 0xf7, //    mov  rdi, rsi       (a)
    0x48, 0x89, 0xd6, //    mov  rsi, rdx       (b)
    0x48, 0x89, 0xca, //    mov  rdx, rcx       (c)
    0xff, 0xd0, //          call rax
    0x5d, //                pop  rbp
    0xc3, //                ret
    0xcc, //                int3                (padding; never reached)
];

/// A call gate into JIT'd code (see the module documentation). Owns its memory.
pub struct EntryGate {
    // Keeps the trampoline's code mapped.
    _alloc: FinalizedAlloc,
    call: extern "C" fn(u64, u64, u64, u64) -> u64,
}

impl EntryGate {
    /// Writes the trampoline into memory from `memory`.
    pub fn new(memory: &dyn MemoryManager) -> Result<Self> {
        let request = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, TRAMPOLINE.len() as u64, 16)]);
        let mut alloc = memory.allocate(&request).map_err(Error::other)?;
        let target = alloc.target(0).ok_or_else(|| Error::msg("entry gate: no code segment"))?;
        alloc.working_mut(0).ok_or_else(|| Error::msg("entry gate: no working view"))?.copy_from_slice(&TRAMPOLINE);
        let alloc = alloc.finalize_blocking(Vec::new()).map_err(Error::other)?;
        // SAFETY: `target` holds the finalized (executable) trampoline above, which has this
        // signature; `_alloc` keeps it mapped for as long as `call` can be used.
        let call = unsafe { std::mem::transmute::<usize, extern "C" fn(u64, u64, u64, u64) -> u64>(target.0 as usize) };
        Ok(EntryGate { _alloc: alloc, call })
    }

    /// Calls the JIT'd function at `f` with three integer or pointer arguments (a function that
    /// takes fewer ignores the rest, as the System V ABI allows) and returns `rax`.
    ///
    /// # Safety
    /// `f` must be executable code that follows the System V calling convention and takes at
    /// most three integer/pointer arguments; whatever it does is the caller's responsibility.
    pub unsafe fn call(&self, f: ExecutorAddr, a: u64, b: u64, c: u64) -> u64 {
        (self.call)(f.0, a, b, c)
    }
}
