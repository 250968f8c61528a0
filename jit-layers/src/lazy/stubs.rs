//! Stubs and their slots in jit-mem memory: the encoding of one stub, batches of stubs
//! allocated together, and the atomic slot each stub jumps through.
//!
//! A stub is an x86-64 psABI lazy PLT entry (psABI §5.2 "Dynamic Linking", "Procedure Linkage
//! Table", figure "Procedure Linkage Table (small and medium models)", entry `.PLT1`), 16 bytes:
//!
//! ```text
//! stub+0:   jmp  *slot(%rip)     FF 25 rel32    the call-through: one indirect jump
//! stub+6:   push $id             68 imm32       the lazy entry, where the slot first points
//! stub+11:  jmp  reentry         E9 rel32       the re-entry trampoline (`.PLT0` in the psABI)
//! ```
//!
//! LLVM's `OrcX86_64_Base::writeIndirectStubsBlock` (`llvm/lib/ExecutionEngine/Orc/
//! OrcABISupport.cpp`) writes the same first instruction and pads it to 8 bytes; here the
//! padding is the lazy entry itself, as in a PLT, so a stub needs no separate trampoline.
//!
//! A batch is one jit-mem allocation: the stubs in an RX segment, their slots (8-byte aligned
//! words) in an RW segment. Every manager keeps all its targets in one reservation of at most
//! 2 GiB, so the rel32 fields always reach (and are checked anyway).

use std::sync::atomic::{AtomicU64, Ordering};

use jit_core::{Error, Result};
use jit_mem::{AllocRequest, FinalizeAction, InFlightAlloc, MemoryManager, OnFinalized, Prot, SegmentRequest};

/// Bytes per stub.
pub(super) const STUB_SIZE: u64 = 16;
/// Bytes per slot.
pub(super) const SLOT_SIZE: u64 = 8;
/// Where a stub's lazy entry (`push $id; jmp reentry`) starts.
pub(super) const LAZY_ENTRY_OFFSET: u64 = 6;
/// Stubs allocated at once when the pool runs dry: one page of code, half a page of slots.
pub(super) const BATCH_STUBS: u32 = 256;
/// `push imm32` sign-extends its operand: ids stay non-negative.
pub(super) const MAX_ID: u32 = i32::MAX as u32;

/// The 16 bytes of the stub at `stub` that jumps through `slot`, pushing `id` on its lazy path.
pub(super) fn encode_stub(stub: u64, slot: u64, id: u32, reentry: u64) -> Result<[u8; 16]> {
    if id > MAX_ID {
        return Err(Error::msg(format!("lazy stub id {id} does not fit a push imm32")));
    }
    let mut bytes = [0u8; 16];
    // jmp *disp32(%rip): FF /4 with ModRM 0x25 (mod 00, rm 101 = RIP + disp32), Intel SDM vol.
    // 2A "JMP"; the displacement counts from the end of the 6-byte instruction.
    bytes[0..2].copy_from_slice(&[0xff, 0x25]);
    bytes[2..6].copy_from_slice(&rel32(slot, stub + LAZY_ENTRY_OFFSET)?.to_le_bytes());
    // push imm32: 68 id (SDM vol. 2B "PUSH": sign-extended to 64 bits on the stack).
    bytes[6] = 0x68;
    bytes[7..11].copy_from_slice(&id.to_le_bytes());
    // jmp rel32: E9 cd (SDM vol. 2A "JMP"), counted from the end of the stub.
    bytes[11] = 0xe9;
    bytes[12..16].copy_from_slice(&rel32(reentry, stub + STUB_SIZE)?.to_le_bytes());
    Ok(bytes)
}

/// The rel32 from `next` (the address after the instruction) to `target`.
pub(super) fn rel32(target: u64, next: u64) -> Result<i32> {
    i32::try_from(target.wrapping_sub(next) as i64).map_err(|_| {
        Error::msg(format!(
            "lazy stubs: {target:#x} is out of rel32 reach of {next:#x} (memory manager reservation too large?)"
        ))
    })
}

/// A batch of stubs being written, not yet runnable.
pub(super) struct NewBatch {
    alloc: InFlightAlloc,
    stubs: u64,
    slots: u64,
    count: u32,
}

impl NewBatch {
    /// Allocates code and slots for `count` stubs.
    pub(super) fn allocate(memory: &dyn MemoryManager, count: u32) -> Result<NewBatch> {
        let n = u64::from(count);
        let request = AllocRequest::new(vec![
            SegmentRequest::new(Prot::RX, n * STUB_SIZE, STUB_SIZE),
            SegmentRequest::new(Prot::RW, n * SLOT_SIZE, SLOT_SIZE),
        ]);
        let alloc = memory.allocate(&request).map_err(Error::other)?;
        let (Some(stubs), Some(slots)) = (alloc.target(0), alloc.target(1)) else {
            return Err(Error::msg("lazy stubs: the memory manager returned fewer segments than requested"));
        };
        Ok(NewBatch { alloc, stubs: stubs.0, slots: slots.0, count })
    }

