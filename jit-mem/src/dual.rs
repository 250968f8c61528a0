//! The dual-mapped slab manager, the default on Linux: slabs backed by one `memfd`, each code
//! or read-only slab mapped twice, an RW working view where the linker writes and an R/RX
//! target view where the code runs. Finalize changes no protection, so it never disturbs
//! another allocation sharing a slab or page, and no mapping is ever writable and executable.
//!
//! Layout: the memfd is as large as the reservation and sparse; reservation offset `o` is file
//! offset `o`, mapped at `target_base + o` and, for R/RX slabs, at `working_base + o` in a
//! mirror reservation. Adjacent slabs of one protection are therefore contiguous in both the
//! address space and the file, and the kernel merges their mappings.
//!
//! RW slabs need no second view (they are written where they run) and are not in the file:
//! they are private anonymous memory, so that a forked child gets a copy-on-write copy of
//! JIT'd variables, as it does of the host's own, instead of sharing them with its parent.
//!
//! The working view of a slab stays mapped while the slab lives (unmapping it per allocation
//! would cost the syscalls this manager exists to avoid); its addresses are only handed out
//! through in-flight allocations, never after finalize.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::alloc::OnDone;
use crate::slab::{SlabBacking, Slabs, Writes};
use crate::sys::{Memfd, Reservation, map_anonymous, map_shared};
use crate::{
    AllocRequest, FinalizedAlloc, InFlightAlloc, MAX_ALIGN, ManagerConfig, ManagerId, ManagerKind, MemError, MemStats,
    MemoryManager, Prot, RawFinalizedAlloc, TargetAddr,
};

pub(crate) struct DualBacking {
    // Dropped first: the working views go before the file they map.
    working: Reservation,
    file: Memfd,
}

impl SlabBacking for DualBacking {
    fn writes(&self) -> Writes {
        Writes::View
    }

    unsafe fn map_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        let (at, n) = (offset as usize, len as usize);
        if prot == Prot::RW {
            // SAFETY: the caller hands over an unused range of the target reservation.
            return unsafe { map_anonymous(base + at, n, Some(Prot::RW)) };
        }
        // SAFETY: the caller hands over an unused range of the target reservation.
        unsafe { map_shared(base + at, n, prot, &self.file, offset)? };
        let mirror = self.working.base() + at;
        // SAFETY: the mirror range in the working reservation is unused exactly when the
        // target range is.
        let mapped = unsafe { map_shared(mirror, n, Prot::RW, &self.file, offset) };
        if let Err(e) = mapped {
            // SAFETY: undoing the mapping made just above, which nobody uses yet.
            let _ = unsafe { map_anonymous(base + at, n, None) };
            return Err(e);
        }
        Ok(())
    }

    unsafe fn unmap_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        let (at, n) = (offset as usize, len as usize);
        // SAFETY: the caller guarantees nothing lives in the slab.
        unsafe { map_anonymous(base + at, n, None)? };
        if prot == Prot::RW {
            return Ok(());
        }
        // SAFETY: as above, for the working view.
        unsafe { map_anonymous(self.working.base() + at, n, None)? };
        self.file.punch_hole(offset, len)
    }

    unsafe fn discard_pages(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        if prot == Prot::RW {
            // SAFETY: the caller guarantees nothing lives in the slab: fresh zero pages replace
            // its pages, with the protection it has.
            return unsafe { map_anonymous(base + offset as usize, len as usize, Some(Prot::RW)) };
        }
        self.file.punch_hole(offset, len)
    }

    fn working(&self, base: usize, offset: u64, prot: Prot) -> *mut u8 {
        let at = if prot == Prot::RW { base } else { self.working.base() };
        (at + offset as usize) as *mut u8
    }

    fn other_ranges(&self) -> Vec<Range<u64>> {
        let base = self.working.base() as u64;
        std::iter::once(base..base + self.working.len() as u64).collect()
    }
}

/// Creates the memfd and the working reservation, and proves an executable view of the file
/// is allowed here (it is not on `noexec` shm mounts or under some SELinux policies).
fn dual_backing(id: ManagerId, target: &Reservation) -> Result<DualBacking, MemError> {
    let refused = |op, source| MemError::DualMappingRefused { manager: id, op, source };
    let file = Memfd::create(c"orcjit-jit-mem", target.len() as u64).map_err(|(op, e)| refused(op, e))?;
    let working = Reservation::new(target.len(), MAX_ALIGN as usize).map_err(|e| refused("reserve working view", e))?;
    let page = crate::sys::page_size();
    // SAFETY: the first page of the fresh target reservation is unused; the probe maps it and
    // puts the reservation back.
    unsafe {
        map_shared(target.base(), page, Prot::RX, &file, 0).map_err(|e| refused("mmap executable view", e))?;
        map_anonymous(target.base(), page, None).map_err(|e| refused("restore reservation after probe", e))?;
    }
    Ok(DualBacking { working, file })
}

