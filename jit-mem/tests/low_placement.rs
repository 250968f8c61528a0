//! `Placement::Low`: every manager's target reservation lies below 2 GiB − 16 MiB, where
//! code that takes absolute 32-bit addresses (non-PIC, small code model) runs; the
//! guarantees of the default placement hold there too.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use jit_mem::*;

fn low(reservation: u64) -> ManagerConfig {
    ManagerConfig::with_reservation(reservation).with_placement(Placement::Low)
}

/// `fn() -> u32 { *(u32 *)abs }` through a sign-extended 32-bit absolute address, as
/// `-fno-pic -mcmodel=small` code reads a global (`R_X86_64_32S`):
///   8B 04 25 <abs32>   mov eax, [abs32]   (MOV r32, r/m32: 8B /r; ModRM 00 000 100 with
///                                          SIB 00 100 101 = no base, no index, disp32:
///                                          Intel SDM vol. 2, table 2-3)
///   C3                 ret
fn load_absolute_fn(abs: TargetAddr) -> Vec<u8> {
    let abs = i32::try_from(abs.0).expect("a low address fits a sign-extended 32-bit field");
    let mut code = vec![0x8B, 0x04, 0x25];
    code.extend_from_slice(&abs.to_le_bytes());
    code.push(0xC3);
    code
}

#[test]
fn every_manager_places_its_targets_low_and_absolute_32_bit_code_runs_there() {
    for name in ALL {
        let mem = manager(name, low(64 << 20));
        let range = mem.reservation();
        assert!(range.end.0 <= LOW_PLACEMENT_LIMIT, "{name}: {range:?}");
        assert_eq!(range.end.0 - range.start.0, 64 << 20, "{name}");
        let mut alloc = mem.allocate(&small_object()).unwrap();
        let (code, rodata) = (alloc.target(0).unwrap(), alloc.target(1).unwrap());
        assert!(range.start <= code && rodata < range.end, "{name}");
        let f = load_absolute_fn(rodata);
        alloc.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
        alloc.working_mut(1).unwrap()[..4].copy_from_slice(&0x600D_C0DEu32.to_le_bytes());
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: finalized code of signature fn(u32) -> u32 (the argument is ignored).
        assert_eq!(unsafe { call1(code, 0) }, 0x600D_C0DE, "{name}");
        let stats = mem.stats();
        assert_eq!((stats.in_use, stats.allocations), (352, 1), "{name}: {stats:?}");
        assert!(stats.reserved >= 64 << 20, "{name}: {stats:?}");
        mem.deallocate_blocking(vec![done]).unwrap();
        let stats = mem.stats();
        assert_eq!((stats.in_use, stats.allocations), (0, 0), "{name}: {stats:?}");
        assert!(writable_executable_mappings().is_empty(), "{name}: no W+X mapping");
    }
}

#[test]
fn only_the_dual_mapped_target_view_is_low_its_working_view_may_lie_anywhere() {
    let mem = manager("dual", low(64 << 20));
    let mut alloc = mem.allocate(&small_object()).unwrap();
    let working = alloc.working_mut(0).unwrap().as_ptr() as u64;
    let target = alloc.target(0).unwrap();
    assert!(target.0 < LOW_PLACEMENT_LIMIT);
    assert!(!mem.reservation().contains(&TargetAddr(working)), "the working view is a second mapping");
    // Both views count as reserved.
    assert!(mem.stats().reserved >= 128 << 20, "{:?}", mem.stats());
}

#[test]
fn a_low_reservation_larger_than_the_low_address_space_is_a_clear_error() {
    for name in ALL {
        let err = match manager_by_name(name, low(MAX_RESERVATION)) {
            Some(Err(e)) => e,
            Some(Ok(_)) => panic!("{name}: 2 GiB cannot fit below 2 GiB - 16 MiB"),
            None => unreachable!(),
        };
        assert!(matches!(err, MemError::LowAddressSpaceExhausted { .. }), "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains("0x7f000000") && text.contains("2147483648 bytes"), "{name}: {text}");
    }
}

#[test]
fn low_managers_made_at_once_on_eight_threads_get_disjoint_ranges() {
    // The free-range search and MAP_FIXED_NOREPLACE race with each other: each thread must
    // end up with its own range, none clobbering another.
    let watchdog = Watchdog::start(Duration::from_secs(60));
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let name = ALL[i % ALL.len()];
                let mem = manager(name, low(32 << 20));
                let mut a = mem.allocate(&small_object()).unwrap();
                let f = return_imm_fn(i as u32);
                a.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
                let code = a.target(0).unwrap();
                let done = a.finalize_blocking(Vec::new()).unwrap();
                // SAFETY: finalized code of signature fn(u32) -> u32.
                assert_eq!(unsafe { call1(code, 0) }, i as u32);
                (mem, done)
            })
        })
        .collect();
    let held: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut ranges: Vec<_> = held.iter().map(|(m, _)| m.reservation()).collect();
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlapping low reservations: {pair:?}");
    }
    assert!(ranges.iter().all(|r| r.end.0 <= LOW_PLACEMENT_LIMIT));
    drop(held);
    watchdog.done();
}

/// Aborts the process if `done` is not called in time: a hang fails fast.
struct Watchdog(std::sync::mpsc::Sender<()>);

impl Watchdog {
    fn start(limit: Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: no progress within {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog(tx)
    }

    fn done(self) {
        let _ = self.0.send(());
    }
}