    /// Where the stubs start.
    pub(super) fn stubs(&self) -> u64 {
        self.stubs
    }

    /// Where the slots start.
    pub(super) fn slots(&self) -> u64 {
        self.slots
    }

    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Writes every stub (stub `i` pushes `first_id + i`) and points every slot at its stub's
    /// lazy entry.
    pub(super) fn write(&mut self, first_id: u32, reentry: u64) -> Result<()> {
        let (stubs, slots) = (self.stubs, self.slots);
        let mut code = Vec::with_capacity(self.count as usize * STUB_SIZE as usize);
        let mut words = Vec::with_capacity(self.count as usize * SLOT_SIZE as usize);
        for i in 0..u64::from(self.count) {
            let (stub, slot) = (stubs + i * STUB_SIZE, slots + i * SLOT_SIZE);
            code.extend_from_slice(&encode_stub(stub, slot, first_id + i as u32, reentry)?);
            words.extend_from_slice(&(stub + LAZY_ENTRY_OFFSET).to_le_bytes());
        }
        let missing = || Error::msg("lazy stubs: a batch segment has no working view");
        self.alloc.working_mut(0).ok_or_else(missing)?.copy_from_slice(&code);
        self.alloc.working_mut(1).ok_or_else(missing)?.copy_from_slice(&words);
        Ok(())
    }

    /// Makes the batch runnable; `on_done` may run before this returns or later, on another
    /// thread (see [`InFlightAlloc::finalize`]).
    pub(super) fn finalize(self, on_done: OnFinalized) {
        self.alloc.finalize(Vec::<FinalizeAction>::new(), on_done);
    }
}

/// The 8-byte word a stub jumps through, by its target address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(pub(super) u64);

impl Slot {
    /// # Safety
    /// The slot's batch must be finalized and stay allocated while the reference lives.
    unsafe fn word<'a>(self) -> &'a AtomicU64 {
        // SAFETY: slots are 8-byte aligned words of an RW segment (the batch asks for that
        // alignment), writable at their target address once finalized; the caller keeps the
        // allocation alive. Every access to a slot is atomic (the stubs' `jmp` reads the whole
        // aligned word in one access), so there is no data race.
        unsafe { AtomicU64::from_ptr(self.0 as usize as *mut u64) }
    }

    /// The address the stub jumps to now.
    ///
    /// # Safety
    /// As [`Slot::word`].
    pub(super) unsafe fn load(self) -> u64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.word() }.load(Ordering::Acquire)
    }

    /// Points the stub at `target`. Release: whoever jumps through the slot afterwards sees
    /// everything written before (x86-64 loads are acquire loads, so the stub's `jmp` pairs
    /// with it).
    ///
    /// # Safety
    /// As [`Slot::word`].
    pub(super) unsafe fn store(self, target: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { self.word() }.store(target, Ordering::Release);
    }

    /// Points the stub at `target` if it still points at `expected`; returns where it points
    /// afterwards.
    ///
    /// # Safety
    /// As [`Slot::word`].
    pub(super) unsafe fn replace_if(self, expected: u64, target: u64) -> u64 {
        // SAFETY: forwarded to the caller.
        match unsafe { self.word() }.compare_exchange(expected, target, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => target,
            Err(now) => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_is_a_psabi_lazy_plt_entry() {
        let (stub, slot, reentry) = (0x1000_0000u64, 0x1000_2000u64, 0x0fff_f000u64);
        let bytes = encode_stub(stub, slot, 7, reentry).unwrap();
        assert_eq!(&bytes[0..2], &[0xff, 0x25]);
        assert_eq!(i32::from_le_bytes(bytes[2..6].try_into().unwrap()), 0x2000 - 6);
        assert_eq!(&bytes[6..11], &[0x68, 7, 0, 0, 0]);
        assert_eq!(bytes[11], 0xe9);
        assert_eq!(i32::from_le_bytes(bytes[12..16].try_into().unwrap()), -0x1000 - 16);
    }

    #[test]
    fn out_of_reach_targets_and_ids_are_errors() {
        assert!(encode_stub(0, 1 << 32, 0, 0).unwrap_err().to_string().contains("out of rel32 reach"));
        assert!(encode_stub(0, 0, MAX_ID + 1, 0).is_err());
    }
}
