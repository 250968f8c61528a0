//! The memory manager interface jit-link allocates through, its identity, configuration and
//! accounting.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::alloc::OnDone;
use crate::{AllocRequest, FinalizedAlloc, InFlightAlloc, MemError, RawFinalizedAlloc, TargetAddr};

/// The largest reservation a manager accepts: any two addresses inside it are within reach
/// of a rel32 (x86-64 small code model) reference.
pub const MAX_RESERVATION: u64 = 2 << 30;

/// The reservation a manager makes unless told otherwise.
pub const DEFAULT_RESERVATION: u64 = 1 << 30;

/// The default slab size of the slab managers.
pub const DEFAULT_SLAB: u64 = 1 << 20;

/// The largest segment alignment the managers support.
pub const MAX_ALIGN: u64 = 64 << 10;

/// Every address of a [`Placement::Low`] reservation lies below this: 2 GiB − 16 MiB, the
/// bound the x86-64 psABI's small code model sets for the symbols of non-PIC code (§3.5.1,
/// "Small code model": `0` to `2^31 − 2^24 − 1`), so that an absolute reference `sym + off`
/// with `off` below 16 MiB still fits a sign-extended 32-bit field (`R_X86_64_32S`).
pub const LOW_PLACEMENT_LIMIT: u64 = (1 << 31) - (1 << 24);

/// Which allocation strategy a manager uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ManagerKind {
    /// [`crate::DualMappedManager`].
    DualMapped,
    /// [`crate::MprotectSlabManager`].
    MprotectSlab,
    /// [`crate::PageAllocator`].
    PagePerSegment,
}

impl ManagerKind {
    /// The short name used on command lines: `dual`, `mprotect`, `page`.
    pub const fn name(self) -> &'static str {
        match self {
            ManagerKind::DualMapped => "dual",
            ManagerKind::MprotectSlab => "mprotect",
            ManagerKind::PagePerSegment => "page",
        }
    }
}

/// One manager: its kind and a process-unique serial number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ManagerId {
    /// The strategy.
    pub kind: ManagerKind,
    /// Unique among the managers of this process (0 for no manager).
    pub serial: u32,
}

impl ManagerId {
    pub(crate) const NONE: ManagerId = ManagerId { kind: ManagerKind::PagePerSegment, serial: 0 };

    pub(crate) fn next(kind: ManagerKind) -> ManagerId {
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        ManagerId { kind, serial: SERIAL.fetch_add(1, Ordering::Relaxed) }
    }
}

impl fmt::Display for ManagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ManagerKind::DualMapped => "dual-mapped slab manager",
            ManagerKind::MprotectSlab => "mprotect slab manager",
            ManagerKind::PagePerSegment => "page allocator",
        };
        write!(f, "{kind} #{}", self.serial)
    }
}

/// Where in the address space a manager's target reservation lies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Placement {
    /// Wherever the kernel puts it (far above 4 GiB on x86-64 Linux). Enough for PIC code and
    /// for any code model that reaches externals through the GOT or 64-bit addresses.
    #[default]
    Anywhere,
    /// Entirely below [`LOW_PLACEMENT_LIMIT`], so that absolute 32-bit addresses
    /// (`R_X86_64_32`, `R_X86_64_32S`) of anything in it fit: what `-fno-pic
    /// -mcmodel=small` code needs. Only the target addresses are low: the dual-mapped
    /// manager's working view may lie anywhere. When no free range below the limit is large
    /// enough, making the manager fails with [`crate::MemError::LowAddressSpaceExhausted`].
    Low,
    /// As near this address as free space allows, every byte within [`NEAR_REACH`] of it, or
    /// else anywhere: what 32-bit PC-relative references to the data and code around it (a
    /// shared library's, such as libc's `environ`) need from code that reaches them without a
    /// GOT (`gcc -fPIE`'s default, clang's `-fdirect-access-external-data`). Only the target
    /// addresses are near, as with `Low`.
    Near(u64),
}

/// How far from its anchor a [`Placement::Near`] reservation may reach: 2 GiB (a rel32's
/// reach) less 64 MiB for the spread of the library around the anchor.
pub const NEAR_REACH: u64 = (1 << 31) - (64 << 20);

