//! Least-recently-used order, kept in the entries' own mtimes, and eviction by that order.
//!
//! A hit or a store sets the file's mtime to a use stamp. Keeping recency in the files themselves
//! needs no index to lock, repair after a crash or agree on between processes: every process sees
//! the same order by listing the directory. Stamps come from this process's clock rather than the
//! kernel's, whose file timestamps tick only every few milliseconds, so uses in quick succession
//! stay ordered.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::layout::{self, FileKind};

/// A temporary file this old belongs to a `put` that died: writing one takes milliseconds.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// A time to mark a use with: the wall clock, but strictly later than any stamp this process gave
/// before, so two uses by one process never tie however fast they come.
pub(super) fn use_stamp() -> SystemTime {
    static LAST_NANOS: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let previous = LAST_NANOS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
        .unwrap_or_else(|last| last);
    SystemTime::UNIX_EPOCH + Duration::from_nanos(now.max(previous + 1))
}

/// One entry file as listed.
#[derive(Debug)]
pub(super) struct EntryFile {
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) used: SystemTime,
}

/// What a listing of the cache directory found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) entries: Vec<EntryFile>,
    pub(super) stale_temps: Vec<PathBuf>,
}

impl Scan {
    pub(super) fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.len).sum()
    }
}

/// Lists the entries in `dir`. Files that vanish while listed (another process evicted them) are
/// simply not there; directories under entry names are left for `get` to find and report.
pub(super) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let now = SystemTime::now();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let kind = layout::classify(&dirent.file_name());
        if kind == FileKind::Other {
            continue;
        }
        let meta = match dirent.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        match kind {
            FileKind::Entry(_) => scan.entries.push(EntryFile { path: dirent.path(), len: meta.len(), used: modified }),
            FileKind::Temporary => {
                if now.duration_since(modified).is_ok_and(|age| age > STALE_TEMP_AGE) {
                    scan.stale_temps.push(dirent.path());
                }
            }
            FileKind::Other => {}
        }
    }
    Ok(scan)
}

/// What an eviction pass did.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Entries this pass removed.
    pub(super) entries: u64,
    /// Bytes of entries left, as far as this pass knows.
    pub(super) remaining_bytes: u64,
}

/// If the listed entries exceed `cap` bytes, removes the least recently used until at most
/// `low_water` bytes remain; removes stale temporary files either way.
///
/// Another thread or process may use or replace an entry between the listing and its removal: one
/// whose mtime or size changed since the listing is passed over while older ones remain. If that
/// would leave the directory over `cap` (every entry in use, as when the working set outgrows the
/// cache), the entries passed over go too, in the listing's order. An entry removed just after a
/// use is simply gone, and its next lookup is a miss.
pub(super) fn evict_lru(scan: Scan, cap: u64, low_water: u64) -> Evicted {
    for temp in &scan.stale_temps {
        match fs::remove_file(temp) {
            Ok(()) => tracing::debug!(path = %temp.display(), "object cache: removed a stale temporary file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %temp.display(), error = %e, "object cache: cannot remove a stale temporary file")
            }
        }
    }
    let mut remaining = scan.total_bytes();
    let mut evicted = 0;
    if remaining <= cap {
        return Evicted { entries: 0, remaining_bytes: remaining };
    }
    let mut entries = scan.entries;
    entries.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
    let mut in_use = Vec::new();
    for entry in entries {
        if remaining <= low_water {
            break;
        }
        match fs::symlink_metadata(&entry.path) {
            Ok(meta) if meta.is_file() && meta.len() == entry.len && meta.modified().ok() == Some(entry.used) => {}
            Ok(meta) if meta.is_file() => {
                in_use.push(entry);
                continue;
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remaining -= entry.len;
                continue;
            }
            Err(_) => continue,
        }
        remove(&entry, &mut remaining, &mut evicted);
    }
    if remaining > cap {
        for entry in in_use {
            if remaining <= low_water {
                break;
            }
            remove(&entry, &mut remaining, &mut evicted);
        }
    }
    Evicted { entries: evicted, remaining_bytes: remaining }
}

/// Removes a listed entry, counting it off `remaining` unless it could not be removed.
fn remove(entry: &EntryFile, remaining: &mut u64, evicted: &mut u64) {
    match fs::remove_file(&entry.path) {
        Ok(()) => {
            tracing::debug!(path = %entry.path.display(), bytes = entry.len, "object cache: evicted");
            *evicted += 1;
            *remaining -= entry.len;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => *remaining -= entry.len,
        Err(e) => {
            tracing::warn!(path = %entry.path.display(), error = %e, "object cache: cannot evict an entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKeyBuilder;

    #[test]
    fn use_stamps_strictly_increase() {
        let stamps: Vec<SystemTime> = (0..10_000).map(|_| use_stamp()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }

    fn entry(dir: &Path, name: &str, len: usize) -> PathBuf {
        let path = layout::entry_path(dir, &CacheKeyBuilder::new().part("name", name.as_bytes()).finish());
        fs::write(&path, vec![0u8; len]).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(use_stamp()).unwrap();
        path
    }

    #[test]
    fn evicts_oldest_down_to_low_water_only_when_over_cap() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..5).map(|i| entry(dir.path(), &i.to_string(), 10)).collect();
        fs::write(dir.path().join("unrelated"), [0u8; 1000]).unwrap();
        let under = evict_lru(scan(dir.path()).unwrap(), 50, 20);
        assert_eq!(under, Evicted { entries: 0, remaining_bytes: 50 });

        let over = evict_lru(scan(dir.path()).unwrap(), 45, 20);
        assert_eq!(over, Evicted { entries: 3, remaining_bytes: 20 });
        let present: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(present, [false, false, false, true, true]);
        assert!(dir.path().join("unrelated").exists());
    }

    #[test]
    fn an_entry_used_after_the_listing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = entry(dir.path(), "old", 10);
        let young = entry(dir.path(), "young", 10);
        let listing = scan(dir.path()).unwrap();
        fs::File::open(&old).unwrap().set_modified(use_stamp()).unwrap();
        assert_eq!(evict_lru(listing, 15, 10), Evicted { entries: 1, remaining_bytes: 10 });
        assert!(old.exists());
        assert!(!young.exists());
    }

    #[test]
    fn entries_all_used_after_the_listing_still_go_when_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4).map(|i| entry(dir.path(), &i.to_string(), 10)).collect();
        let listing = scan(dir.path()).unwrap();
        for path in &paths {
            fs::File::open(path).unwrap().set_modified(use_stamp()).unwrap();
        }
        assert_eq!(evict_lru(listing, 35, 20), Evicted { entries: 2, remaining_bytes: 20 });
        let present: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(present, [false, false, true, true], "the least recently used by the listing go first");
    }

    #[test]
    fn stale_temporary_files_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = layout::temp_path(dir.path(), 1);
        let fresh = layout::temp_path(dir.path(), 2);
        fs::write(&stale, b"partial").unwrap();
        fs::write(&fresh, b"partial").unwrap();
        let long_ago = SystemTime::now() - 2 * STALE_TEMP_AGE;
        fs::File::open(&stale).unwrap().set_modified(long_ago).unwrap();
        let listing = scan(dir.path()).unwrap();
        assert_eq!(listing.total_bytes(), 0);
        evict_lru(listing, 100, 90);
        assert!(!stale.exists());
        assert!(fresh.exists());
    }
}
