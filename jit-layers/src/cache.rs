//! The object cache: compiled objects kept on disk under a content key, so a later run, or another
//! process, links them instead of compiling again. No LLVM here: callers decide what goes into a key.
//!
//! Contract:
//! - Any thread of any process may call [`ObjectCache::get`] and [`ObjectCache::put`] at any time on
//!   handles to the same directory. There are no lock files: nothing a crashed process leaves behind
//!   can block the others.
//! - `get` returns only bytes whose header names the requested key and whose blake3 checksum matches.
//!   Anything else found under the key's name (truncated, corrupted, foreign, a directory) is logged,
//!   counted, removed and reported as a miss, so the caller compiles again and `put`s a good entry.
//! - `put` writes a complete entry to a private temporary file and renames it over the key's name,
//!   so readers see the old entry, the new one, or none, never part of one. Concurrent `put`s of one
//!   key are harmless: the last rename wins and each candidate was complete.
//! - After a crash, every entry is whole or absent: an entry's bytes are synced before the rename
//!   that names it. The directory is not synced, so the last renames may be lost, which costs only
//!   a miss. A crash mid-`put` leaves at most a temporary file, removed by a later eviction pass.
//! - The size cap is kept by least-recently-used eviction (use = a file's mtime, refreshed on hit).
//!   Eviction may remove an entry another process is about to read; that reader sees a miss.
//! - [`ObjectCache::stats`] counts what this process did; only `bytes_on_disk` reflects other processes.

mod entry;
mod error;
mod key;
mod layout;
mod lru;
mod object_cache;
mod stats;

pub use error::CacheError;
pub use key::{CacheKey, CacheKeyBuilder};
pub use object_cache::ObjectCache;
pub use stats::CacheStats;
