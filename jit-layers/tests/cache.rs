//! The object cache on real files in one process: round trips, sharing a directory between
//! handles, every kind of bad entry (detected, logged, counted, removed, replaced), the size cap
//! and least-recently-used eviction.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use jit_layers::{CacheError, CacheKey, CacheKeyBuilder, ObjectCache};

const MIB: u64 = 1 << 20;
/// The entry header's size; the on-disk format is documented in the cache module.
const HEADER_LEN: u64 = 88;

fn key(n: u64) -> CacheKey {
    CacheKeyBuilder::new().part("test object", &n.to_le_bytes()).finish()
}

/// Bytes that differ for every `n` and `len`, so a mix-up between entries cannot go unnoticed.
fn object(n: u64, len: usize) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn stored_objects_come_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path().join("nested/cache"), MIB).unwrap();
    assert_eq!(cache.get(&key(1)), None);
    cache.put(&key(1), &object(1, 5000)).unwrap();
    cache.put(&key(2), &[]).unwrap();
    assert_eq!(cache.get(&key(1)), Some(object(1, 5000)));
    assert_eq!(cache.get(&key(2)), Some(vec![]));
    assert_eq!(cache.get(&key(3)), None);

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt, stats.stores, stats.evictions), (2, 2, 0, 2, 0));
    assert_eq!(stats.bytes_on_disk, 5000 + 2 * HEADER_LEN);
    assert_eq!(stats.to_string(), "2 hits, 2 misses, 0 corrupt, 2 stores, 0 evictions, 5176 bytes on disk");
}

#[test]
fn a_later_put_of_the_same_key_replaces_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), MIB).unwrap();
    cache.put(&key(1), &object(1, 100)).unwrap();
    cache.put(&key(1), &object(2, 300)).unwrap();
    assert_eq!(cache.get(&key(1)), Some(object(2, 300)));
    assert_eq!(cache.stats().bytes_on_disk, 300 + HEADER_LEN);
}

#[test]
fn a_second_handle_on_the_directory_sees_entries_and_keeps_its_own_counts() {
    let dir = tempfile::tempdir().unwrap();
    let first = ObjectCache::open(dir.path(), MIB).unwrap();
    first.put(&key(1), &object(1, 64)).unwrap();
    let second = ObjectCache::open(dir.path(), MIB).unwrap();
    assert_eq!(second.get(&key(1)), Some(object(1, 64)));
    second.put(&key(2), &object(2, 64)).unwrap();
    assert_eq!(first.get(&key(2)), Some(object(2, 64)));

    let (a, b) = (first.stats(), second.stats());
    assert_eq!((a.hits, a.stores), (1, 1));
    assert_eq!((b.hits, b.stores), (1, 1));
    assert_eq!(a.bytes_on_disk, b.bytes_on_disk);

    let clone = first.clone();
    assert_eq!(clone.get(&key(1)), Some(object(1, 64)));
    assert_eq!(first.stats().hits, 2, "clones share counters");
}

#[test]
fn open_names_the_path_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"in the way").unwrap();
    let err = ObjectCache::open(&file, MIB).unwrap_err();
    assert!(matches!(&err, CacheError::Io { op: "create directory", path, .. } if path == &file), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
}

/// The program a JIT runs may change the working directory; the cache stays where it was.
#[test]
fn a_relative_directory_is_resolved_when_the_cache_is_opened() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let relative = dir.path().file_name().unwrap();
    let cache = ObjectCache::open(relative, MIB).unwrap();
    assert!(cache.dir().is_absolute(), "{}", cache.dir().display());
    assert_eq!(cache.dir(), fs::canonicalize(dir.path()).unwrap());
}

#[test]
fn an_object_larger_than_the_cap_is_refused_and_nothing_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), 1000).unwrap();
    cache.put(&key(1), &object(1, 100)).unwrap();
    let err = cache.put(&key(2), &object(2, 1000)).unwrap_err();
    assert!(matches!(err, CacheError::TooLarge { size: 1088, max_bytes: 1000, .. }), "{err:?}");
    assert_eq!(cache.get(&key(1)), Some(object(1, 100)));
    assert_eq!(cache.stats().stores, 1);
    assert_only_entries_in(dir.path());
}

