//! The re-entry trampoline: the machine code every unresolved stub jumps to, one per manager.
//!
//! Entered from a stub's lazy entry with the stub's id pushed on top of the caller's return
//! address (the psABI's `.PLT0`, which jumps to glibc's `_dl_runtime_resolve`), it saves what
//! the caller passed, calls the resolver `resolve(context, id)`, restores it all and jumps to
//! the address the resolver returned, leaving the caller's return address on top of the stack
//! as a direct call would have.
//!
//! Saved: every register that can carry an argument (psABI §3.2.3 "Parameter Passing" and
//! figure 3.4 "Register Usage"): rdi, rsi, rdx, rcx, r8, r9, rax (%al is the number of vector
//! registers a varargs call uses) and r10 (static chain), and the whole vector state: xmm, the
//! upper halves of ymm and zmm, the opmask registers, MXCSR and x87, so that Rust or libc code
//! in the resolver may use AVX and `vzeroupper` freely. XSAVE (XSAVEC where CPUID offers it)
//! saves them into a 64-byte aligned area whose size comes from CPUID leaf 0xD; a CPU without
//! XSAVE has no AVX either, and FXSAVE64 saves its x87 and SSE state. This is glibc's
//! `_dl_runtime_resolve_xsavec` / `_xsave` / `_fxsave` (`sysdeps/x86_64/dl-trampoline.h`),
//! plus r10 and x87; LLVM's `OrcX86_64_SysV::writeResolverCode` (`OrcABISupport.cpp`) uses
//! FXSAVE64 alone, which loses the upper halves of ymm and zmm arguments.
//!
//! The resolver's answer is jumped to through r11 (psABI figure 3.4: a scratch register, not
//! used for arguments), as glibc does, rather than by writing it over the id and returning:
//! a `ret` to an address no `call` pushed would unbalance the return-stack predictor (and a
//! CET shadow stack).

use std::sync::atomic::{AtomicU64, Ordering};

use jit_core::{Error, Result};
use jit_mem::{AllocRequest, FinalizedAlloc, MemoryManager, Prot, SegmentRequest, TargetAddr};

use super::stubs::rel32;

/// What the trampoline calls: the manager's context word and the id the stub pushed in, the
/// address to jump to out. Must never unwind.
pub(super) type ResolverFn = unsafe extern "C" fn(*const (), u64) -> u64;

/// The XSAVE state components saved (Intel SDM vol. 1, §13.1 "XSAVE-Supported Features and
/// State-Component Bitmaps"): 0 x87, 1 SSE (xmm0-15, MXCSR), 2 AVX (upper halves of ymm0-15),
/// 5 opmask (k0-7), 6 ZMM_Hi256 (upper halves of zmm0-15), 7 Hi16_ZMM (zmm16-31). These are
/// glibc's `STATE_SAVE_MASK` plus x87, without MPX (gone from Linux) or AMX (never an argument,
/// and 8 KiB of tile data on the stack).
const SAVED_COMPONENTS: u64 = 0b1110_0111;

/// Size of the XSAVE legacy region and header (SDM vol. 1, §13.4.1 and §13.4.2).
const LEGACY_AND_HEADER: u32 = 512 + 64;

/// Room for the trampoline's code (it is at most about 150 bytes).
const CODE_CAPACITY: u64 = 256;

/// How the trampoline saves the vector state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StateSave {
    /// FXSAVE64/FXRSTOR64 (512 bytes): x87, MXCSR and xmm0-15; for CPUs without XSAVE.
    Fxsave,
    /// XSAVE64/XRSTOR64 of the components `mask` in the standard format, `size` bytes.
    Xsave { mask: u64, size: u32 },
    /// XSAVEC64/XRSTOR64 of `mask` in the compacted format (components in their initial state
    /// are not written), `size` bytes.
    Xsavec { mask: u64, size: u32 },
}

impl StateSave {
    /// The best this CPU and OS allow.
    pub(super) fn detect() -> StateSave {
        Self::available().pop().unwrap_or(StateSave::Fxsave)
    }

