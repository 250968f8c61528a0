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
//!
//! A forked child would share the memfd with its parent: both would place new code in the
//! same free space, and reuse or punch out space of code the other still runs. So in the
//! child (a `pthread_atfork` handler) every manager moves its R/RX slabs to a new memfd of
//! the child's own, copying the bytes each slab may hold. What is left: code the parent frees
//! and overwrites in the instant between the fork and that copy reaches the child overwritten.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Once, Weak};

use parking_lot::{Mutex, RwLock};

use crate::alloc::OnDone;
use crate::slab::{SlabBacking, Slabs, Writes};
use crate::sys::{Memfd, Reservation, map_anonymous, map_shared, remove_pages};
use crate::{
    AllocRequest, FinalizedAlloc, InFlightAlloc, MAX_ALIGN, ManagerConfig, ManagerId, ManagerKind, MemError, MemStats,
    MemoryManager, Prot, RawFinalizedAlloc, TargetAddr,
};

pub(crate) struct DualBacking {
    // Dropped first: the working views go before the file they map.
    working: Reservation,
    /// Replaced in a forked child (see the module documentation). Used under the slab
    /// state's lock, so never contended.
    file: RwLock<Memfd>,
}

impl DualBacking {
    /// The file new slabs map: the memfd, or, if the program closed its descriptor (or put
    /// another file under its number), a new one. Slabs mapped before keep their pages: a
    /// mapping holds its file, and their pages are given back through the working view.
    fn intact_file(&self) -> io::Result<parking_lot::RwLockReadGuard<'_, Memfd>> {
        {
            let file = self.file.read();
            if file.is_intact() {
                return Ok(file);
            }
        }
        let fresh = Memfd::create(c"orcjit-jit-mem", self.working.len() as u64).map_err(|(_, e)| e)?;
        *self.file.write() = fresh;
        Ok(self.file.read())
    }

    /// In a forked child: moves the R/RX `slabs` (`(prot, offset, len, high)`, as
    /// [`Slabs::try_with_code_slabs`] gives them) to a new memfd, copying each slab's first
    /// `high` bytes, and maps it where the old one was, in both views.
    ///
    /// # Safety
    /// `slabs` are all the R/RX slabs of the reservation at `base`, unchanged during the call,
    /// and no other thread runs (a forked child, in its `pthread_atfork` handler).
    unsafe fn move_to_own_file(&self, base: usize, slabs: &[(Prot, u64, u64, u64)]) -> io::Result<()> {
        let own = Memfd::create(c"orcjit-jit-mem", self.working.len() as u64).map_err(|(_, e)| e)?;
        for &(_, offset, _, high) in slabs {
            // SAFETY: the target view of a slab is mapped readable (R or RX) for its length,
            // of which `high` is a prefix.
            let bytes = unsafe { std::slice::from_raw_parts((base + offset as usize) as *const u8, high as usize) };
            own.write_at(bytes, offset)?;
        }
        for &(prot, offset, len, _) in slabs {
            let (at, n) = (offset as usize, len as usize);
            // SAFETY: replacing the slab's two views with the same bytes in the new file;
            // nothing runs meanwhile (the caller's contract).
            unsafe {
                map_shared(base + at, n, prot, &own, offset)?;
                map_shared(self.working.base() + at, n, Prot::RW, &own, offset)?;
            }
        }
        *self.file.write() = own;
        Ok(())
    }
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
        let mirror = self.working.base() + at;
        // A second try if the descriptor changed under the mapping (the program closed it
        // and opened a file of its own under its number in between).
        for _ in 0..2 {
            let file = self.intact_file()?;
            // SAFETY: the caller hands over an unused range of the target reservation; the
            // mirror range in the working reservation is unused exactly when the target is.
            let mapped = unsafe {
                map_shared(base + at, n, prot, &file, offset)
                    .and_then(|()| map_shared(mirror, n, Prot::RW, &file, offset))
            };
            match mapped {
                Ok(()) if file.is_intact() => return Ok(()),
                Ok(()) => {}
                Err(e) if file.is_intact() => {
                    // SAFETY: undoing what was mapped above, which nobody uses yet.
                    let _ = unsafe { map_anonymous(base + at, n, None) };
                    return Err(e);
                }
                Err(_) => {}
            }
            // SAFETY: as above.
            unsafe {
                let _ = map_anonymous(base + at, n, None);
                let _ = map_anonymous(mirror, n, None);
            }
        }
        Err(io::Error::other("the JIT's memory file descriptor keeps being replaced"))
    }

    unsafe fn unmap_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        let (at, n) = (offset as usize, len as usize);
        if prot != Prot::RW {
            // SAFETY: the caller guarantees nothing lives in the slab; its working view is a
            // shared writable mapping of its pages.
            unsafe { remove_pages(self.working.base() + at, n)? };
            // SAFETY: as above; the working view goes back to the reservation.
            unsafe { map_anonymous(self.working.base() + at, n, None)? };
        }
        // SAFETY: the caller guarantees nothing lives in the slab.
        unsafe { map_anonymous(base + at, n, None) }
    }

    unsafe fn discard_pages(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        let (at, n) = (offset as usize, len as usize);
        if prot == Prot::RW {
            // SAFETY: the caller guarantees nothing lives in the slab: fresh zero pages replace
            // its pages, with the protection it has.
            return unsafe { map_anonymous(base + at, n, Some(Prot::RW)) };
        }
        // SAFETY: the caller guarantees nothing lives in the slab; its working view is a
        // shared writable mapping of its pages.
        unsafe { remove_pages(self.working.base() + at, n) }
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
    // The working view is never executed, so it may lie anywhere: out of reach of libc,
    // whose surroundings are kept for the targets of near-libc managers.
    let working = match crate::Placement::near_libc() {
        crate::Placement::Near(libc) => {
            Reservation::new_away_from(target.len(), MAX_ALIGN as usize, libc, crate::NEAR_REACH)
        }
        _ => Reservation::new(target.len(), MAX_ALIGN as usize),
    }
    .map_err(|e| refused("reserve working view", e))?;
    let page = crate::sys::page_size();
    // SAFETY: the first page of the fresh target reservation is unused; the probe maps it and
    // puts the reservation back.
    unsafe {
        map_shared(target.base(), page, Prot::RX, &file, 0).map_err(|e| refused("mmap executable view", e))?;
        map_anonymous(target.base(), page, None).map_err(|e| refused("restore reservation after probe", e))?;
    }
    Ok(DualBacking { working, file: RwLock::new(file) })
}

