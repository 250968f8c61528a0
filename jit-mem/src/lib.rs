//! Executable memory for orcjit: reservations, slabs, dual mapping and protections.
//!
//! A [`MemoryManager`] places the segments of one link graph (code `RX`, read-only data `R`,
//! data `RW`) inside one reservation of at most 2 GiB, hands the linker a zero-filled working
//! view of each, and on finalize makes them runnable at their target addresses. Three
//! managers, one file each:
//!
//! - [`DualMappedManager`] (`dual.rs`, the default on Linux): memfd slabs mapped twice, RW to
//!   write and R/RX to run; many objects per slab, finalize touches no protection.
//! - [`MprotectSlabManager`] (`mprotect.rs`): slabs sealed page by page with `mprotect`, for
//!   systems that forbid dual mapping.
//! - [`PageAllocator`] (`page.rs`): a mapping per object and pages per segment, LLVM's
//!   `InProcessMemoryManager`; the baseline.
//!
//! [`default_manager`] picks the dual-mapped manager and falls back to the mprotect slab
//! manager (with a `tracing` warning) where dual mapping is refused.
//!
//! Depends on no other crate of this workspace.

mod addr;
mod alloc;
mod dual;
mod error;
mod extent;
mod manager;
pub mod maps;
mod mprotect;
mod page;
mod request;
mod slab;
mod sys;
mod table;

use std::sync::Arc;

pub use addr::TargetAddr;
pub use alloc::{
    ActionFn, FinalizeAction, FinalizedAlloc, InFlightAlloc, OnDone, OnFinalized,
    RawFinalizedAlloc, SegmentInfo, WorkingSegment,
};
pub use dual::DualMappedManager;
pub use error::{ActionError, MemError};
pub use manager::{
    DEFAULT_RESERVATION, DEFAULT_SLAB, MAX_ALIGN, MAX_RESERVATION, ManagerConfig, ManagerId,
    ManagerKind, MemStats, MemoryManager,
};
pub use mprotect::MprotectSlabManager;
pub use page::PageAllocator;
pub use request::{AllocRequest, Prot, SegmentLifetime, SegmentRequest};
pub use sys::flush_icache;

/// The best manager this system allows: dual-mapped slabs, or, where memfd or its executable
/// view is refused, mprotect slabs (and a `tracing` warning saying why).
pub fn default_manager(config: ManagerConfig) -> Result<Arc<dyn MemoryManager>, MemError> {
    default_manager_with(config, DualMappedManager::new)
}

fn default_manager_with(
    config: ManagerConfig,
    dual: impl FnOnce(ManagerConfig) -> Result<DualMappedManager, MemError>,
) -> Result<Arc<dyn MemoryManager>, MemError> {
    match dual(config) {
        Ok(m) => Ok(Arc::new(m)),
        Err(e @ MemError::DualMappingRefused { .. }) => {
            tracing::warn!(error = %e, "dual-mapped JIT memory unavailable; falling back to the mprotect slab manager");
            Ok(Arc::new(MprotectSlabManager::new(config)?))
        }
        Err(e) => Err(e),
    }
}

/// Makes a manager by its command-line name: `dual`, `mprotect` or `page`.
pub fn manager_by_name(
    name: &str,
    config: ManagerConfig,
) -> Option<Result<Arc<dyn MemoryManager>, MemError>> {
    let made: Result<Arc<dyn MemoryManager>, MemError> = match name {
        "dual" => DualMappedManager::new(config).map(|m| Arc::new(m) as _),
        "mprotect" => MprotectSlabManager::new(config).map(|m| Arc::new(m) as _),
        "page" => PageAllocator::new(config).map(|m| Arc::new(m) as _),
        _ => return None,
    };
    Some(made)
}