/// Dual-mapped slab manager: see the module documentation.
pub struct DualMappedManager {
    inner: Arc<Slabs<DualBacking>>,
}

impl DualMappedManager {
    /// A manager with its own reservation. Fails with [`MemError::DualMappingRefused`] where
    /// memfd or an executable shared mapping is not allowed; [`crate::default_manager`] then
    /// falls back to the mprotect slab manager.
    pub fn new(config: ManagerConfig) -> Result<DualMappedManager, MemError> {
        let id = ManagerId::next(ManagerKind::DualMapped);
        let inner = Slabs::new(id, &config, |target| dual_backing(id, target))?;
        Ok(DualMappedManager { inner: Arc::new(inner) })
    }
}

impl MemoryManager for DualMappedManager {
    fn id(&self) -> ManagerId {
        self.inner.id()
    }
    fn allocate(&self, request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        self.inner.allocate(request)
    }
    fn deallocate(&self, allocs: Vec<FinalizedAlloc>, on_done: OnDone) {
        on_done(crate::alloc::deallocate_all(&*self.inner, allocs))
    }
    fn adopt_raw(&self, raw: RawFinalizedAlloc) -> Result<FinalizedAlloc, MemError> {
        self.inner.adopt(raw)
    }
    fn stats(&self) -> MemStats {
        self.inner.stats()
    }
    fn reservation(&self) -> Range<TargetAddr> {
        self.inner.range()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SegmentRequest, maps};

    #[test]
    fn code_is_written_through_a_separate_rw_view_of_the_same_memfd_pages() {
        let mem = DualMappedManager::new(ManagerConfig::default()).unwrap();
        let req = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 64, 16)]);
        let mut alloc = mem.allocate(&req).unwrap();
        let target = alloc.target(0).unwrap().0;
        let working = alloc.working(0).unwrap().as_ptr() as u64;
        assert_ne!(target, working, "two views");
        alloc.working_mut(0).unwrap()[0] = 0xC3;
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: the target view of a live allocation is readable.
        let seen = unsafe { *(target as *const u8) };
        assert_eq!(seen, 0xC3, "the target view shows the write");
        let find = |addr: u64| maps::process_mappings().unwrap().into_iter().find(|m| m.range.contains(&addr)).unwrap();
        let (run, write) = (find(target), find(working));
        assert!(run.exec && !run.write && run.shared && run.name.contains("orcjit-jit-mem"), "{run:?}");
        assert!(write.write && !write.exec && write.shared && write.name.contains("orcjit-jit-mem"), "{write:?}");
        drop(done);
    }

    #[test]
    fn a_forked_child_writes_its_own_copy_of_rw_data() {
        let mem = DualMappedManager::new(ManagerConfig::default()).unwrap();
        let req = AllocRequest::new(vec![SegmentRequest::new(Prot::RW, 8, 8)]);
        let mut alloc = mem.allocate(&req).unwrap();
        alloc.working_mut(0).unwrap()[0] = 1;
        let target = alloc.target(0).unwrap().0 as usize as *mut u8;
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        let data = maps::process_mappings().unwrap().into_iter().find(|m| m.range.contains(&(target as u64))).unwrap();
        assert!(data.write && !data.shared, "{data:?}");
        // SAFETY: the child only writes a byte of a live RW allocation and leaves with _exit
        // (async-signal-safe), touching nothing another thread of the harness may hold.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                target.write_volatile(42);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child just made.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // SAFETY: the target of a live RW allocation is readable.
        assert_eq!(unsafe { target.read_volatile() }, 1, "the parent's copy is its own");
        drop(done);
    }

    #[test]
    fn mappings_stay_few_however_many_objects_are_packed() {
        let mem = DualMappedManager::new(ManagerConfig::default()).unwrap();
        let req = AllocRequest::new(vec![
            SegmentRequest::new(Prot::RX, 256, 16),
            SegmentRequest::new(Prot::R, 64, 8),
            SegmentRequest::new(Prot::RW, 32, 8),
        ]);
        let held: Vec<_> =
            (0..20_000).map(|_| mem.allocate(&req).unwrap().finalize_blocking(Vec::new()).unwrap()).collect();
        let stats = mem.stats();
        assert!(stats.mappings < 64, "{stats:?}");
        assert!(stats.committed * 4 <= stats.in_use * 5, "{stats:?}");
        drop(held);
        assert_eq!(mem.stats().committed, 0, "every slab's pages were given back");
    }
}
