//! TLS descriptors (`-mtls-dialect=gnu2`, proposed as GCC 16's default on x86-64): the
//! resolver JIT'd code calls for a thread-local variable's place.
//!
//! The code sequence (x86-64 psABI, "TLS descriptors"; Oliva, "Thread-Local Storage
//! Descriptors for IA32 and AMD64/EM64T") is
//!
//! ```text
//! lea  x@tlsdesc(%rip), %rax    # R_X86_64_GOTPC32_TLSDESC: the descriptor's address
//! call *(%rax)                  # R_X86_64_TLSDESC_CALL: its resolver, given %rax
//! mov  %fs:(%rax), ...          # %rax: the variable's offset from the thread pointer
//! ```
//!
//! A descriptor is two words, `{ resolver, argument }`; jit-link's argument is the address of
//! the variable's `tls_index` (see [`crate::tls::lower_tls`]). The resolver must keep every
//! register but `%rax` (and the flags): the caller saves nothing around the call. Ours has
//! two ways:
//! - Fast, in a few instructions and three saved registers: the thread's block of the
//!   variable's module is in the thread's *fast entries*, which the runtime publishes in two
//!   words of the process's static TLS whenever it makes a block (3.9-4.6 ns per access in a
//!   loop of 10 million, 2026-11-24, as natively for a shared library's variable: 3.8-3.9).
//! - Slow, the first time in a thread (or for a loader's module): saves the general registers
//!   a C function may change and the whole extended state (x87, SSE, AVX, AVX-512: what
//!   `XCR0` enables) with `xsave`, then asks [`super::runtime::tls_get_addr`] as the
//!   general-dynamic model would (175 ns per access had every access gone this way).
//!   glibc's resolver once kept too little of that state (its bug 31372).
//!
//! Either returns the variable's address less the thread pointer.

use std::arch::global_asm;
use std::sync::OnceLock;

use super::runtime::{TlsIndex, tls_get_addr};

/// Bytes the resolver's `xsave` area takes: what CPUID leaf 0xD (sub-leaf 0, EBX) gives for
/// the components `XCR0` enables, rounded up to 64. Read by the resolver; set once, by
/// [`resolver_address`], before any descriptor can point at the resolver.
static mut XSAVE_SIZE: u64 = 0;

