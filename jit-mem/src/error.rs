//! The one error type of jit-mem: every variant names the manager and the thing involved.

use crate::{ManagerId, Prot, RawFinalizedAlloc, TargetAddr};

/// The error a finalize or deallocate action returns; boxed so jit-link can pass its own.
pub type ActionError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in jit-mem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// A segment's alignment is zero, not a power of two, or larger than the manager supports.
    #[error("{manager}: segment {segment} asks for alignment {align}; it must be a power of two no larger than {max}")]
    InvalidAlignment { manager: ManagerId, segment: usize, align: u64, max: u64 },

    /// A segment cannot fit the reservation at all, however empty.
    #[error(
        "{manager}: segment {segment} ({prot}, {size} bytes) is larger than the whole reservation of {capacity} bytes"
    )]
    SegmentTooLarge { manager: ManagerId, segment: usize, prot: Prot, size: u64, capacity: u64 },

    /// The manager's reservation has no room left for a segment.
    #[error(
        "{manager}: reservation of {capacity} bytes exhausted while placing segment {segment} ({prot}, {size} bytes); {in_use} bytes in use"
    )]
    ReservationExhausted { manager: ManagerId, segment: usize, prot: Prot, size: u64, capacity: u64, in_use: u64 },

    /// Code was to be allocated apart from every manager's reservation
    /// ([`crate::PageAllocator::allocate_apart`]), where nothing keeps it within reach of
    /// other code.
    #[error("{manager}: segment {segment} ({size} bytes) is code; only data may be allocated apart from a reservation")]
    CodeApart { manager: ManagerId, segment: usize, size: u64 },

    /// The requested reservation is zero or would break small-code-model reach.
    #[error(
        "{manager}: a reservation of {requested} bytes is not allowed; it must be between one page and {max} bytes so rel32 references reach"
    )]
    InvalidReservation { manager: ManagerId, requested: u64, max: u64 },

    /// A [`crate::Placement::Low`] reservation found no free range below the limit that is
    /// large enough.
    #[error(
        "{manager}: no free range of {requested} bytes below {limit:#x} for a low reservation (the largest free one has {largest_free} bytes); ask for a smaller reservation, or place it anywhere and compile with -fPIC"
    )]
    LowAddressSpaceExhausted { manager: ManagerId, requested: u64, limit: u64, largest_free: u64 },

    /// The kernel refused another mapping: `vm.max_map_count` is reached.
    #[error(
        "{manager}: the kernel refused another mapping ({op} of {len} bytes at {addr}) with the process at {mappings} mappings; vm.max_map_count is {limit}"
    )]
    MappingLimit { manager: ManagerId, op: &'static str, addr: TargetAddr, len: u64, mappings: u64, limit: u64 },

    /// A system call failed.
    #[error("{manager}: {op} of {len} bytes at {addr} failed: {source}")]
    Os { manager: ManagerId, op: &'static str, addr: TargetAddr, len: u64, source: std::io::Error },

    /// Dual mapping cannot be set up here (memfd refused, or an executable view of it refused).
    #[error("{manager}: dual mapping unavailable: {op} failed: {source}")]
    DualMappingRefused { manager: ManagerId, op: &'static str, source: std::io::Error },

    /// A finalize action failed; the allocation was released.
    #[error("{manager}: finalize action {index} failed (the allocation was released): {source}")]
    FinalizeAction { manager: ManagerId, index: usize, source: ActionError },

    /// A deallocate action failed; the memory was released anyway.
    #[error("{manager}: deallocate action {index} of {alloc} failed (its memory was released anyway): {source}")]
    DeallocateAction { manager: ManagerId, alloc: RawFinalizedAlloc, index: usize, source: ActionError },

    /// A raw handle names an allocation that was already deallocated.
    #[error("{manager}: {alloc} was already deallocated (double free)")]
    DoubleFree { manager: ManagerId, alloc: RawFinalizedAlloc },

    /// A raw handle names an allocation this manager never made.
    #[error("{manager}: {alloc} was never allocated by this manager")]
    UnknownAllocation { manager: ManagerId, alloc: RawFinalizedAlloc },

    /// A raw handle was turned back into a handle while another handle for it is alive.
    #[error("{manager}: {alloc} already has a live handle; a raw handle may be adopted once")]
    HandleAlreadyLive { manager: ManagerId, alloc: RawFinalizedAlloc },

    /// An allocation was given to a manager that did not make it.
    #[error("{manager}: {alloc} belongs to {owner}, not to this manager (it was released by its owner)")]
    ForeignAllocation { manager: ManagerId, owner: ManagerId, alloc: RawFinalizedAlloc },

    /// Several operations of one batch failed.
    #[error("{} errors; first: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    Several(Vec<MemError>),
}

impl MemError {
    /// Folds a list of errors into one result: none is success, one is itself.
    pub(crate) fn collect(mut errors: Vec<MemError>) -> Result<(), MemError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(MemError::Several(errors)),
        }
    }
}
