//! The object cache under contention: threads of one process, and several processes (this test
//! binary re-run as children), putting, getting and evicting overlapping keys in one directory
//! with a small cap. Every byte a `get` returns is checked against what its key should hold, and
//! no reader may ever find a bad entry: that would mean it saw a partly written file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use jit_layers::{CacheKey, CacheKeyBuilder, ObjectCache};

const WATCHDOG: Duration = Duration::from_secs(120);
/// Set in a child process to the cache directory it should hammer.
const CHILD_DIR: &str = "ORCJIT_CACHE_TEST_CHILD_DIR";
const CHILD_SEED: &str = "ORCJIT_CACHE_TEST_CHILD_SEED";

fn key(n: u64) -> CacheKey {
    CacheKeyBuilder::new().part("shared object", &n.to_le_bytes()).finish()
}

/// What key `n` must hold: its length and bytes both depend on `n`.
fn object(n: u64) -> Vec<u8> {
    let len = (n as usize * 1543) % 12_000;
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs `f` on another thread, failing the test if it takes longer than the watchdog.
fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG).expect("watchdog: the cache hung")
}

/// Gets and (on a miss) puts keys drawn from `keys` in an order set by `seed`, checking every hit.
fn hammer(cache: &ObjectCache, seed: u64, keys: u64, rounds: u64) {
    let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    for round in 0..rounds {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = state % keys;
        match cache.get(&key(n)) {
            Some(bytes) => assert!(bytes == object(n), "key {n} returned the wrong bytes (round {round})"),
            None => cache.put(&key(n), &object(n)).unwrap(),
        }
    }
}

fn assert_every_entry_is_good(dir: &Path, keys: u64) {
    let cache = ObjectCache::open(dir, u64::MAX).unwrap();
    for n in 0..keys {
        if let Some(bytes) = cache.get(&key(n)) {
            assert!(bytes == object(n), "key {n} holds the wrong bytes");
        }
    }
    assert_eq!(cache.stats().corrupt, 0);
    for dirent in std::fs::read_dir(dir).unwrap() {
        let name = dirent.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".obj"), "left behind: {name}");
    }
}

#[test]
fn threads_sharing_a_cache_only_ever_read_whole_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), 150_000).unwrap();
    let (threads, rounds, keys) = (8, 300, 48);
    let worker_cache = cache.clone();
    watched(move || {
        std::thread::scope(|s| {
            for t in 0..threads {
                let cache = &worker_cache;
                s.spawn(move || hammer(cache, t + 1, keys, rounds));
            }
        })
    });
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, threads * rounds);
    assert_eq!(stats.corrupt, 0, "{stats}");
    assert!(stats.hits > 0 && stats.evictions > 0, "the test should exercise hits and eviction: {stats}");
    assert!(stats.bytes_on_disk <= 150_000, "{stats}");
    assert_every_entry_is_good(dir.path(), keys);
}

#[test]
fn threads_putting_one_key_at_once_leave_one_good_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ObjectCache::open(dir.path(), 1 << 20).unwrap();
    let worker_cache = cache.clone();
    watched(move || {
        std::thread::scope(|s| {
            for _ in 0..8 {
                let cache = &worker_cache;
                s.spawn(move || {
                    for _ in 0..25 {
                        cache.put(&key(5), &object(5)).unwrap();
                        assert!(cache.get(&key(5)).is_some_and(|bytes| bytes == object(5)));
                    }
                });
            }
        })
    });
    let stats = cache.stats();
    assert_eq!((stats.stores, stats.hits, stats.misses, stats.corrupt), (200, 200, 0, 0));
    assert_every_entry_is_good(dir.path(), 6);
}

/// In a child, hammers the directory named by the environment; in the parent, starts the children
/// (this binary, running only this test) and checks what they leave.
#[test]
fn processes_sharing_a_directory_only_ever_read_whole_entries() {
    let (processes, rounds, keys, cap) = (4, 300, 48, 150_000);
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
        // A child hung on the file system must not outlive the test: it ends itself.
        let (done, finished) = crossbeam_channel::bounded::<()>(1);
        std::thread::spawn(move || {
            if finished.recv_timeout(WATCHDOG).is_err() {
                eprintln!("watchdog: child {seed} hung");
                std::process::exit(3);
            }
        });
        let cache = ObjectCache::open(&dir, cap).unwrap();
        let thread_cache = cache.clone();
        std::thread::scope(|s| {
            s.spawn(|| hammer(&thread_cache, seed * 100 + 1, keys, rounds));
            hammer(&cache, seed * 100 + 2, keys, rounds);
        });
        let stats = cache.stats();
        println!("child {seed}: {stats}");
        assert_eq!(stats.corrupt, 0, "child {seed} found a bad entry: {stats}");
        let _ = done.send(());
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (1..=processes)
        .map(|seed| {
            Command::new(&exe)
                .args(["--exact", "processes_sharing_a_directory_only_ever_read_whole_entries", "--nocapture"])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_SEED, seed.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs =
        watched(move || children.into_iter().map(|child| child.wait_with_output().unwrap()).collect::<Vec<_>>());
    for (i, output) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child {} failed ({}):\n{stdout}\n{}",
            i + 1,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&format!("child {}: ", i + 1)), "child {} ran no test:\n{stdout}", i + 1);
    }
    assert_every_entry_is_good(dir.path(), keys);
    let on_disk = ObjectCache::open(dir.path(), cap).unwrap().stats().bytes_on_disk;
    // Each process keeps the cap at its own listings; between them the excess is bounded by about
    // a tenth of the cap per process (see ObjectCache).
    assert!(on_disk <= cap + cap / 10 * processes, "{on_disk} bytes on disk, cap {cap}");
}
