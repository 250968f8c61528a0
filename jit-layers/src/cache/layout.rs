//! Names in a cache directory: `<64 hex digits of the key>.obj` for entries, and dot-files
//! `.tmp-<pid>-<n>` for entries being written. Anything else there is left alone.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::CacheKey;

const ENTRY_SUFFIX: &str = ".obj";
const TEMP_PREFIX: &str = ".tmp-";

pub(super) fn entry_path(dir: &Path, key: &CacheKey) -> PathBuf {
    dir.join(format!("{key}{ENTRY_SUFFIX}"))
}

/// A name for a temporary file. Unique among live processes by pid, and within this process by
/// `n`; a stale file of a dead process with the same pid is caught by opening with `create_new`.
pub(super) fn temp_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum FileKind {
    Entry(CacheKey),
    Temporary,
    Other,
}

pub(super) fn classify(name: &OsStr) -> FileKind {
    let Some(name) = name.to_str() else { return FileKind::Other };
    if name.starts_with(TEMP_PREFIX) {
        return FileKind::Temporary;
    }
    match name.strip_suffix(ENTRY_SUFFIX).and_then(CacheKey::from_hex) {
        Some(key) => FileKind::Entry(key),
        None => FileKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKeyBuilder;

    #[test]
    fn names_classify_back_to_what_made_them() {
        let dir = Path::new("/cache");
        let key = CacheKeyBuilder::new().part("x", b"y").finish();
        let entry = entry_path(dir, &key);
        assert_eq!(entry.parent(), Some(dir));
        assert_eq!(classify(entry.file_name().unwrap()), FileKind::Entry(key));
        assert_eq!(classify(temp_path(dir, 7).file_name().unwrap()), FileKind::Temporary);
        assert_ne!(temp_path(dir, 7), temp_path(dir, 8));
        for other in ["README", "abc.obj", ".obj", &format!("{}.obj", key.to_string().to_uppercase())] {
            assert_eq!(classify(OsStr::new(other)), FileKind::Other, "{other}");
        }
    }
}
