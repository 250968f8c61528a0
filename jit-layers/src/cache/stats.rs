//! What one process's cache handles have done, readable at any time without a lock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters. All but `bytes_on_disk` count this process's operations
/// through one [`ObjectCache`](super::ObjectCache) and its clones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get`s that returned verified bytes.
    pub hits: u64,
    /// `get`s that returned nothing, bad entries included.
    pub misses: u64,
    /// Bad entries found (and removed): by `get`, or by `put` finding a directory in the way.
    pub corrupt: u64,
    /// Entries written by `put`.
    pub stores: u64,
    /// Entries this process removed to keep the size cap.
    pub evictions: u64,
    /// Size of all entries in the directory when the snapshot was taken, whoever wrote them.
    pub bytes_on_disk: u64,
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CacheStats { hits, misses, corrupt, stores, evictions, bytes_on_disk } = self;
        write!(
            f,
            "{hits} hits, {misses} misses, {corrupt} corrupt, {stores} stores, {evictions} evictions, \
             {bytes_on_disk} bytes on disk"
        )
    }
}

/// The live counters. Relaxed: each is a statistic on its own, never used to order other memory.
#[derive(Debug, Default)]
pub(super) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    stores: AtomicU64,
    evictions: AtomicU64,
}

impl Counters {
    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn store(&self) {
        self.stores.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn evicted(&self, entries: u64) {
        self.evictions.fetch_add(entries, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, bytes_on_disk: u64) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes_on_disk,
        }
    }
}
