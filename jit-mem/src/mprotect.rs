//! The mprotect slab manager, for systems that forbid dual mapping: slabs of private memory
//! whose code and read-only pages are never writable and executable at once. Two ways to get
//! the linker's bytes into them ([`MprotectWrites`]):
//!
//! - **Through `/proc/self/mem`** (the default where the kernel allows it): code and
//!   read-only slabs are mapped R/RX from the start and never change protection. The linker
//!   writes each such segment into a private zeroed buffer, and finalize copies it into the
//!   pages through `/proc/self/mem` (see `procmem.rs`). Allocations pack as tightly as the
//!   dual-mapped manager's, a finalize never waits for anyone, and perf and gdb see ordinary
//!   anonymous memory. The cost is one copy of the code and a `pwrite` per segment.
//! - **In place** (the fallback): pages start writable and are sealed with `mprotect` once
//!   every allocation touching them is finalized (the sealing rules in `slab.rs`). A finalize
//!   may then complete later, on the thread that finalizes (or abandons) the last in-flight
//!   allocation sharing one of its pages, so an allocation held in flight delays its page
//!   neighbours; and a finalize closes the partly used pages it touches, so when allocations
//!   are finalized one at a time each one takes a fresh code page and a fresh read-only page.
//!   Packing pays off only when many links are in flight at once.
//!
//! RW data is packed and written in place either way. Nothing ever waits on a lock while
//! another finalize runs.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::alloc::OnDone;
use crate::procmem::ProcMem;
use crate::slab::{SlabBacking, Slabs, Writes};
use crate::sys::map_anonymous;
use crate::{
    AllocRequest, FinalizedAlloc, InFlightAlloc, ManagerConfig, ManagerId, ManagerKind, MemError, MemStats,
    MemoryManager, Prot, RawFinalizedAlloc, TargetAddr,
};

/// How an [`MprotectSlabManager`] gets the linker's bytes into code and read-only pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MprotectWrites {
    /// Staged in a private buffer and copied at finalize through `/proc/self/mem` into pages
    /// that are R/RX from the start.
    ProcSelfMem,
    /// Written in place; pages are sealed once every allocation touching them is finalized.
    InPlace,
}

pub(crate) struct MprotectBacking {
    /// Present when writing through `/proc/self/mem`.
    proc_mem: Option<ProcMem>,
}

impl SlabBacking for MprotectBacking {
    fn writes(&self) -> Writes {
        if self.proc_mem.is_some() { Writes::Staged } else { Writes::Sealed }
    }

    fn publish(&self, target: usize, bytes: &[u8]) -> io::Result<()> {
        match &self.proc_mem {
            Some(mem) => mem.write(target, bytes),
            None => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    unsafe fn map_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()> {
        // Staged slabs get their final protection at once; sealed ones start writable.
        let initial = if self.proc_mem.is_some() { prot } else { Prot::RW };
        // SAFETY: the caller hands over an unused range of the reservation.
        unsafe { map_anonymous(base + offset as usize, len as usize, Some(initial)) }
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
    writes: MprotectWrites,
}

impl MprotectSlabManager {
    /// A manager with its own reservation, writing through `/proc/self/mem` where the kernel
    /// allows it and in place otherwise (saying why at `debug` level).
    pub fn new(config: ManagerConfig) -> Result<MprotectSlabManager, MemError> {
        let id = ManagerId::next(ManagerKind::MprotectSlab);
        let proc_mem = match ProcMem::open() {
            Ok(mem) => Some(mem),
            Err(e) => {
                tracing::debug!(manager = %id, error = %e, "/proc/self/mem refused a write; sealing pages in place");
                None
            }
        };
        Self::with_backing(id, &config, proc_mem)
    }

    /// A manager that writes code and read-only data the way `writes` says. Asking for
    /// `ProcSelfMem` where the kernel refuses it is an error.
    pub fn with_writes(config: ManagerConfig, writes: MprotectWrites) -> Result<MprotectSlabManager, MemError> {
        let id = ManagerId::next(ManagerKind::MprotectSlab);
        let proc_mem = match writes {
            MprotectWrites::InPlace => None,
            MprotectWrites::ProcSelfMem => Some(ProcMem::open().map_err(|source| MemError::Os {
                manager: id,
                op: "write through /proc/self/mem",
                addr: TargetAddr(0),
                len: 0,
                source,
            })?),
        };
        Self::with_backing(id, &config, proc_mem)
    }

    fn with_backing(
        id: ManagerId,
        config: &ManagerConfig,
        proc_mem: Option<ProcMem>,
    ) -> Result<MprotectSlabManager, MemError> {
        let writes = if proc_mem.is_some() { MprotectWrites::ProcSelfMem } else { MprotectWrites::InPlace };
        let inner = Slabs::new(id, config, |_| Ok(MprotectBacking { proc_mem }))?;
        Ok(MprotectSlabManager { inner: Arc::new(inner), writes })
    }

    /// How this manager writes code and read-only data.
    pub fn writes(&self) -> MprotectWrites {
        self.writes
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