    /// Every way this CPU and OS allow, worst first (the tests try them all).
    pub(super) fn available() -> Vec<StateSave> {
        let mut ways = vec![StateSave::Fxsave];
        // CPUID.1:ECX bit 26 (XSAVE) and bit 27 (OSXSAVE: the OS enabled XSAVE and XGETBV),
        // SDM vol. 2A "CPUID", table 3-10.
        let leaf1 = cpuid(1, 0);
        if leaf1.ecx & (1 << 26) == 0 || leaf1.ecx & (1 << 27) == 0 {
            return ways;
        }
        // SAFETY: OSXSAVE is set, so XGETBV may be executed (SDM vol. 2C "XGETBV").
        let xcr0 = unsafe { std::arch::x86_64::_xgetbv(0) };
        let mask = xcr0 & SAVED_COMPONENTS;
        ways.push(StateSave::Xsave { mask, size: standard_size(mask) });
        // CPUID.(EAX=0DH,ECX=1):EAX bit 1: XSAVEC (SDM vol. 2A "CPUID", table 3-8).
        if cpuid(0xd, 1).eax & (1 << 1) != 0 {
            ways.push(StateSave::Xsavec { mask, size: compacted_size(mask) });
        }
        ways
    }

    /// Bytes of the save area.
    pub(super) fn area_size(self) -> u32 {
        match self {
            StateSave::Fxsave => 512,
            StateSave::Xsave { size, .. } | StateSave::Xsavec { size, .. } => size,
        }
    }
}

#[allow(unused_unsafe)] // `__cpuid_count` is a safe fn in newer Rust, unsafe in the 1.85 this crate supports.
fn cpuid(leaf: u32, sub_leaf: u32) -> std::arch::x86_64::CpuidResult {
    // SAFETY: CPUID exists on every x86-64 CPU and only reads identification registers.
    unsafe { std::arch::x86_64::__cpuid_count(leaf, sub_leaf) }
}

/// The standard-format area size for `mask`: CPUID.(EAX=0DH,ECX=i) gives component i's size
/// (EAX) and fixed offset (EBX) for i ≥ 2 (SDM vol. 1, §13.4.3 "Extended Region").
fn standard_size(mask: u64) -> u32 {
    let mut end = LEGACY_AND_HEADER;
    for i in (2..63).filter(|i| mask & (1 << i) != 0) {
        let c = cpuid(0xd, i);
        end = end.max(c.ebx + c.eax);
    }
    end.next_multiple_of(64)
}

/// The compacted-format area size for `mask`: components packed in order after the header,
/// each aligned to 64 bytes if CPUID.(EAX=0DH,ECX=i):ECX bit 1 says so (SDM vol. 1, §13.4.3).
fn compacted_size(mask: u64) -> u32 {
    let mut end = LEGACY_AND_HEADER;
    for i in (2..63).filter(|i| mask & (1 << i) != 0) {
        let c = cpuid(0xd, i);
        if c.ecx & (1 << 1) != 0 {
            end = end.next_multiple_of(64);
        }
        end += c.eax;
    }
    end.next_multiple_of(64)
}

