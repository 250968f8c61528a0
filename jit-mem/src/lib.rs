//! Executable memory for orcjit: reservations, slabs, dual mapping and protections.
//!
//! A [`MemoryManager`] places the segments of one link graph (code `RX`, read-only data `R`,
//! data `RW`) inside one reservation of at most 2 GiB, hands the linker a zero-filled working
//! view of each, and on finalize makes them runnable at their target addresses. Three
//! managers, one file each:
//!
//! - [`DualMappedManager`] (`dual.rs`, the default on Linux): memfd slabs mapped twice, RW to
//!   write and R/RX to run; many objects per slab, finalize touches no protection.
//! - [`MprotectSlabManager`] (`mprotect.rs`), for systems that forbid dual mapping: slabs of
//!   private memory, code and read-only pages R/RX from the start and written through
//!   `/proc/self/mem` at finalize, or (where the kernel refuses that) sealed page by page.
//! - [`PageAllocator`] (`page.rs`): a mapping per object and pages per segment, LLVM's
//!   `InProcessMemoryManager`; the baseline.
//!
//! [`default_manager`] picks the dual-mapped manager and falls back to the mprotect slab
//! manager (with a `tracing` warning) where dual mapping is refused.
//!
//! [`ManagerConfig::placement`] chooses where the reservation lies: anywhere, or
//! ([`Placement::Low`]) below 2 GiB − 16 MiB, for non-PIC small-code-model code that takes
//! absolute 32-bit addresses.
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
mod procmem;
mod request;
mod slab;
mod sys;
mod table;

use std::sync::Arc;

pub use addr::TargetAddr;
pub use alloc::{
    ActionFn, FinalizeAction, FinalizedAlloc, InFlightAlloc, OnDone, OnFinalized, RawFinalizedAlloc, SegmentInfo,
    WorkingSegment,
};
pub use dual::DualMappedManager;
pub use error::{ActionError, MemError};
pub use manager::{
    DEFAULT_RESERVATION, DEFAULT_SLAB, LOW_PLACEMENT_LIMIT, MAX_ALIGN, MAX_RESERVATION, ManagerConfig, ManagerId,
    ManagerKind, MemStats, MemoryManager, NEAR_REACH, Placement,
};
pub use mprotect::{MprotectSlabManager, MprotectWrites};
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

/// Makes a manager by its command-line name: `dual`, `mprotect` (writing through
/// `/proc/self/mem` where allowed), `mprotect-in-place` (sealing pages in place) or `page`.
pub fn manager_by_name(name: &str, config: ManagerConfig) -> Option<Result<Arc<dyn MemoryManager>, MemError>> {
    let made: Result<Arc<dyn MemoryManager>, MemError> = match name {
        "dual" => DualMappedManager::new(config).map(|m| Arc::new(m) as _),
        "mprotect" => MprotectSlabManager::new(config).map(|m| Arc::new(m) as _),
        "mprotect-in-place" => {
            MprotectSlabManager::with_writes(config, MprotectWrites::InPlace).map(|m| Arc::new(m) as _)
        }
        "page" => PageAllocator::new(config).map(|m| Arc::new(m) as _),
        _ => return None,
    };
    Some(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts `WARN` events; enough of a subscriber to see the fallback speak.
    #[derive(Default)]
    struct WarnCounter(Arc<AtomicUsize>);

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn the_default_is_dual_mapped_where_allowed() {
        let mem = default_manager(ManagerConfig::default()).unwrap();
        assert_eq!(mem.id().kind, ManagerKind::DualMapped);
    }

    #[test]
    fn refused_dual_mapping_falls_back_to_mprotect_slabs_with_a_warning() {
        let warnings = Arc::new(AtomicUsize::new(0));
        let subscriber = WarnCounter(warnings.clone());
        let mem = tracing::subscriber::with_default(subscriber, || {
            default_manager_with(ManagerConfig::default(), |_| {
                Err(MemError::DualMappingRefused {
                    manager: ManagerId::next(ManagerKind::DualMapped),
                    op: "mmap executable view",
                    source: std::io::Error::from_raw_os_error(libc::EACCES),
                })
            })
        })
        .unwrap();
        assert_eq!(mem.id().kind, ManagerKind::MprotectSlab);
        assert_eq!(warnings.load(Ordering::SeqCst), 1);
        let req = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 16, 16)]);
        mem.allocate(&req).unwrap().finalize_blocking(Vec::new()).unwrap();
    }

    #[test]
    fn other_dual_mapping_errors_are_not_hidden_by_the_fallback() {
        let result = default_manager_with(ManagerConfig::default(), |_| {
            Err(MemError::InvalidReservation { manager: ManagerId::NONE, requested: 0, max: MAX_RESERVATION })
        });
        assert!(matches!(result, Err(MemError::InvalidReservation { .. })));
    }
}
