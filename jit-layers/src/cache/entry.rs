//! The on-disk format of one entry, and the checks that decide whether an entry may be returned.
//!
//! An entry is an 88-byte header followed by the object's bytes. Little-endian:
//!
//! | offset | size | field                                        |
//! |-------:|-----:|----------------------------------------------|
//! |      0 |    8 | magic `ORCJITOC`                             |
//! |      8 |    4 | format version, 1                            |
//! |     12 |    4 | reserved, zero                               |
//! |     16 |   32 | the key the entry was stored under           |
//! |     48 |    8 | payload length in bytes                      |
//! |     56 |   32 | blake3 of the payload                        |
//! |     88 |    n | payload: the object file                     |
//!
//! Every header byte is checked on read (the key against the one asked for, the length against the
//! file's, the checksum against the payload), so a single flipped byte anywhere is a bad entry.

use std::fmt;
use std::io::{self, Read, Write};

use super::CacheKey;

pub(super) const HEADER_LEN: usize = 88;

const MAGIC: [u8; 8] = *b"ORCJITOC";
/// Bump when the layout changes; entries of other versions are then bad and get replaced.
const FORMAT_VERSION: u32 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 8;
const RESERVED_AT: usize = 12;
const KEY_AT: usize = 16;
const LENGTH_AT: usize = 48;
const CHECKSUM_AT: usize = 56;
const _: () = assert!(CHECKSUM_AT + 32 == HEADER_LEN);

/// The size on disk of an entry holding `payload_len` bytes.
pub(super) fn entry_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// Writes a complete entry for `payload` under `key`.
pub(super) fn write_entry(out: &mut impl Write, key: &CacheKey, payload: &[u8]) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    put(&mut header, MAGIC_AT, &MAGIC);
    put(&mut header, VERSION_AT, &FORMAT_VERSION.to_le_bytes());
    put(&mut header, KEY_AT, key.as_bytes());
    put(&mut header, LENGTH_AT, &(payload.len() as u64).to_le_bytes());
    put(&mut header, CHECKSUM_AT, blake3::hash(payload).as_bytes());
    out.write_all(&header)?;
    out.write_all(payload)
}

/// Reads the entry that `input` holds (`len` bytes, as its metadata says) and returns its payload
/// if it is a complete, intact entry for `key`.
pub(super) fn read_verified(input: &mut impl Read, len: u64, key: &CacheKey) -> Result<Vec<u8>, BadEntry> {
    if len < HEADER_LEN as u64 {
        return Err(BadEntry::Truncated { len });
    }
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BadEntry::Truncated { len },
        _ => BadEntry::Unreadable(e),
    })?;
    if get::<8>(&header, MAGIC_AT) != MAGIC {
        return Err(BadEntry::BadMagic);
    }
    let version = u32::from_le_bytes(get(&header, VERSION_AT));
    if version != FORMAT_VERSION {
        return Err(BadEntry::UnsupportedVersion(version));
    }
    if get::<4>(&header, RESERVED_AT) != [0; 4] {
        return Err(BadEntry::ReservedNotZero);
    }
    let stored_key = CacheKey::from_bytes(get(&header, KEY_AT));
    if stored_key != *key {
        return Err(BadEntry::WrongKey(stored_key));
    }
    let declared = u64::from_le_bytes(get(&header, LENGTH_AT));
    let actual = len - HEADER_LEN as u64;
    if declared != actual {
        return Err(BadEntry::WrongLength { declared, actual });
    }
    let mut payload = Vec::new();
    usize::try_from(declared)
        .map_err(|_| io::ErrorKind::OutOfMemory.into())
        .and_then(|n| payload.try_reserve_exact(n).map_err(|_| io::ErrorKind::OutOfMemory.into()))
        .map_err(BadEntry::Unreadable)?;
    // One byte past the declared end, so a file that grew while we read shows up as a wrong length.
    input.take(declared + 1).read_to_end(&mut payload).map_err(BadEntry::Unreadable)?;
    if payload.len() as u64 != declared {
        return Err(BadEntry::WrongLength { declared, actual: payload.len() as u64 });
    }
    if blake3::hash(&payload).as_bytes() != &get::<32>(&header, CHECKSUM_AT) {
        return Err(BadEntry::ChecksumMismatch);
    }
    Ok(payload)
}