/// The trampoline's code, placed at `at`; it reads the resolver's context from the word at
/// `context`. Encodings from the Intel SDM vol. 2 (instruction reference), AT&T operand order
/// in the comments as in LLVM's and glibc's sources.
fn trampoline_code(save: StateSave, at: u64, context: u64, resolver: u64) -> Result<Vec<u8>> {
    let mut c: Vec<u8> = Vec::with_capacity(CODE_CAPACITY as usize);
    // Frame: %rbp holds the entry %rsp; 8(%rbp) is the stub's id, 16(%rbp) the return address.
    c.push(0x55); //                                 push %rbp
    c.extend([0x48, 0x89, 0xe5]); //                 mov  %rsp, %rbp
    // The argument registers (PUSH r64: 50+rd, REX.B 41 for r8-r15).
    c.extend([0x57, 0x56, 0x52, 0x51]); //           push %rdi; push %rsi; push %rdx; push %rcx
    c.extend([0x41, 0x50, 0x41, 0x51]); //           push %r8;  push %r9
    c.push(0x50); //                                 push %rax
    c.extend([0x41, 0x52]); //                       push %r10           (now %rsp = %rbp - 64)
    // The save area, 64-byte aligned (XSAVE's requirement; FXSAVE needs 16), below them.
    c.extend([0x48, 0x81, 0xec]); //                 sub  $size, %rsp    (REX.W 81 /5 id)
    c.extend(save.area_size().to_le_bytes());
    c.extend([0x48, 0x83, 0xe4, 0xc0]); //           and  $-64, %rsp     (REX.W 83 /4 ib)
    match save {
        StateSave::Fxsave => c.extend([0x48, 0x0f, 0xae, 0x04, 0x24]), // fxsave64 (%rsp)   (REX.W 0F AE /0)
        StateSave::Xsave { mask, .. } | StateSave::Xsavec { mask, .. } => {
            // XRSTOR faults unless XCOMP_BV and the reserved header bytes are zero, and XSAVE
            // leaves XSTATE_BV bits outside its mask as they were: zero the 64-byte header at
            // offset 512 first (SDM vol. 1, §13.4.2), as glibc does.
            c.extend([0x31, 0xc0]); //               xor  %eax, %eax
            for k in 0..8u32 {
                c.extend([0x48, 0x89, 0x84, 0x24]); // mov %rax, 512+8k(%rsp) (REX.W 89 /r, SIB, disp32)
                c.extend((512 + 8 * k).to_le_bytes());
            }
            load_mask(&mut c, mask);
            match save {
                StateSave::Xsavec { .. } => c.extend([0x48, 0x0f, 0xc7, 0x24, 0x24]), // xsavec64 (%rsp) (REX.W 0F C7 /4)
                _ => c.extend([0x48, 0x0f, 0xae, 0x24, 0x24]), //                       xsave64 (%rsp)  (REX.W 0F AE /4)
            }
        }
    }
    // resolve(context, id), with %rsp 64-byte aligned at the call (psABI §3.2.2: 16 needed).
    c.extend([0x48, 0x8b, 0x75, 0x08]); //           mov  8(%rbp), %rsi  (the id)
    let next = at + c.len() as u64 + 7;
    c.extend([0x48, 0x8b, 0x3d]); //                 mov  context(%rip), %rdi (REX.W 8B /r, RIP+disp32)
    c.extend(rel32(context, next)?.to_le_bytes());
    c.extend([0x48, 0xb8]); //                       movabs $resolve, %rax (REX.W B8+rd io)
    c.extend(resolver.to_le_bytes());
    c.extend([0xff, 0xd0]); //                       call *%rax          (FF /2)
    c.extend([0x49, 0x89, 0xc3]); //                 mov  %rax, %r11     (REX.WB 89 /r)
    match save {
        StateSave::Fxsave => c.extend([0x48, 0x0f, 0xae, 0x0c, 0x24]), // fxrstor64 (%rsp) (REX.W 0F AE /1)
        StateSave::Xsave { mask, .. } | StateSave::Xsavec { mask, .. } => {
            load_mask(&mut c, mask);
            c.extend([0x48, 0x0f, 0xae, 0x2c, 0x24]); // xrstor64 (%rsp) (REX.W 0F AE /5; reads either format)
        }
    }
    c.extend([0x48, 0x8d, 0x65, 0xc0]); //           lea  -64(%rbp), %rsp (REX.W 8D /r, disp8)
    c.extend([0x41, 0x5a]); //                       pop  %r10           (POP r64: 58+rd)
    c.push(0x58); //                                 pop  %rax
    c.extend([0x41, 0x59, 0x41, 0x58]); //           pop  %r9; pop %r8
    c.extend([0x59, 0x5a, 0x5e, 0x5f]); //           pop  %rcx; pop %rdx; pop %rsi; pop %rdi
    c.push(0x5d); //                                 pop  %rbp
    c.extend([0x48, 0x83, 0xc4, 0x08]); //           add  $8, %rsp       (drop the id; REX.W 83 /0 ib)
    c.extend([0x41, 0xff, 0xe3]); //                 jmp  *%r11          (REX.B FF /4)
    debug_assert!(c.len() as u64 <= CODE_CAPACITY);
    Ok(c)
}

/// `mov $lo, %eax; mov $hi, %edx` (B8+rd id): XSAVE and XRSTOR take their component mask in
/// %edx:%eax.
fn load_mask(c: &mut Vec<u8>, mask: u64) {
    c.push(0xb8);
    c.extend((mask as u32).to_le_bytes());
    c.push(0xba);
    c.extend(((mask >> 32) as u32).to_le_bytes());
}

/// The trampoline and the word it reads its context from; owns their memory.
pub(super) struct Reentry {
    alloc: FinalizedAlloc,
    entry: TargetAddr,
    context: TargetAddr,
    save: StateSave,
}

