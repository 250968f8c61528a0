//! The cache's error type. Only `open` and `put` return errors: a failed `get` is a miss.

use std::io;
use std::path::PathBuf;

use super::CacheKey;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A file-system operation failed; `op` says which, in words ("rename into place").
    #[error("object cache: cannot {op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The entry alone would exceed the cache's size cap, so storing it would only evict everything.
    #[error("object cache: cannot store '{}': the entry for {key} is {size} bytes, over the cap of {max_bytes}", path.display())]
    TooLarge { key: CacheKey, path: PathBuf, size: u64, max_bytes: u64 },
}

impl CacheError {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { op, path, source }
    }
}