fn put(header: &mut [u8; HEADER_LEN], at: usize, field: &[u8]) {
    header[at..at + field.len()].copy_from_slice(field);
}

fn get<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut field = [0u8; N];
    field.copy_from_slice(&header[at..at + N]);
    field
}

/// Why a file under an entry's name may not be returned.
#[derive(Debug)]
pub(super) enum BadEntry {
    NotAFile,
    Unreadable(io::Error),
    Truncated { len: u64 },
    BadMagic,
    UnsupportedVersion(u32),
    ReservedNotZero,
    WrongKey(CacheKey),
    WrongLength { declared: u64, actual: u64 },
    ChecksumMismatch,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadEntry::NotAFile => write!(f, "not a regular file"),
            BadEntry::Unreadable(e) => write!(f, "unreadable: {e}"),
            BadEntry::Truncated { len } => {
                write!(f, "truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            BadEntry::BadMagic => write!(f, "bad magic (not an orcjit cache entry)"),
            BadEntry::UnsupportedVersion(v) => write!(f, "format version {v}, expected {FORMAT_VERSION}"),
            BadEntry::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            BadEntry::WrongKey(k) => write!(f, "header names key {k}"),
            BadEntry::WrongLength { declared, actual } => {
                write!(f, "header declares {declared} payload bytes, file holds {actual}")
            }
            BadEntry::ChecksumMismatch => write!(f, "payload checksum mismatch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKeyBuilder;

    fn key(name: &str) -> CacheKey {
        CacheKeyBuilder::new().part("name", name.as_bytes()).finish()
    }

    fn encoded(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_entry(&mut bytes, key, payload).unwrap();
        bytes
    }

    fn read(bytes: &[u8], key: &CacheKey) -> Result<Vec<u8>, BadEntry> {
        read_verified(&mut &bytes[..], bytes.len() as u64, key)
    }

    #[test]
    fn entry_round_trips() {
        let k = key("a");
        for payload in [&b""[..], b"x", &[7u8; 5000]] {
            let bytes = encoded(&k, payload);
            assert_eq!(bytes.len() as u64, entry_len(payload.len()));
            assert_eq!(read(&bytes, &k).unwrap(), payload);
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let k = key("a");
        let good = encoded(&k, b"an object file");
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(read(&bad, &k).is_err(), "flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn each_problem_is_named() {
        let k = key("a");
        let good = encoded(&k, b"payload");
        let flip = |at: usize| {
            let mut bad = good.clone();
            bad[at] ^= 1;
            bad
        };
        assert!(matches!(read(&good[..40], &k), Err(BadEntry::Truncated { len: 40 })));
        assert!(matches!(read(&[], &k), Err(BadEntry::Truncated { len: 0 })));
        assert!(matches!(read(&flip(MAGIC_AT), &k), Err(BadEntry::BadMagic)));
        assert!(matches!(read(&flip(VERSION_AT), &k), Err(BadEntry::UnsupportedVersion(0))));
        assert!(matches!(read(&flip(RESERVED_AT + 3), &k), Err(BadEntry::ReservedNotZero)));
        assert!(matches!(read(&good, &key("b")), Err(BadEntry::WrongKey(found)) if found == k));
        assert!(matches!(read(&good[..good.len() - 1], &k), Err(BadEntry::WrongLength { declared: 7, actual: 6 })));
        assert!(matches!(read(&flip(CHECKSUM_AT), &k), Err(BadEntry::ChecksumMismatch)));
        assert!(matches!(read(&flip(HEADER_LEN), &k), Err(BadEntry::ChecksumMismatch)));
    }

    #[test]
    fn a_file_that_grows_while_read_is_a_wrong_length() {
        let k = key("a");
        let mut bytes = encoded(&k, b"payload");
        let len = bytes.len() as u64;
        bytes.push(0);
        assert!(matches!(
            read_verified(&mut &bytes[..], len, &k),
            Err(BadEntry::WrongLength { declared: 7, actual: 8 })
        ));
    }
}