impl Reentry {
    /// Writes a trampoline calling `resolver` into memory from `memory`; its context word is
    /// null until [`set_context`](Self::set_context).
    pub(super) fn new(memory: &dyn MemoryManager, save: StateSave, resolver: ResolverFn) -> Result<Reentry> {
        let request = AllocRequest::new(vec![
            SegmentRequest::new(Prot::RX, CODE_CAPACITY, 16),
            SegmentRequest::new(Prot::RW, 8, 8),
        ]);
        let mut alloc = memory.allocate(&request).map_err(Error::other)?;
        let (Some(entry), Some(context)) = (alloc.target(0), alloc.target(1)) else {
            return Err(Error::msg("lazy re-entry: the memory manager returned fewer segments than requested"));
        };
        let code = trampoline_code(save, entry.0, context.0, resolver as usize as u64)?;
        let working =
            alloc.working_mut(0).ok_or_else(|| Error::msg("lazy re-entry: the code segment has no working view"))?;
        working.fill(0xcc); // int3 after the code: never reached
        working[..code.len()].copy_from_slice(&code);
        let alloc = alloc.finalize_blocking(Vec::new()).map_err(Error::other)?;
        Ok(Reentry { alloc, entry, context, save })
    }

    /// Where stubs jump to.
    pub(super) fn entry(&self) -> u64 {
        self.entry.0
    }

    pub(super) fn state_save(&self) -> StateSave {
        self.save
    }

