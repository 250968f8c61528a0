//! Allocate, write through the working view, finalize, run through the target view,
//! deallocate, reuse: on every manager, with real mappings and real x86-64 code.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use jit_mem::*;

fn write_small_object(alloc: &mut InFlightAlloc, addend: u32) -> TargetAddr {
    let code_target = alloc.target(0).unwrap();
    let rodata_target = alloc.target(1).unwrap();
    let mut views = alloc.working_views();
    assert!(views.iter().all(|v| v.bytes.iter().all(|&b| b == 0)), "working views start zero-filled");
    let code = add_rodata_fn(code_target, rodata_target);
    views[0].bytes[..code.len()].copy_from_slice(&code);
    views[1].bytes[..4].copy_from_slice(&addend.to_le_bytes());
    views[2].bytes[..8].copy_from_slice(b"data!!!!");
    code_target
}

#[test]
fn code_written_through_the_working_view_runs_at_the_target_address() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut alloc = mem.allocate(&small_object()).unwrap();
        for seg in alloc.segments() {
            let range = mem.reservation();
            assert!(
                range.start <= seg.target && seg.target.offset(seg.size) <= range.end,
                "{name}: inside the reservation"
            );
        }
        let code = write_small_object(&mut alloc, 1000);
        let data = alloc.target(2).unwrap();
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: finalized code of signature fn(u32) -> u32.
        assert_eq!(unsafe { call1(code, 7) }, 1007, "{name}");
        // SAFETY: the RW segment of a live allocation.
        assert_eq!(unsafe { read_target(data, 8) }, b"data!!!!", "{name}");
        let stats = mem.stats();
        assert_eq!(stats.in_use, 352, "{name}");
        assert_eq!(stats.allocations, 1, "{name}");
        assert!(stats.committed >= 352 && stats.mappings > 0 && stats.reserved >= 1 << 30, "{name}: {stats:?}");
        mem.deallocate_blocking(vec![done]).unwrap();
        let stats = mem.stats();
        assert_eq!((stats.in_use, stats.allocations), (0, 0), "{name}");
    }
}

#[test]
fn freed_memory_is_reused_and_comes_back_zeroed() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut first = mem.allocate(&small_object()).unwrap();
        let code = write_small_object(&mut first, 1);
        first.working_mut(1).unwrap().fill(0xAB);
        let done = first.finalize_blocking(Vec::new()).unwrap();
        mem.deallocate_blocking(vec![done]).unwrap();

        let mut second = mem.allocate(&small_object()).unwrap();
        assert_eq!(second.target(0), Some(code), "{name}: the freed code space is reused");
        let again = write_small_object(&mut second, 2);
        let done = second.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: finalized code of signature fn(u32) -> u32.
        assert_eq!(unsafe { call1(again, 40) }, 42, "{name}");
        drop(done);
        assert_eq!(mem.stats().allocations, 0, "{name}: dropping a handle deallocates it");
    }
}

#[test]
fn many_small_objects_share_slabs_and_pages() {
    for name in ["dual", "mprotect", "mprotect-in-place"] {
        let mem = manager(name, ManagerConfig::default());
        let mut inflight: Vec<_> = (0..64).map(|_| mem.allocate(&small_object()).unwrap()).collect();
        let code_pages: std::collections::HashSet<u64> =
            inflight.iter().map(|a| a.target(0).unwrap().0 / 4096).collect();
        assert!(code_pages.len() <= 5, "{name}: 64 x 256 B of code fit in 4-5 pages, got {}", code_pages.len());
        let mut done = Vec::new();
        let mut codes = Vec::new();
        for (i, mut a) in inflight.drain(..).enumerate() {
            codes.push((write_small_object(&mut a, i as u32), i as u32));
            done.push(a);
        }
        // Finalize all from this thread: with mprotect sealing, each finalize completes when
        // the last neighbour on its pages finalizes, so collect results asynchronously.
        let (tx, rx) = crossbeam_channel::unbounded();
        for a in done {
            let tx = tx.clone();
            a.finalize(Vec::new(), Box::new(move |r| tx.send(r).unwrap()));
        }
        let finalized: Vec<FinalizedAlloc> =
            (0..64).map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap().unwrap()).collect();
        for (code, i) in codes {
            // SAFETY: finalized code of signature fn(u32) -> u32.
            assert_eq!(unsafe { call1(code, 5) }, 5 + i, "{name}");
        }
        let stats = mem.stats();
        assert!(stats.committed as f64 / stats.in_use as f64 <= 1.25, "{name}: {stats:?}");
        mem.deallocate_blocking(finalized).unwrap();
    }
}

