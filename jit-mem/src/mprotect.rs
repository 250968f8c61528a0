//! The mprotect slab manager, for systems that forbid dual mapping: slabs of private memory
//! written in place, whose code and read-only pages are sealed with `mprotect` once every
//! allocation touching them is finalized (see the sealing rules in `slab.rs`).
//!
//! Trade-off against the dual-mapped manager: a finalize may complete later, on the thread
//! that finalizes (or abandons) the last in-flight allocation sharing one of its pages, so an
//! allocation held in flight delays its page neighbours; and a finalize closes the partly used
//! pages it touches, so when allocations are finalized one at a time each one takes a fresh
//! code page and a fresh read-only page. Packing pays off when many links are in flight at
//! once; RW data is packed either way. Nothing ever waits on a lock while another finalize
//! runs, and no page is writable and executable at once.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::alloc::OnDone;
use crate::slab::{SlabBacking, Slabs};
use crate::sys::map_anonymous;
use crate::{
    AllocRequest, FinalizedAlloc, InFlightAlloc, ManagerConfig, ManagerId, ManagerKind, MemError, MemStats,
    MemoryManager, Prot, RawFinalizedAlloc, TargetAddr,
};

pub(crate) struct MprotectBacking;

impl SlabBacking for MprotectBacking {
    const SEALS: bool = true;

    unsafe fn map_slab(&self, base: usize, offset: u64, len: u64, _prot: Prot) -> io::Result<()> {
        // SAFETY: the caller hands over an unused range of the reservation.
        unsafe { map_anonymous(base + offset as usize, len as usize, Some(Prot::RW)) }
    }

    unsafe fn unmap_slab(&self, base: usize, offset: u64, len: u64, _prot: Prot) -> io::Result<()> {
        // SAFETY: the caller guarantees nothing lives in the slab.
        unsafe { map_anonymous(base + offset as usize, len as usize, None) }
    }

    unsafe fn discard_pages(&self, base: usize, offset: u64, len: u64, _prot: Prot) -> io::Result<()> {
        // SAFETY: the caller guarantees the slab is empty; MADV_DONTNEED on private anonymous
        // memory drops its pages, which then read as zero.
        let ret =
            unsafe { libc::madvise((base + offset as usize) as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn working(&self, base: usize, offset: u64, _prot: Prot) -> *mut u8 {
        (base + offset as usize) as *mut u8
    }

    fn other_ranges(&self) -> Vec<Range<u64>> {
        Vec::new()
    }
}

/// mprotect slab manager: see the module documentation.
pub struct MprotectSlabManager {
    inner: Arc<Slabs<MprotectBacking>>,
}

impl MprotectSlabManager {
    /// A manager with its own reservation.
    pub fn new(config: ManagerConfig) -> Result<MprotectSlabManager, MemError> {
        let id = ManagerId::next(ManagerKind::MprotectSlab);
        let inner = Slabs::new(id, &config, |_| Ok(MprotectBacking))?;
        Ok(MprotectSlabManager { inner: Arc::new(inner) })
    }
}

impl MemoryManager for MprotectSlabManager {
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