    /// Sets the pointer passed to the resolver. Call it before any stub can reach the
    /// trampoline.
    pub(super) fn set_context(&self, context: *const ()) {
        let _ = &self.alloc; // the word lives in this allocation
        // SAFETY: `context` is the 8-byte aligned word of the RW segment of `self.alloc`,
        // finalized (so writable at its target address) and alive as long as `self`; the
        // trampoline only reads it, with one aligned load.
        let word = unsafe { AtomicU64::from_ptr(self.context.0 as usize as *mut u64) };
        word.store(context as usize as u64, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    //! The trampoline under every state-save method this CPU has, driven by hand-written
    //! callers that load every argument register with known values and a target that stores
    //! them all back, with a resolver that clobbers everything it may in between.

    use std::sync::atomic::AtomicBool;

    use super::super::stubs::{LAZY_ENTRY_OFFSET, NewBatch, Slot};
    use super::*;

    /// What the callers load and the capture routine stores: rdi, rsi, rdx, rcx, r8, r9, rax,
    /// r10; ymm0-7 (xmm0-7 in the low halves for the SSE variant); the target's %rsp and the
    /// caller's %rsp before its call.
    #[repr(C, align(32))]
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    struct Regs {
        gpr: [u64; 8],
        vec: [[u64; 4]; 8],
        target_rsp: u64,
        caller_rsp: u64,
    }

    // The callers: (stub %rdi, input %rsi, output %rdx). The output pointer rides in %rbx,
    // which is callee-saved and so survives the trampoline and the resolver.
    std::arch::global_asm!(
        ".text",
        ".p2align 4",
        "orcjit_lazy_test_call_avx:",
        "push rbx",
        "push rbp",
        "sub rsp, 8",
        "mov rbx, rdx",
        "mov rbp, rdi",
        "mov [rbx + 328], rsp",
        "vmovdqu ymm0, [rsi + 64]",
        "vmovdqu ymm1, [rsi + 96]",
        "vmovdqu ymm2, [rsi + 128]",
        "vmovdqu ymm3, [rsi + 160]",
        "vmovdqu ymm4, [rsi + 192]",
        "vmovdqu ymm5, [rsi + 224]",
        "vmovdqu ymm6, [rsi + 256]",
        "vmovdqu ymm7, [rsi + 288]",
        "jmp 2f",
        ".p2align 4",
        "orcjit_lazy_test_call_sse:",
        "push rbx",
        "push rbp",
        "sub rsp, 8",
        "mov rbx, rdx",
        "mov rbp, rdi",
        "mov [rbx + 328], rsp",
        "movdqu xmm0, [rsi + 64]",
        "movdqu xmm1, [rsi + 96]",
        "movdqu xmm2, [rsi + 128]",
        "movdqu xmm3, [rsi + 160]",
        "movdqu xmm4, [rsi + 192]",
        "movdqu xmm5, [rsi + 224]",
        "movdqu xmm6, [rsi + 256]",
        "movdqu xmm7, [rsi + 288]",
        "2:",
        "mov rdi, [rsi]",
        "mov rdx, [rsi + 16]",
        "mov rcx, [rsi + 24]",
        "mov r8, [rsi + 32]",
        "mov r9, [rsi + 40]",
        "mov rax, [rsi + 48]",
        "mov r10, [rsi + 56]",
        "mov rsi, [rsi + 8]",
        "call rbp",
        "add rsp, 8",
        "pop rbp",
        "pop rbx",
        "ret",
        ".p2align 4",
        "orcjit_lazy_test_capture_avx:",
        "vmovdqu [rbx + 64], ymm0",
        "vmovdqu [rbx + 96], ymm1",
        "vmovdqu [rbx + 128], ymm2",
        "vmovdqu [rbx + 160], ymm3",
        "vmovdqu [rbx + 192], ymm4",
        "vmovdqu [rbx + 224], ymm5",
        "vmovdqu [rbx + 256], ymm6",
        "vmovdqu [rbx + 288], ymm7",
        "jmp 3f",
        ".p2align 4",
        "orcjit_lazy_test_capture_sse:",
        "movdqu [rbx + 64], xmm0",
        "movdqu [rbx + 96], xmm1",
        "movdqu [rbx + 128], xmm2",
        "movdqu [rbx + 160], xmm3",
        "movdqu [rbx + 192], xmm4",
        "movdqu [rbx + 224], xmm5",
        "movdqu [rbx + 256], xmm6",
        "movdqu [rbx + 288], xmm7",
        "3:",
        "mov [rbx], rdi",
        "mov [rbx + 8], rsi",
        "mov [rbx + 16], rdx",
        "mov [rbx + 24], rcx",
        "mov [rbx + 32], r8",
        "mov [rbx + 40], r9",
        "mov [rbx + 48], rax",
        "mov [rbx + 56], r10",
        "mov [rbx + 320], rsp",
        "ret",
    );

    unsafe extern "C" {
        fn orcjit_lazy_test_call_avx(stub: u64, input: *const Regs, output: *mut Regs);
        fn orcjit_lazy_test_call_sse(stub: u64, input: *const Regs, output: *mut Regs);
        fn orcjit_lazy_test_capture_avx();
        fn orcjit_lazy_test_capture_sse();
    }

    /// The resolver's view of a test.
    struct Probe {
        target: u64,
        id: AtomicU64,
        avx: bool,
        aligned: AtomicBool,
    }

    #[repr(align(16))]
    struct Aligned([u8; 16]);

    /// Records the id and the stack alignment, then clobbers every caller-saved register the
    /// trampoline must restore, upper vector halves included.
    unsafe extern "C" fn clobbering_resolver(context: *const (), id: u64) -> u64 {
        // SAFETY: the tests set the context to a `Probe` that outlives every call.
        let probe = unsafe { &*(context as *const Probe) };
        probe.id.store(id, Ordering::SeqCst);
        // A 16-aligned local is misplaced unless %rsp was 16-aligned at the call.
        let local = Aligned([0; 16]);
        let at = std::hint::black_box(&local).0.as_ptr() as usize;
        probe.aligned.store(at % 16 == 0, Ordering::SeqCst);
        // SAFETY: writes only registers the asm declares clobbered.
        unsafe {
            std::arch::asm!(
                "mov rdi, -1", "mov rsi, -1", "mov rdx, -1", "mov rcx, -1", "mov r8, -1", "mov r9, -1",
                "mov r10, -1", "mov r11, -1",
                "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2", "pcmpeqd xmm3, xmm3",
                "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5", "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7",
                out("rdi") _, out("rsi") _, out("rdx") _, out("rcx") _, out("r8") _, out("r9") _,
                out("r10") _, out("r11") _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            );
        }
        if probe.avx {
            // SAFETY: the test checked that AVX is available.
            unsafe { clobber_ymm() };
        }
        probe.target
    }

    /// Sets every bit of ymm0-7, upper halves included.
    #[target_feature(enable = "avx")]
    unsafe fn clobber_ymm() {
        // SAFETY: writes only the registers the asm declares clobbered.
        unsafe {
            std::arch::asm!(
                "vpcmpeqd ymm0, ymm0, ymm0", "vpcmpeqd ymm1, ymm1, ymm1", "vpcmpeqd ymm2, ymm2, ymm2",
                "vpcmpeqd ymm3, ymm3, ymm3", "vpcmpeqd ymm4, ymm4, ymm4", "vpcmpeqd ymm5, ymm5, ymm5",
                "vpcmpeqd ymm6, ymm6, ymm6", "vpcmpeqd ymm7, ymm7, ymm7",
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            );
        }
    }

    fn input() -> Regs {
        let mut r = Regs { gpr: [0; 8], vec: [[0; 4]; 8], target_rsp: 0, caller_rsp: 0 };
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = 0x1111_1111_1111_1111 * (i as u64 + 1);
        }
        for (i, v) in r.vec.iter_mut().enumerate() {
            for (j, lane) in v.iter_mut().enumerate() {
                *lane = 0x0101_0101_0101_0101u64.wrapping_mul((i * 4 + j + 1) as u64) ^ 0x8000_0000_0000_0000;
            }
        }
        r
    }

    #[test]
    fn every_state_save_method_preserves_every_argument_register() {
        let memory = jit_mem::default_manager(jit_mem::ManagerConfig::default()).unwrap();
        let avx = is_x86_feature_detected!("avx");
        for save in StateSave::available() {
            // FXSAVE belongs to CPUs without AVX: it keeps xmm only.
            let full_ymm = avx && save != StateSave::Fxsave;
            let capture: unsafe extern "C" fn() =
                if full_ymm { orcjit_lazy_test_capture_avx } else { orcjit_lazy_test_capture_sse };
            let probe = Box::new(Probe {
                target: capture as *const () as u64,
                id: AtomicU64::new(0),
                avx,
                aligned: AtomicBool::new(false),
            });
            let reentry = Reentry::new(&*memory, save, clobbering_resolver).unwrap();
            reentry.set_context(&*probe as *const Probe as *const ());
            let mut batch = NewBatch::allocate(&*memory, 4).unwrap();
            let (stubs, slots) = (batch.stubs(), batch.slots());
            batch.write(40, reentry.entry()).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            batch.finalize(Box::new(move |r| tx.send(r).unwrap()));
            let _finalized = rx.recv().unwrap().unwrap();
            let stub = stubs + 2 * super::super::stubs::STUB_SIZE;
            let slot = Slot(slots + 2 * super::super::stubs::SLOT_SIZE);
            // SAFETY: the batch is finalized and alive (`_finalized`).
            assert_eq!(unsafe { slot.load() }, stub + LAZY_ENTRY_OFFSET, "{save:?}: a slot starts at its lazy entry");

            let sent = input();
            let mut got = Regs { gpr: [0; 8], vec: [[0; 4]; 8], target_rsp: 0, caller_rsp: 0 };
            // SAFETY: the stub leads, through the trampoline, to the capture routine, which
            // writes only `got`; the callers follow the C calling convention outwardly.
            unsafe {
                if full_ymm {
                    orcjit_lazy_test_call_avx(stub, &sent, &mut got);
                } else {
                    orcjit_lazy_test_call_sse(stub, &sent, &mut got);
                }
            }
            assert_eq!(probe.id.load(Ordering::SeqCst), 42, "{save:?}: the resolver hears the stub's id");
            assert!(probe.aligned.load(Ordering::SeqCst), "{save:?}: %rsp is 16-byte aligned in the resolver");
            assert_eq!(got.gpr, sent.gpr, "{save:?}: integer argument registers, %rax and %r10");
            for i in 0..8 {
                let lanes = if full_ymm { 4 } else { 2 };
                assert_eq!(got.vec[i][..lanes], sent.vec[i][..lanes], "{save:?}: vector register {i}");
            }
            assert_eq!(got.target_rsp, got.caller_rsp - 8, "{save:?}: the target sees the caller's frame");
        }
    }

    #[test]
    fn the_save_area_covers_the_legacy_region_and_header() {
        for save in StateSave::available() {
            assert!(save.area_size() >= 512, "{save:?}");
            if let StateSave::Xsave { mask, size } | StateSave::Xsavec { mask, size } = save {
                assert!(size >= LEGACY_AND_HEADER && size % 64 == 0, "{save:?}");
                if mask & 0b100 != 0 {
                    assert!(size >= LEGACY_AND_HEADER + 256, "{save:?}: AVX state is 256 bytes");
                }
            }
        }
    }
}