#[test]
fn objects_finalized_one_at_a_time_still_share_pages() {
    // A JIT links one object at a time: each is allocated, written and finalized before the
    // next. The slab managers must still pack them (issue 3: committed/requested <= 1.25).
    for name in ["dual", "mprotect"] {
        let mem = manager(name, ManagerConfig::default());
        let mut live = Vec::new();
        for i in 0..2000u32 {
            let mut alloc = mem.allocate(&small_object()).unwrap();
            let code = write_small_object(&mut alloc, i);
            live.push((code, i, alloc.finalize_blocking(Vec::new()).unwrap()));
        }
        for (code, i, _) in &live {
            // SAFETY: finalized code of signature fn(u32) -> u32.
            assert_eq!(unsafe { call1(*code, 1) }, 1 + i, "{name}");
        }
        let stats = mem.stats();
        assert_eq!(stats.in_use, 2000 * 352, "{name}");
        assert!(stats.committed as f64 / stats.in_use as f64 <= 1.25, "{name}: {stats:?}");
        let maps = maps::process_mappings().unwrap();
        for (code, _, _) in &live {
            let m = maps.iter().find(|m| m.range.contains(&code.0)).expect("code is mapped");
            assert!(m.read && m.exec && !m.write, "{name}: code runs from r-x pages: {m:?}");
        }
        mem.deallocate_blocking(live.into_iter().map(|(_, _, d)| d).collect()).unwrap();
    }
}

#[test]
fn the_mprotect_manager_writes_through_proc_self_mem_here_and_in_place_on_request() {
    let auto = MprotectSlabManager::new(ManagerConfig::default()).unwrap();
    assert_eq!(auto.writes(), MprotectWrites::ProcSelfMem, "this kernel allows writes through /proc/self/mem");
    let in_place = MprotectSlabManager::with_writes(ManagerConfig::default(), MprotectWrites::InPlace).unwrap();
    assert_eq!(in_place.writes(), MprotectWrites::InPlace);
}

#[test]
fn finalize_actions_run_in_order_and_deallocate_actions_in_reverse() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let log = Arc::new(parking_lot_free_log::Log::default());
        let mut alloc = mem.allocate(&small_object()).unwrap();
        let code = write_small_object(&mut alloc, 3);
        let actions = (0..3)
            .map(|i| {
                let (a, b) = (log.clone(), log.clone());
                FinalizeAction::new(
                    move || {
                        // The memory is final when actions run: the code can be called.
                        // SAFETY: finalized code of signature fn(u32) -> u32.
                        assert_eq!(unsafe { call1(code, 0) }, 3);
                        a.push(format!("fin{i}"));
                        Ok(())
                    },
                    move || {
                        b.push(format!("dealloc{i}"));
                        Ok(())
                    },
                )
            })
            .collect();
        let done = alloc.finalize_blocking(actions).unwrap();
        assert_eq!(log.take(), ["fin0", "fin1", "fin2"], "{name}");
        mem.deallocate_blocking(vec![done]).unwrap();
        assert_eq!(log.take(), ["dealloc2", "dealloc1", "dealloc0"], "{name}");
    }
}

#[test]
fn a_failing_finalize_action_releases_the_allocation_and_unwinds_earlier_actions() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let undone = Arc::new(AtomicUsize::new(0));
        let mut alloc = mem.allocate(&small_object()).unwrap();
        write_small_object(&mut alloc, 0);
        let u = undone.clone();
        let actions = vec![
            FinalizeAction::new(
                || Ok(()),
                move || {
                    u.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            ),
            FinalizeAction::on_finalize(|| Err("eh_frame registration refused".into())),
            FinalizeAction::on_finalize(|| panic!("actions after a failure must not run")),
        ];
        let err = alloc.finalize_blocking(actions).unwrap_err();
        assert!(matches!(err, MemError::FinalizeAction { index: 1, .. }), "{name}: {err}");
        assert!(err.to_string().contains("eh_frame registration refused"), "{name}: {err}");
        assert_eq!(undone.load(Ordering::SeqCst), 1, "{name}");
        let stats = mem.stats();
        assert_eq!((stats.in_use, stats.allocations), (0, 0), "{name}");
    }
}