// The resolver. On entry `%rax` holds the descriptor's address; the stack is as the call left
// it (16-byte aligned less the return address). Saves %rcx, %rdx, %rsi, %rdi, %r8-%r11 (the
// callee-saved ones the Rust function keeps itself), reserves a slot for the result, then
// saves the extended state in an area aligned to 64 below them, with its header zeroed (XRSTOR
// faults on reserved header bits; XSAVE writes only XSTATE_BV). `%rsp` is then 64-aligned for
// the call, as the ABI wants (16).
global_asm!(
    ".pushsection .text.orcjit_tlsdesc_resolve,\"ax\",@progbits",
    ".globl orcjit_tlsdesc_resolve",
    ".hidden orcjit_tlsdesc_resolve",
    ".type orcjit_tlsdesc_resolve,@function",
    ".p2align 4",
    "orcjit_tlsdesc_resolve:",
    // The fast way: this thread's block of the variable's module is in its fast entries
    // (`runtime::FastEntry`, published by the runtime when it made the block). Keeps %rcx,
    // %rdx, %rsi and the descriptor on the stack.
    "push rcx",
    "push rdx",
    "push rsi",
    "push rax",
    "mov rcx, qword ptr [rax + 8]",
    "mov rdx, qword ptr [rcx]",
    "cmp rdx, -1",
    "jne 2f",
    // An indirect index (another graph's variable): its offset word is the real index.
    "mov rcx, qword ptr [rcx + 8]",
    "mov rdx, qword ptr [rcx]",
    "2:",
    "mov rax, rdx",
    "shr rax, 32",
    // Generation 0: a loader's module (or none), the slow way.
    "jz 9f",
    "mov edx, edx",
    "sub rdx, 1",
    "jb 9f",
    "mov rsi, qword ptr [rip + orcjit_tls_fast_len@GOTTPOFF]",
    "cmp rdx, qword ptr fs:[rsi]",
    "jae 9f",
    "mov rsi, qword ptr [rip + orcjit_tls_fast_entries@GOTTPOFF]",
    "mov rsi, qword ptr fs:[rsi]",
    "shl rdx, 4",
    "add rsi, rdx",
    "cmp rax, qword ptr [rsi]",
    "jne 9f",
    "mov rax, qword ptr [rsi + 8]",
    "add rax, qword ptr [rcx + 8]",
    "sub rax, qword ptr fs:[0]",
    "add rsp, 8",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "ret",
    // The slow way, with the registers as they came.
    "9:",
    "pop rax",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "push rbp",
    "mov rbp, rsp",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rax",
    "mov rdi, qword ptr [rax + 8]",
    "sub rsp, qword ptr [rip + {size}]",
    "and rsp, -64",
    "xor eax, eax",
    "mov qword ptr [rsp + 512], rax",
    "mov qword ptr [rsp + 520], rax",
    "mov qword ptr [rsp + 528], rax",
    "mov qword ptr [rsp + 536], rax",
    "mov qword ptr [rsp + 544], rax",
    "mov qword ptr [rsp + 552], rax",
    "mov qword ptr [rsp + 560], rax",
    "mov qword ptr [rsp + 568], rax",
    "mov eax, -1",
    "mov edx, -1",
    "xsave64 [rsp]",
    "call {slow}",
    "mov qword ptr [rbp - 72], rax",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rsp]",
    "lea rsp, [rbp - 72]",
    "pop rax",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbp",
    "ret",
    ".size orcjit_tlsdesc_resolve, . - orcjit_tlsdesc_resolve",
    ".popsection",
    slow = sym resolve_slowly,
    size = sym XSAVE_SIZE,
);

unsafe extern "C" {
    fn orcjit_tlsdesc_resolve();
}

/// The resolver's work, with every register it must keep already saved: the address of this
/// thread's copy of the variable `index` describes, less the thread pointer. A module freed
/// since gives null less the thread pointer: the access then faults at address 0.
///
/// # Safety
///
/// As [`tls_get_addr`]: `index` is the `tls_index` the linker made for the descriptor.
unsafe extern "C" fn resolve_slowly(index: *const TlsIndex) -> isize {
    // SAFETY: the descriptor's argument is the linker's `tls_index` (the contract).
    let addr = unsafe { tls_get_addr(index) } as isize;
    let tp: isize;
    // SAFETY: reads the thread pointer, the TCB's first word (`%fs:0`, which the x86-64 psABI
    // requires to point at itself).
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    addr.wrapping_sub(tp)
}

/// The address a descriptor's first word holds, or why descriptors cannot work here (a CPU
/// or kernel without XSAVE, whose resolver could not keep the vector registers).
pub(crate) fn resolver_address() -> Result<u64, String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            // CPUID.1:ECX.OSXSAVE[bit 27]: XSAVE is there and the kernel enabled it.
            let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
            if !osxsave {
                return Err("TLS descriptors (-mtls-dialect=gnu2) need XSAVE, which this CPU or kernel lacks; \
                            compile with -mtls-dialect=gnu"
                    .to_string());
            }
            // Leaf 0xD exists where XSAVE does (checked above).
            let bytes = u64::from(__cpuid_count(0xD, 0).ebx);
            // SAFETY: written once per process, inside this initializer, before any descriptor
            // holds the resolver's address (only returned after it); the resolver only reads it.
            unsafe { *std::ptr::addr_of_mut!(XSAVE_SIZE) = bytes.max(576).next_multiple_of(64) };
            Ok(())
        })
        .clone()?;
    Ok(orcjit_tlsdesc_resolve as unsafe extern "C" fn() as usize as u64)
}
