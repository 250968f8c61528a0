//! Cache keys: a blake3 digest of labelled, length-prefixed parts, built incrementally.

use std::fmt;

/// Separates these digests from any other blake3 use of the same bytes; change it and every
/// existing entry becomes unreachable (and is evicted in time), which is the point of versioning it.
const KEY_CONTEXT: &str = "orcjit object cache key v1";

/// The identity of one cached object: a digest of everything that determines the object's bytes.
///
/// The cache trusts the key: inputs that may compile to different code must differ in some part,
/// or they share an entry. Displays as 64 lowercase hex digits, which is also its file name stem.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; CacheKey::LEN]);

impl CacheKey {
    /// Bytes in a key.
    pub const LEN: usize = 32;

    pub const fn from_bytes(bytes: [u8; CacheKey::LEN]) -> CacheKey {
        CacheKey(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; CacheKey::LEN] {
        &self.0
    }

    /// Parses the form `Display` prints; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<CacheKey> {
        // blake3 accepts upper case too; a file name we did not write should not alias one we did.
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        blake3::Hash::from_hex(hex).ok().map(|hash| CacheKey(*hash.as_bytes()))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Builds a [`CacheKey`] from parts such as ("bitcode", bytes), ("triple", b"x86_64-...").
///
/// Each part's label and bytes are hashed with their lengths in front, so no two different part
/// sequences share an encoding: ("ab", "c") and ("a", "bc") give different keys. Order matters.
#[derive(Clone, Debug)]
pub struct CacheKeyBuilder {
    hasher: blake3::Hasher,
}

impl CacheKeyBuilder {
    pub fn new() -> CacheKeyBuilder {
        CacheKeyBuilder { hasher: blake3::Hasher::new_derive_key(KEY_CONTEXT) }
    }

    #[must_use]
    pub fn part(mut self, label: &str, bytes: &[u8]) -> CacheKeyBuilder {
        self.hasher.update(&(label.len() as u64).to_le_bytes());
        self.hasher.update(label.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    pub fn finish(&self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }
}

impl Default for CacheKeyBuilder {
    fn default() -> CacheKeyBuilder {
        CacheKeyBuilder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[(&str, &[u8])]) -> CacheKey {
        parts.iter().fold(CacheKeyBuilder::new(), |b, (label, bytes)| b.part(label, bytes)).finish()
    }

    #[test]
    fn same_parts_give_the_same_key() {
        assert_eq!(key(&[("bitcode", b"abc"), ("opt", b"2")]), key(&[("bitcode", b"abc"), ("opt", b"2")]));
    }

    #[test]
    fn moving_a_boundary_between_parts_changes_the_key() {
        assert_ne!(key(&[("x", b"ab"), ("y", b"c")]), key(&[("x", b"a"), ("y", b"bc")]));
        assert_ne!(key(&[("ab", b"c")]), key(&[("a", b"bc")]));
        assert_ne!(key(&[("a", b"")]), key(&[("", b"a")]));
        assert_ne!(key(&[("a", b"b")]), key(&[("a", b""), ("", b"b")]));
    }

    #[test]
    fn part_order_and_labels_matter() {
        assert_ne!(key(&[("a", b"1"), ("b", b"2")]), key(&[("b", b"2"), ("a", b"1")]));
        assert_ne!(key(&[("cpu", b"znver4")]), key(&[("features", b"znver4")]));
        assert_ne!(key(&[]), key(&[("", b"")]));
    }

    #[test]
    fn key_is_not_a_plain_blake3_of_the_bytes() {
        assert_ne!(key(&[("", b"x")]).as_bytes(), blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn hex_round_trips_and_rejects_other_spellings() {
        let k = key(&[("bitcode", b"abc")]);
        let hex = k.to_string();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(CacheKey::from_hex(&hex), Some(k));
        assert_eq!(CacheKey::from_hex(&hex.to_uppercase()), None);
        assert_eq!(CacheKey::from_hex(&hex[1..]), None);
        assert_eq!(CacheKey::from_hex("not a key"), None);
        assert_eq!(format!("{k:?}"), format!("CacheKey({hex})"));
    }
}