#[test]
fn finalize_only_segments_are_released_after_finalization() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut req = small_object();
        req.segments.push(SegmentRequest::new(Prot::R, 512, 8).with_lifetime(SegmentLifetime::FinalizeOnly));
        let mut alloc = mem.allocate(&req).unwrap();
        write_small_object(&mut alloc, 0);
        let init = alloc.target(3).unwrap();
        alloc.working_mut(3).unwrap()[0] = 0x5A;
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let action = FinalizeAction::on_finalize(move || {
            // SAFETY: finalize-only segments live until the finalize actions have run.
            s.store(unsafe { read_target(init, 1) }[0] as usize, Ordering::SeqCst);
            Ok(())
        });
        let done = alloc.finalize_blocking(vec![action]).unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0x5A, "{name}");
        assert_eq!(mem.stats().in_use, 352, "{name}: the finalize-only segment is gone");
        drop(done);
    }
}

#[test]
fn a_segment_of_several_mebibytes_works() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let size = 6 << 20;
        let req = AllocRequest::new(vec![
            SegmentRequest::new(Prot::RX, size, 4096),
            SegmentRequest::new(Prot::RW, 3 << 20, 64),
        ]);
        let mut alloc = mem.allocate(&req).unwrap();
        let code = return_imm_fn(0xC0DE);
        let tail = size as usize - 4096;
        alloc.working_mut(0).unwrap()[tail..tail + code.len()].copy_from_slice(&code);
        let entry = alloc.target(0).unwrap().offset(tail as u64);
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        // SAFETY: finalized code of signature fn() -> u32 (the argument is ignored).
        assert_eq!(unsafe { call1(entry, 0) }, 0xC0DE, "{name}");
        drop(done);
        // Another small object still fits after the large one is gone.
        let small = mem.allocate(&small_object()).unwrap();
        small.abandon(Box::new(|r| r.unwrap()));
    }
}