/// Collects the warnings emitted on this thread, as "field=value" text.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Stores an entry, damages it with `damage`, and checks that the next `get` reports a miss, warns
/// naming the file and `problem`, counts it, removes it, and that a new `put` is then served.
fn bad_entry_is_caught(damage: impl FnOnce(&Path), problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), MIB).unwrap();
    let (k, good) = (key(7), object(7, 1000));
    cache.put(&k, &good).unwrap();
    let path = cache.entry_path(&k);
    damage(&path);

    let warnings = Warnings::default();
    let got = tracing::subscriber::with_default(warnings.clone(), || cache.get(&k));
    assert_eq!(got, None, "a bad entry ({problem}) was returned");
    let warnings = warnings.0.lock().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&path.display().to_string()), "warning does not name the file: {}", warnings[0]);
    assert!(warnings[0].contains(problem), "warning does not say '{problem}': {}", warnings[0]);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (0, 1, 1), "{problem}");
    assert!(fs::symlink_metadata(&path).is_err(), "bad entry ({problem}) was not removed");
    assert_eq!(stats.bytes_on_disk, 0);

    cache.put(&k, &good).unwrap();
    assert_eq!(cache.get(&k), Some(good));
    assert_eq!(cache.stats().corrupt, 1);
}

fn flip_byte(at: u64) -> impl FnOnce(&Path) {
    move |path| {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }
}

fn truncate_to(len: u64) -> impl FnOnce(&Path) {
    move |path| fs::File::options().write(true).open(path).unwrap().set_len(len).unwrap()
}

#[test]
fn a_truncated_payload_is_a_miss_and_replaced() {
    bad_entry_is_caught(truncate_to(HEADER_LEN + 500), "header declares 1000 payload bytes, file holds 500");
}

#[test]
fn a_truncated_header_is_a_miss_and_replaced() {
    bad_entry_is_caught(truncate_to(40), "truncated: 40 bytes");
}

#[test]
fn a_zero_length_file_is_a_miss_and_replaced() {
    bad_entry_is_caught(truncate_to(0), "truncated: 0 bytes");
}

#[test]
fn trailing_bytes_are_a_miss_and_replaced() {
    bad_entry_is_caught(
        |path| {
            let mut bytes = fs::read(path).unwrap();
            bytes.push(0);
            fs::write(path, bytes).unwrap();
        },
        "header declares 1000 payload bytes, file holds 1001",
    );
}

#[test]
fn a_flipped_byte_in_the_payload_is_a_miss_and_replaced() {
    bad_entry_is_caught(flip_byte(HEADER_LEN + 999), "payload checksum mismatch");
    bad_entry_is_caught(flip_byte(HEADER_LEN), "payload checksum mismatch");
}

#[test]
fn a_flipped_byte_anywhere_in_the_header_is_a_miss_and_replaced() {
    let problems = [(0..8, "bad magic"), (8..12, "format version"), (12..16, "reserved"), (16..48, "header names key")];
    for (range, problem) in problems {
        for at in range {
            bad_entry_is_caught(flip_byte(at), problem);
        }
    }
    for at in 48..56 {
        bad_entry_is_caught(flip_byte(at), "header declares");
    }
    for at in 56..HEADER_LEN {
        bad_entry_is_caught(flip_byte(at), "payload checksum mismatch");
    }
}

#[test]
fn an_entry_stored_under_another_key_is_a_miss_and_replaced() {
    bad_entry_is_caught(
        |path| {
            let dir = tempfile::tempdir().unwrap();
            let other = ObjectCache::open(dir.path(), MIB).unwrap();
            other.put(&key(8), &object(7, 1000)).unwrap();
            fs::copy(other.entry_path(&key(8)), path).unwrap();
        },
        &format!("header names key {}", key(8)),
    );
}

#[test]
fn a_file_that_is_not_an_entry_is_a_miss_and_replaced() {
    bad_entry_is_caught(|path| fs::write(path, vec![b'x'; 4096]).unwrap(), "bad magic");
}

#[test]
fn a_directory_in_place_of_an_entry_is_a_miss_and_replaced() {
    bad_entry_is_caught(
        |path| {
            fs::remove_file(path).unwrap();
            fs::create_dir(path).unwrap();
            fs::write(path.join("inside"), b"x").unwrap();
        },
        "not a regular file",
    );
}

