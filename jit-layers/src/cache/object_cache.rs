//! `ObjectCache`: the handle through which threads and processes share one cache directory.
//! The module doc of `cache` states the contract; this file keeps it.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::entry::{self, BadEntry};
use super::error::CacheError;
use super::lru::{self, Evicted};
use super::stats::{CacheStats, Counters};
use super::{CacheKey, layout};

/// Times `put` retries a temporary name that is taken (by a dead process that had our pid).
const TEMP_NAME_ATTEMPTS: u32 = 16;

/// A content-addressed store of object files in one directory, shared by every thread and
/// process that opens it. Cheap to clone; clones share counters.
#[derive(Clone)]
pub struct ObjectCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    counters: Counters,
    /// Entry bytes in the directory at this process's last listing.
    listed_bytes: AtomicU64,
    /// Entry bytes this process has written since that listing. Other processes' writes are seen
    /// only at the next listing, so a listing is also due after writing a tenth of the cap: with
    /// P processes writing at once, the directory exceeds the cap by at most about P tenths.
    written_since_listing: AtomicU64,
    next_temp: AtomicU64,
    /// One eviction pass at a time per process; a `put` that finds one running leaves it the work.
    evicting: Mutex<()>,
}

/// A file under an entry name that `get` could not use, and whether it is the entry's fault.
enum Unusable {
    Absent,
    /// Not the entry's fault (say, too many open files here): a miss, but the file stays.
    Unavailable(io::Error),
    Bad {
        problem: BadEntry,
        inode: Option<(u64, u64)>,
    },
}

impl ObjectCache {
    /// Opens the cache in `dir`, creating the directory if needed, capped at `max_bytes` of entries.
    /// Handles with different caps may share a directory; each keeps its own cap when it evicts.
    ///
    /// A relative `dir` is made absolute now: the JIT'd program may change the working
    /// directory, and the cache must not follow it (it writes and evicts files there).
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> Result<ObjectCache, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(CacheError::io("create directory", &dir))?;
        let dir = fs::canonicalize(&dir).map_err(CacheError::io("resolve directory", &dir))?;
        let listing = lru::scan(&dir).map_err(CacheError::io("read directory", &dir))?;
        let inner = Inner {
            listed_bytes: AtomicU64::new(listing.total_bytes()),
            dir,
            max_bytes,
            counters: Counters::default(),
            written_since_listing: AtomicU64::new(0),
            next_temp: AtomicU64::new(0),
            evicting: Mutex::new(()),
        };
        Ok(ObjectCache { inner: Arc::new(inner) })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Where the entry for `key` lives, for diagnostics: write there only through `put`.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        layout::entry_path(&self.inner.dir, key)
    }

    /// The object stored under `key`, verified against its checksum, or `None`. A bad entry is
    /// logged, counted, removed and reported as `None`, so the caller compiles and `put`s again.
    pub fn get(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let path = self.entry_path(key);
        let counters = &self.inner.counters;
        match read_entry(&path, key) {
            Ok((object, file)) => {
                counters.hit();
                // Best effort: if the stamp cannot be set (another user's file), LRU order is merely older.
                if let Err(e) = file.set_modified(lru::use_stamp()) {
                    tracing::debug!(path = %path.display(), error = %e, "object cache: cannot mark an entry used");
                }
                Some(object)
            }
            Err(Unusable::Absent) => {
                counters.miss();
                None
            }
            Err(Unusable::Unavailable(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "object cache: cannot open an entry; treating it as a miss");
                counters.miss();
                None
            }
            Err(Unusable::Bad { problem, inode }) => {
                tracing::warn!(path = %path.display(), %problem, "object cache: bad entry; removing it");
                counters.corrupt();
                counters.miss();
                remove_bad(&path, inode);
                None
            }
        }
    }

    /// Stores `object` under `key`, replacing any entry there, then evicts if over the cap.
    /// Errors leave the cache as it was (an earlier entry under `key`, if any, stays readable).
    pub fn put(&self, key: &CacheKey, object: &[u8]) -> Result<(), CacheError> {
        let inner = &*self.inner;
        let path = self.entry_path(key);
        let size = entry::entry_len(object.len());
        if size > inner.max_bytes {
            return Err(CacheError::TooLarge { key: *key, path, size, max_bytes: inner.max_bytes });
        }
        let (temp, file) = self.create_temp()?;
        let written = write_temp(file, &temp, key, object).and_then(|()| self.rename_into_place(&temp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        inner.counters.store();
        inner.written_since_listing.fetch_add(size, Ordering::SeqCst);
        if self.listing_due() {
            self.evict();
        }
        Ok(())
    }

    /// Whether the directory may be over the cap, or enough was written since the last listing
    /// that other processes' writes should be looked at.
    fn listing_due(&self) -> bool {
        let inner = &*self.inner;
        let since = inner.written_since_listing.load(Ordering::SeqCst);
        inner.listed_bytes.load(Ordering::SeqCst) + since > inner.max_bytes || since > inner.max_bytes / 10
    }

    /// This process's counts, and the bytes of entries now in the directory (which takes a listing).
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        let bytes_on_disk = match lru::scan(&inner.dir) {
            Ok(listing) => listing.total_bytes(),
            Err(_) => inner.listed_bytes.load(Ordering::Relaxed) + inner.written_since_listing.load(Ordering::Relaxed),
        };
        inner.counters.snapshot(bytes_on_disk)
    }

    fn create_temp(&self) -> Result<(PathBuf, File), CacheError> {
        let dir = &self.inner.dir;
        let mut attempt = 0;
        loop {
            let temp = layout::temp_path(dir, self.inner.next_temp.fetch_add(1, Ordering::Relaxed));
            match File::options().write(true).create_new(true).open(&temp) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_NAME_ATTEMPTS => attempt += 1,
                Err(e) => return Err(CacheError::io("create a temporary file", temp)(e)),
            }
        }
    }

    fn rename_into_place(&self, temp: &Path, path: &Path) -> Result<(), CacheError> {
        let Err(e) = fs::rename(temp, path) else { return Ok(()) };
        // rename(2) will not replace a directory with a file: clear a directory squatting on the
        // entry's name, which is the same bad entry `get` would have found, and try once more.
        if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(CacheError::io("rename into place", path)(e));
        }
        tracing::warn!(path = %path.display(), problem = %BadEntry::NotAFile, "object cache: bad entry; removing it");
        self.inner.counters.corrupt();
        remove_bad(path, None);
        fs::rename(temp, path).map_err(CacheError::io("rename into place", path))
    }

    /// Lists the directory and evicts least recently used entries if it holds more than the cap,
    /// down to nine tenths of it, so that a full cache lists once per tenth of the cap written
    /// rather than once per `put`. A `put` that finds a pass running leaves it the work; since its
    /// entry may have come after the pass's listing, the pass looks again once it is over, and
    /// goes on while entries written meanwhile may have taken the directory over the cap.
    fn evict(&self) {
        let inner = &*self.inner;
        loop {
            {
                let Some(_pass) = inner.evicting.try_lock() else { return };
                // Bytes written while the listing runs may or may not be in it; counting them
                // again only brings the next pass forward.
                inner.written_since_listing.store(0, Ordering::SeqCst);
                let listing = match lru::scan(&inner.dir) {
                    Ok(listing) => listing,
                    Err(e) => {
                        tracing::warn!(path = %inner.dir.display(), error = %e, "object cache: cannot list the directory to evict");
                        return;
                    }
                };
                let low_water = inner.max_bytes - inner.max_bytes / 10;
                let Evicted { entries, remaining_bytes } = lru::evict_lru(listing, inner.max_bytes, low_water);
                inner.counters.evicted(entries);
                inner.listed_bytes.store(remaining_bytes, Ordering::SeqCst);
            }
            // Nothing written during the pass: what it could do, it did (an entry it could not
            // remove is not worth listing again for).
            if inner.written_since_listing.load(Ordering::SeqCst) == 0 || !self.listing_due() {
                return;
            }
        }
    }
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache").field("dir", &self.inner.dir).field("max_bytes", &self.inner.max_bytes).finish()
    }
}

