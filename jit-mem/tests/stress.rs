//! Many threads allocating, finalizing, running and freeing at once, with content checks,
//! while another thread scans /proc/self/maps for any mapping that is writable and executable.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use jit_mem::*;
use rand::{Rng, SeedableRng};

const THREADS: usize = 8;
/// A hang fails the test after this long instead of blocking CI.
const WATCHDOG: Duration = Duration::from_secs(120);

struct Live {
    done: FinalizedAlloc,
    code: TargetAddr,
    rodata: TargetAddr,
    data: TargetAddr,
    tag: u32,
}

fn tag_bytes(tag: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Checks every byte another thread could have clobbered.
fn check(live: &Live) {
    // SAFETY: finalized code of signature fn() -> u32 owned by `live.done`.
    let returned = unsafe { call1(live.code, 0) };
    assert_eq!(returned, live.tag, "code of object {:#x} was overwritten", live.tag);
    // SAFETY: the R and RW segments of a live allocation.
    unsafe {
        assert_eq!(read_target(live.rodata, 64), tag_bytes(live.tag, 64), "rodata of {:#x}", live.tag);
        assert_eq!(read_target(live.data, 32), tag_bytes(!live.tag, 32), "data of {:#x}", live.tag);
    }
}

fn worker(mem: Arc<dyn MemoryManager>, thread: usize, rounds: usize, checked: Arc<AtomicU64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(thread as u64);
    let mut live: Vec<Live> = Vec::new();
    for round in 0..rounds {
        let tag = ((thread as u32) << 24) | round as u32;
        let mut alloc = mem.allocate(&small_object()).unwrap();
        let (code, rodata, data) = (alloc.target(0).unwrap(), alloc.target(1).unwrap(), alloc.target(2).unwrap());
        {
            let mut views = alloc.working_views();
            assert!(views.iter().all(|v| v.bytes.iter().all(|&b| b == 0)), "fresh allocation not zeroed");
            let f = return_imm_fn(tag);
            views[0].bytes[..f.len()].copy_from_slice(&f);
            // Fill the rest of the code segment with int3 (CC) so a stray jump traps.
            views[0].bytes[f.len()..].fill(0xCC);
            views[1].bytes.copy_from_slice(&tag_bytes(tag, 64));
            views[2].bytes.copy_from_slice(&tag_bytes(!tag, 32));
        }
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        let entry = Live { done, code, rodata, data, tag };
        check(&entry);
        live.push(entry);
        // Keep a window of live objects; free random ones, batched, after checking them.
        if live.len() > 24 || rng.random_bool(0.05) {
            let mut batch = Vec::new();
            for _ in 0..rng.random_range(1..=live.len().min(8)) {
                let victim = live.swap_remove(rng.random_range(0..live.len()));
                check(&victim);
                batch.push(victim.done);
            }
            mem.deallocate_blocking(batch).unwrap();
        }
        if round % 64 == 0 {
            live.iter().for_each(check);
        }
        checked.fetch_add(1, Ordering::Relaxed);
    }
    live.iter().for_each(check);
    mem.deallocate_blocking(live.into_iter().map(|l| l.done).collect()).unwrap();
}

fn stress(name: &str, rounds: usize) {
    stress_with(name, rounds, ManagerConfig::default());
}

fn stress_with(name: &str, rounds: usize, config: ManagerConfig) {
    let mem = manager(name, config);
    let checked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<thread::Result<()>>();

    // The W^X scanner: reads /proc/self/maps in a loop for as long as the workers run.
    let scanner = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut scans = 0u64;
            let mut offenders = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                offenders.extend(writable_executable_mappings());
                scans += 1;
            }
            (scans, offenders)
        })
    };

    for t in 0..THREADS {
        let (mem, checked, tx) = (mem.clone(), checked.clone(), done_tx.clone());
        thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker(mem, t, rounds, checked)));
            let _ = tx.send(result);
        });
    }
    for _ in 0..THREADS {
        match done_rx.recv_timeout(WATCHDOG) {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => {
                stop.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(panic);
            }
            Err(_) => panic!("{name}: watchdog: workers made {} rounds, then hung", checked.load(Ordering::Relaxed)),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (scans, offenders) = scanner.join().unwrap();
    assert!(scans > 0, "the scanner ran");
    assert!(offenders.is_empty(), "{name}: writable+executable mappings seen: {offenders:?}");
    assert_eq!(checked.load(Ordering::Relaxed), (THREADS * rounds) as u64);
    let stats = mem.stats();
    assert_eq!((stats.in_use, stats.allocations), (0, 0), "{name}: everything freed: {stats:?}");
}

#[test]
fn dual_mapped_survives_eight_threads_with_no_wx_mapping() {
    stress("dual", 2000);
}

#[test]
fn mprotect_slab_survives_eight_threads_with_no_wx_mapping() {
    stress("mprotect", 2000);
}

#[test]
fn mprotect_slab_sealing_in_place_survives_eight_threads_with_no_wx_mapping() {
    stress("mprotect-in-place", 2000);
}

#[test]
fn page_allocator_survives_eight_threads_with_no_wx_mapping() {
    stress("page", 500);
}

#[test]
fn low_placed_managers_survive_eight_threads_with_no_wx_mapping() {
    let low = ManagerConfig::with_reservation(256 << 20).with_placement(Placement::Low);
    for (name, rounds) in [("dual", 1000), ("mprotect", 1000), ("mprotect-in-place", 1000), ("page", 250)] {
        stress_with(name, rounds, low);
    }
}

#[test]
fn in_flight_neighbours_finalized_from_other_threads_all_complete() {
    // The mprotect manager's sealing waits for page neighbours: hold many allocations in
    // flight at once, finalize them from several threads in shuffled order, and require every
    // finalize to complete (under the watchdog) with intact content.
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut allocs: Vec<(InFlightAlloc, u32)> = (0..400u32)
            .map(|i| {
                let mut a = mem.allocate(&small_object()).unwrap();
                let f = return_imm_fn(i);
                a.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
                (a, i)
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in (1..allocs.len()).rev() {
            allocs.swap(i, rng.random_range(0..=i));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut chunks: Vec<Vec<(InFlightAlloc, u32)>> = (0..THREADS).map(|_| Vec::new()).collect();
        for (i, a) in allocs.into_iter().enumerate() {
            chunks[i % THREADS].push(a);
        }
        let abandoned = Arc::new(AtomicU64::new(0));
        for chunk in chunks {
            let (tx, abandoned) = (tx.clone(), abandoned.clone());
            thread::spawn(move || {
                for (a, i) in chunk {
                    let code = a.target(0).unwrap();
                    if i % 10 == 3 {
                        // Some neighbours are abandoned instead: their pages must still seal.
                        abandoned.fetch_add(1, Ordering::Relaxed);
                        drop(a);
                        continue;
                    }
                    let tx = tx.clone();
                    a.finalize(Vec::new(), Box::new(move |r| tx.send((r, code, i)).unwrap()));
                }
            });
        }
        let expected = 400 - 40;
        let mut finalized = Vec::new();
        for _ in 0..expected {
            let (r, code, i) =
                rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("{name}: a finalize never completed"));
            // SAFETY: finalized code of signature fn() -> u32.
            assert_eq!(unsafe { call1(code, 0) }, i, "{name}");
            finalized.push(r.unwrap());
        }
        assert_eq!(abandoned.load(Ordering::Relaxed), 40);
        mem.deallocate_blocking(finalized).unwrap();
        assert_eq!(mem.stats().allocations, 0, "{name}");
    }
}