#[test]
fn put_clears_a_directory_in_place_of_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), MIB).unwrap();
    fs::create_dir(cache.entry_path(&key(1))).unwrap();
    cache.put(&key(1), &object(1, 10)).unwrap();
    assert_eq!(cache.get(&key(1)), Some(object(1, 10)));
    assert_eq!(cache.stats().corrupt, 1);
}

#[test]
fn files_that_are_not_entries_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), vec![0u8; 5000]).unwrap();
    let cache = ObjectCache::open(dir.path(), 2000).unwrap();
    for n in 0..10 {
        cache.put(&key(n), &object(n, 300)).unwrap();
    }
    assert!(dir.path().join("README").exists());
    assert!(cache.stats().bytes_on_disk <= 2000);
}

/// Asserts that `dir` holds nothing but entries: no temporary file left behind.
fn assert_only_entries_in(dir: &Path) {
    for dirent in fs::read_dir(dir).unwrap() {
        let name = dirent.unwrap().file_name().into_string().unwrap();
        assert!(name.len() == 68 && name.ends_with(".obj"), "unexpected file {name}");
    }
}

#[test]
fn eviction_keeps_the_cap_and_removes_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let entry = 1000 + HEADER_LEN;
    let cache = ObjectCache::open(dir.path(), 10 * entry).unwrap();
    for n in 0..10 {
        cache.put(&key(n), &object(n, 1000)).unwrap();
    }
    assert_eq!(cache.stats().evictions, 0);
    // Hits refresh 0 and 1, so 2 and 3 are now the least recently used.
    assert!(cache.get(&key(0)).is_some());
    assert!(cache.get(&key(1)).is_some());
    cache.put(&key(10), &object(10, 1000)).unwrap();

    let present: Vec<u64> = (0..=10).filter(|&n| cache.entry_path(&key(n)).exists()).collect();
    // Over the cap, eviction goes down to nine tenths of it: two entries.
    assert_eq!(present, [0, 1, 4, 5, 6, 7, 8, 9, 10]);
    let stats = cache.stats();
    assert_eq!(stats.evictions, 2);
    assert_eq!(stats.bytes_on_disk, 9 * entry);
}

#[test]
fn a_hit_through_another_handle_counts_as_a_use() {
    let dir = tempfile::tempdir().unwrap();
    let entry = 1000 + HEADER_LEN;
    let writer = ObjectCache::open(dir.path(), 10 * entry).unwrap();
    let reader = ObjectCache::open(dir.path(), 10 * entry).unwrap();
    for n in 0..10 {
        writer.put(&key(n), &object(n, 1000)).unwrap();
    }
    assert!(reader.get(&key(0)).is_some());
    writer.put(&key(10), &object(10, 1000)).unwrap();
    let present: Vec<u64> = (0..=10).filter(|&n| writer.entry_path(&key(n)).exists()).collect();
    assert_eq!(present, [0, 3, 4, 5, 6, 7, 8, 9, 10]);
}

#[test]
fn the_cap_holds_after_every_put() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 20_000;
    let cache = ObjectCache::open(dir.path(), cap).unwrap();
    for n in 0..200 {
        cache.put(&key(n % 70), &object(n, (n as usize * 397) % 3000)).unwrap();
        if n % 3 == 0 {
            let _ = cache.get(&key(n / 2));
        }
        let on_disk = cache.stats().bytes_on_disk;
        assert!(on_disk <= cap, "{on_disk} bytes on disk after put {n}, cap {cap}");
    }
    let stats = cache.stats();
    assert!(stats.evictions > 0);
    assert_eq!(stats.corrupt, 0);
    assert_only_entries_in(dir.path());
}

#[test]
fn a_directory_left_with_entries_is_counted_by_a_new_handle() {
    let dir = tempfile::tempdir().unwrap();
    let entry = 1000 + HEADER_LEN;
    let old = ObjectCache::open(dir.path(), 100 * entry).unwrap();
    for n in 0..10 {
        old.put(&key(n), &object(n, 1000)).unwrap();
    }
    drop(old);
    // A smaller cap than the directory holds: the first put must notice and evict.
    let cache = ObjectCache::open(dir.path(), 5 * entry).unwrap();
    cache.put(&key(10), &object(10, 1000)).unwrap();
    let stats = cache.stats();
    assert!(stats.bytes_on_disk <= 5 * entry, "{stats}");
    assert!(cache.entry_path(&key(10)).exists());
    assert!(!cache.entry_path(&key(0)).exists());
}