/// Every dual-mapped manager of the process, for the fork handler.
static MANAGERS: Mutex<Vec<Weak<Slabs<DualBacking>>>> = Mutex::new(Vec::new());

fn register_for_fork(slabs: &Arc<Slabs<DualBacking>>) {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // SAFETY: the child handler is an `extern "C"` function that never unwinds.
        let ret = unsafe { libc::pthread_atfork(None, None, Some(own_files_in_child)) };
        if ret != 0 {
            tracing::warn!(target: "orcjit", "pthread_atfork failed ({ret}): a forked child would share JIT'd code pages with its parent");
        }
    });
    let mut managers = MANAGERS.lock();
    managers.retain(|m| m.strong_count() > 0);
    managers.push(Arc::downgrade(slabs));
}

/// In a forked child: every manager moves to a memfd of its own. A manager whose state a
/// vanished thread held at the fork, or that cannot make the new file, keeps sharing its
/// parent's (as before this handler existed) and says so.
extern "C" fn own_files_in_child() {
    let Some(managers) = MANAGERS.try_lock() else { return };
    for slabs in managers.iter().filter_map(Weak::upgrade) {
        let base = slabs.base();
        // SAFETY: the slabs are all of this manager's R/RX slabs, fixed while the state is
        // locked, and the child runs no other thread yet.
        let moved = slabs.try_with_code_slabs(|code| unsafe { slabs.backing().move_to_own_file(base, code) });
        if !matches!(moved, Some(Ok(()))) {
            tracing::warn!(target: "orcjit", "{}: a forked child keeps sharing JIT'd code pages with its parent ({moved:?})", slabs.id());
        }
    }
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
        let inner = Arc::new(Slabs::new(id, &config, |target| dual_backing(id, target))?);
        register_for_fork(&inner);
        Ok(DualMappedManager { inner })
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
    fn a_program_that_reuses_the_memfd_s_descriptor_number_keeps_its_file() {
        let config = ManagerConfig { slab: 64 << 10, ..ManagerConfig::default() };
        let mem = DualMappedManager::new(config).unwrap();
        let small = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 64, 16)]);
        let first = mem.allocate(&small).unwrap().finalize_blocking(Vec::new()).unwrap();
        let fd = mem.inner.backing().file.read().raw_fd();
        let scratch = crate::sys::replace_descriptor_with_scratch_file(fd, 4 << 20);
        // Bigger than a slab: a new slab, mapped from a file, which must not be the program's.
        let big = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 256 << 10, 16)]);
        let mut alloc = mem.allocate(&big).unwrap();
        // The whole segment is written: nops, then `mov eax, 42; ret` at its end.
        let bytes = alloc.working_mut(0).unwrap();
        let end = bytes.len();
        bytes.fill(0x90);
        bytes[end - 6..].copy_from_slice(&[0xB8, 42, 0, 0, 0, 0xC3]);
        let code = alloc.target(0).unwrap();
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: finalized code of signature fn() -> u32: nops, then mov eax, 42; ret.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(code.0 as usize) };
        assert_eq!(f(), 42);
        assert!(crate::sys::all_zero(&scratch), "JIT'd code landed in the program's file");
        drop((first, done));
        assert!(crate::sys::all_zero(&scratch), "freeing punched the program's file");
        // SAFETY: the descriptor number holds the scratch file's duplicate, which is ours.
        unsafe { libc::close(fd) };
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
