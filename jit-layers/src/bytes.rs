//! [`ObjectBytes`]: the bytes of a relocatable object or a static library, shared rather than
//! copied.
//!
//! A linker reads its inputs once and keeps them while it links: an object until its unit is
//! linked, a static library until the last member that could be pulled is. Reading a library
//! into the heap, sharing it as an `Arc<[u8]>` and copying each pulled member out of it made
//! three copies of every member linked: 42 MB of heap to link OpenSSL's `openssl` with its
//! libraries. Now a buffer read is kept as it came, and a member is a range of its library's.
//!
//! A file can also be mapped ([`ObjectBytes::map_file`], as LLVM's `MemoryBuffer` maps), which
//! is safe only for files replaced by renaming a new one over them (package managers, clang's
//! outputs): GNU `ar` rewrites a library in place, and reading a mapping past a new, shorter
//! end of file faults. `orcjit link` and `orcjit run` read their inputs; the compiler's
//! runtime library, a system file, is mapped.

use std::fmt;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

/// Immutable bytes, cheap to clone: a buffer on the heap or a mapped file, or a range of
/// either (one member of a static library). Dereferences to `[u8]`.
#[derive(Clone)]
pub struct ObjectBytes {
    owner: Owner,
    range: Range<usize>,
}

#[derive(Clone)]
enum Owner {
    Shared(Arc<[u8]>),
    /// A `Vec` kept as it came: turning it into an `Arc<[u8]>` would copy it.
    Owned(Arc<Vec<u8>>),
    Mapped(Arc<Mmap>),
}

impl Owner {
    fn bytes(&self) -> &[u8] {
        match self {
            Owner::Shared(b) => b,
            Owner::Owned(b) => b,
            Owner::Mapped(m) => m,
        }
    }
}

impl ObjectBytes {
    /// The contents of the file at `path`, mapped read-only.
    ///
    /// The file must not change while the bytes are in use (as for any linker that maps its
    /// inputs): the mapping is private, but a file truncated under it faults on access.
    pub fn map_file(path: impl AsRef<Path>) -> std::io::Result<ObjectBytes> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            // A mapping cannot be empty.
            return Ok(ObjectBytes::from(Vec::new()));
        }
        // SAFETY: a read-only private mapping of a file opened for reading. Nothing in this
        // process writes the file; the contract above leaves it to the caller that no other
        // process truncates it while these bytes are in use (then reading them would fault).
        let map = unsafe { Mmap::map(&file)? };
        let len = map.len();
        Ok(ObjectBytes { owner: Owner::Mapped(Arc::new(map)), range: 0..len })
    }

    /// `range` of these bytes, sharing them; `None` if it reaches past their end.
    pub fn slice(&self, range: Range<usize>) -> Option<ObjectBytes> {
        if range.start > range.end || range.end > self.range.len() {
            return None;
        }
        let start = self.range.start + range.start;
        Some(ObjectBytes { owner: self.owner.clone(), range: start..start + range.len() })
    }
}

impl Deref for ObjectBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.owner.bytes()[self.range.clone()]
    }
}

impl AsRef<[u8]> for ObjectBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for ObjectBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        ObjectBytes { owner: Owner::Owned(Arc::new(bytes)), range: 0..len }
    }
}

impl From<Arc<[u8]>> for ObjectBytes {
    fn from(bytes: Arc<[u8]>) -> Self {
        let len = bytes.len();
        ObjectBytes { owner: Owner::Shared(bytes), range: 0..len }
    }
}

impl From<&[u8]> for ObjectBytes {
    fn from(bytes: &[u8]) -> Self {
        Arc::<[u8]>::from(bytes).into()
    }
}

impl From<Box<[u8]>> for ObjectBytes {
    fn from(bytes: Box<[u8]>) -> Self {
        // A boxed slice is a `Vec` without spare capacity: kept, not copied.
        bytes.into_vec().into()
    }
}

impl fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.owner {
            Owner::Shared(_) | Owner::Owned(_) => "heap",
            Owner::Mapped(_) => "mapped",
        };
        write!(f, "ObjectBytes({} bytes, {kind})", self.range.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_and_stay_in_bounds() {
        let all = ObjectBytes::from(b"!<arch>\nmember".to_vec());
        let member = all.slice(8..14).expect("in bounds");
        assert_eq!(&*member, b"member");
        assert_eq!(&*member.slice(1..3).expect("in bounds"), b"em");
        assert!(member.slice(2..7).is_none(), "past the member's end");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = member.slice(3..2);
        assert!(reversed.is_none());
        assert_eq!(member.slice(6..6).map(|b| b.len()), Some(0));
    }

    #[test]
    fn a_mapped_file_reads_as_its_contents() {
        let dir = std::env::temp_dir().join(format!("orcjit-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (full, empty) = (dir.join("full"), dir.join("empty"));
        std::fs::write(&full, b"\x7fELF and more").expect("write");
        std::fs::write(&empty, b"").expect("write");
        let mapped = ObjectBytes::map_file(&full).expect("maps");
        assert_eq!(&*mapped, b"\x7fELF and more");
        assert_eq!(&*mapped.slice(1..4).expect("in bounds"), b"ELF");
        assert!(format!("{mapped:?}").contains("mapped"));
        assert_eq!(ObjectBytes::map_file(&empty).expect("an empty file").len(), 0);
        let missing = ObjectBytes::map_file(dir.join("missing")).expect_err("no such file");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