/// Writes a complete entry and makes it durable before anyone can see it under the entry's name,
/// so a crash after the rename cannot leave a named entry with missing bytes.
fn write_temp(mut file: File, temp: &Path, key: &CacheKey, object: &[u8]) -> Result<(), CacheError> {
    entry::write_entry(&mut file, key, object).map_err(CacheError::io("write", temp))?;
    file.set_modified(lru::use_stamp()).map_err(CacheError::io("set the modification time of", temp))?;
    file.sync_data().map_err(CacheError::io("sync", temp))
}

/// Opens and verifies the entry at `path`. Returns the open file too, to mark the use on the very
/// file that was read even if a `put` has since renamed another over the name.
fn read_entry(path: &Path, key: &CacheKey) -> Result<(Vec<u8>, File), Unusable> {
    let bad = |problem, inode| Unusable::Bad { problem, inode };
    // Look before opening: opening a FIFO squatting on the name would block.
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(bad(BadEntry::NotAFile, None)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Absent),
        Err(e) => return Err(Unusable::Unavailable(e)),
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Absent),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(bad(BadEntry::Unreadable(e), None)),
        Err(e) => return Err(Unusable::Unavailable(e)),
    };
    // From here on the file is open, so whatever is wrong is wrong with this entry.
    let meta = file.metadata().map_err(|e| bad(BadEntry::Unreadable(e), None))?;
    let inode = Some((meta.dev(), meta.ino()));
    if !meta.is_file() {
        return Err(bad(BadEntry::NotAFile, inode));
    }
    match entry::read_verified(&mut file, meta.len(), key) {
        Ok(object) => Ok((object, file)),
        Err(problem) => Err(bad(problem, inode)),
    }
}

/// Removes a bad entry, unless the name now holds a different file than the one found bad
/// (`inode`): a concurrent `put` has already replaced it with a good one.
fn remove_bad(path: &Path, inode: Option<(u64, u64)>) {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "object cache: cannot remove a bad entry");
            return;
        }
    };
    if inode.is_some_and(|inode| inode != (meta.dev(), meta.ino())) {
        return;
    }
    let removed = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "object cache: cannot remove a bad entry"),
    }
}