/// A data segment of most of the largest reservation fits, wherever the kernel puts the
/// reservation: a multiple of 4 GiB (whose page is never handed out) no longer falls inside it
/// and cuts its free space in two (before, half of such reservations refused the segment).
#[test]
fn a_segment_of_most_of_the_largest_reservation_fits_wherever_the_reservation_lies() {
    for name in ALL {
        for _ in 0..8 {
            let mem = manager(name, ManagerConfig::with_reservation(MAX_RESERVATION));
            let range = mem.reservation();
            // No multiple of 4 GiB in (start, last]: both lie in one 4 GiB block.
            let (start, last) = (range.start.0, range.end.0 - 1);
            assert_eq!(start >> 32, last >> 32, "{name}: {start:#x}..={last:#x} straddles a multiple of 4 GiB");
            let big = MAX_RESERVATION - (64 << 20);
            let req = AllocRequest::new(vec![
                SegmentRequest::new(Prot::RX, 4096, 16),
                SegmentRequest::new(Prot::RW, big, 64),
            ]);
            let mut alloc = mem.allocate(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Only what is touched becomes memory: the ends of the segment.
            let rw = alloc.working_mut(1).unwrap();
            rw[0] = 1;
            rw[big as usize - 1] = 2;
            alloc.abandon(Box::new(|r| r.unwrap()));
        }
    }
}

/// What `/proc/self/maps` says of the page at `addr`: (readable, writable), or `None` if
/// nothing is mapped there.
fn protection_at(addr: u64) -> Option<(bool, bool)> {
    let maps = jit_mem::maps::process_mappings().unwrap();
    maps.iter().find(|m| m.range.contains(&addr)).map(|m| (m.read, m.write))
}

/// Data larger than any reservation (x86-64's large data sections may hold arrays of many
/// GiB) is allocated apart: it gets its protections, costs no memory where untouched, and its
/// mapping goes with the allocation. Code is refused there.
#[test]
fn data_larger_than_any_reservation_is_allocated_apart_and_released_with_it() {
    let big = 3 * MAX_RESERVATION / 2;
    let req = AllocRequest::new(vec![
        SegmentRequest::new(Prot::RW, big, 4096),
        SegmentRequest::new(Prot::R, 100, 64),
        SegmentRequest::new(Prot::RW, 0, 8),
    ]);
    for tied_to_an_action in [false, true] {
        let mut alloc = PageAllocator::allocate_apart(&req).unwrap();
        let (data, rodata) = (alloc.target(0).unwrap().0, alloc.target(1).unwrap().0);
        assert_eq!(data % 4096, 0);
        assert_eq!(rodata % 64, 0);
        let rw = alloc.working_mut(0).unwrap();
        assert_eq!(rw.len() as u64, big);
        assert_eq!((rw[0], rw[big as usize - 1]), (0, 0), "zero-filled");
        rw[0] = 1;
        rw[big as usize - 1] = 2;
        alloc.working_mut(1).unwrap()[99] = 3;
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        assert_eq!(protection_at(data), Some((true, true)));
        assert_eq!(protection_at(rodata), Some((true, false)), "read-only once finalized");
        // SAFETY: both segments are finalized, readable and owned by `done`.
        let (first, last, ro) =
            unsafe { (*(data as *const u8), *((data + big - 1) as *const u8), *((rodata + 99) as *const u8)) };
        assert_eq!((first, last, ro), (1, 2, 3));
        if tied_to_an_action {
            let release = done.into_deallocate_action();
            assert_eq!(protection_at(data), Some((true, true)), "the action keeps the allocation");
            release().unwrap();
        } else {
            drop(done);
        }
        assert_eq!(protection_at(data), None, "released with the allocation");
        assert_eq!(protection_at(rodata), None);
    }

    let code = AllocRequest::new(vec![SegmentRequest::new(Prot::RW, 64, 8), SegmentRequest::new(Prot::RX, 16, 16)]);
    let err = PageAllocator::allocate_apart(&code).unwrap_err();
    assert!(matches!(err, MemError::CodeApart { segment: 1, size: 16, .. }), "{err}");
    let odd = AllocRequest::new(vec![SegmentRequest::new(Prot::RW, 64, 3)]);
    assert!(matches!(PageAllocator::allocate_apart(&odd), Err(MemError::InvalidAlignment { segment: 0, .. })));
    // More than the address space: an error naming the size, not an overflow.
    for size in [u64::MAX - 10, 1 << 62] {
        let huge = AllocRequest::new(vec![SegmentRequest::new(Prot::RW, size, 8), SegmentRequest::new(Prot::R, 1, 8)]);
        let err = PageAllocator::allocate_apart(&huge).unwrap_err();
        assert!(matches!(err, MemError::Os { op: "reserve", len, .. } if len > size), "{err}");
    }
}

#[test]
fn running_out_of_the_reservation_is_an_error_and_recoverable() {
    for name in ALL {
        let mem = manager(name, ManagerConfig { reservation: 4 << 20, slab: 1 << 20, ..ManagerConfig::default() });
        assert!(mem.reservation().end.0 - mem.reservation().start.0 == 4 << 20);
        let too_big = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 5 << 20, 16)]);
        assert!(matches!(mem.allocate(&too_big), Err(MemError::SegmentTooLarge { .. })), "{name}");
        let chunk = AllocRequest::new(vec![SegmentRequest::new(Prot::RX, 1 << 20, 16)]);
        let mut held = Vec::new();
        let err = loop {
            match mem.allocate(&chunk) {
                Ok(a) => held.push(a),
                Err(e) => break e,
            }
            assert!(held.len() <= 4, "{name}: more 1 MiB chunks than a 4 MiB reservation holds");
        };
        assert!(matches!(err, MemError::ReservationExhausted { .. }), "{name}: {err}");
        assert!(err.to_string().contains("exhausted"), "{name}: {err}");
        held.clear();
        mem.allocate(&chunk).expect("room again after freeing");
    }
}

#[test]
fn bad_requests_and_configurations_are_errors() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        for align in [0, 3, 1 << 20] {
            let req = AllocRequest::new(vec![SegmentRequest::new(Prot::R, 8, align)]);
            assert!(matches!(mem.allocate(&req), Err(MemError::InvalidAlignment { .. })), "{name} align {align}");
        }
        let big = AllocRequest::new(vec![SegmentRequest::new(Prot::RW, 100, MAX_ALIGN)]);
        let a = mem.allocate(&big).unwrap();
        assert_eq!(a.target(0).unwrap().0 % MAX_ALIGN, 0, "{name}");
        let empty = mem.allocate(&AllocRequest::default()).unwrap();
        assert!(empty.is_empty());
        empty.finalize_blocking(Vec::new()).unwrap();
        match manager_by_name(name, ManagerConfig::with_reservation(3 << 30)) {
            Some(Err(MemError::InvalidReservation { .. })) => {}
            other => panic!("{name}: a 3 GiB reservation must be refused, got {:?}", other.map(|r| r.map(|m| m.id()))),
        }
    }
}

/// A tiny thread-safe log for ordering checks.
mod parking_lot_free_log {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Log(Mutex<Vec<String>>);

    impl Log {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}