impl Placement {
    /// [`Placement::Near`] libc's data (its `environ`), or [`Placement::Anywhere`] if the
    /// loader does not know libc: memory for code that may reach libc's variables with 32-bit
    /// PC-relative references, as PIE code compiled by gcc (its default) does for `optarg`,
    /// `environ` or `__libc_single_threaded` (a native link makes copy relocations for them).
    pub fn near_libc() -> Placement {
        // SAFETY: dlsym only reads the loader's tables; the name is a NUL-terminated literal.
        let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"environ".as_ptr()) };
        if addr.is_null() { Placement::Anywhere } else { Placement::Near(addr as u64) }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Anywhere => f.write_str("anywhere"),
            Placement::Low => f.write_str("low"),
            Placement::Near(anchor) => write!(f, "near {anchor:#x}"),
        }
    }
}

/// How a manager is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ManagerConfig {
    /// Bytes of address space for all target addresses; at most [`MAX_RESERVATION`].
    pub reservation: u64,
    /// Size of one slab (slab managers): small objects are packed into slabs this big.
    pub slab: u64,
    /// Where the target reservation lies.
    pub placement: Placement,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig { reservation: DEFAULT_RESERVATION, slab: DEFAULT_SLAB, placement: Placement::Anywhere }
    }
}

impl ManagerConfig {
    /// The default configuration with another reservation size.
    pub fn with_reservation(reservation: u64) -> ManagerConfig {
        ManagerConfig { reservation, ..ManagerConfig::default() }
    }

    /// This configuration with another placement.
    pub fn with_placement(self, placement: Placement) -> ManagerConfig {
        ManagerConfig { placement, ..self }
    }
}

/// A manager's accounting at one moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemStats {
    /// Bytes of address space reserved (target reservation, plus the working-view mirror of
    /// the dual-mapped manager).
    pub reserved: u64,
    /// Bytes of pages handed out for use and not yet given back to the kernel.
    pub committed: u64,
    /// Bytes requested by live allocations (in flight or finalized).
    pub in_use: u64,
    /// Kernel mappings (lines of `/proc/self/maps`) inside the manager's ranges.
    pub mappings: u64,
    /// Live allocations, in flight or finalized.
    pub allocations: u64,
}

/// Allocates, finalizes and frees JIT memory for link graphs. Thread-safe and
/// object-safe: used as `Arc<dyn MemoryManager>` by many linker threads at once.
///
/// Contract: every target address a manager hands out lies inside its one reservation
/// ([`reservation`](Self::reservation), at most 2 GiB), so rel32 references between any two
/// of its allocations reach. No page is ever writable and executable in one mapping.
pub trait MemoryManager: Send + Sync {
    /// Which manager this is.
    fn id(&self) -> ManagerId;

    /// Places every segment of one link graph. The working views are zero-filled.
    fn allocate(&self, request: &AllocRequest) -> Result<InFlightAlloc, MemError>;

    /// Releases finalized allocations: runs their deallocate actions (each allocation's in
    /// reverse order), frees their memory, then calls `on_done` with every failure. A handle
    /// made by another manager is an error (it is still released, by its owner).
    fn deallocate(&self, allocs: Vec<FinalizedAlloc>, on_done: OnDone);

    /// Turns a raw handle back into a handle (see [`FinalizedAlloc::from_raw`]).
    fn adopt_raw(&self, raw: RawFinalizedAlloc) -> Result<FinalizedAlloc, MemError>;

    /// Accounting, readable at any time.
    fn stats(&self) -> MemStats;

    /// The address range every target address of this manager lies in.
    fn reservation(&self) -> Range<TargetAddr>;

    /// Makes the instruction cache coherent for code written at `range`; finalize calls it for
    /// every executable segment. No-op on x86-64, `__clear_cache` elsewhere.
    fn flush_icache(&self, range: Range<TargetAddr>) {
        crate::sys::flush_icache(range.start.as_ptr(), range.end.0.saturating_sub(range.start.0) as usize);
    }

    /// [`deallocate`](Self::deallocate), returning the result.
    fn deallocate_blocking(&self, allocs: Vec<FinalizedAlloc>) -> Result<(), MemError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.deallocate(
            allocs,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Ok(()))
    }
}
