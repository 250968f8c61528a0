//! Misuse is an error, never undefined behaviour: abandon, double free through raw handles,
//! handles given to the wrong manager, forged handles, dropped handles.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use jit_mem::*;

fn finalized(mem: &dyn MemoryManager) -> FinalizedAlloc {
    mem.allocate(&small_object()).unwrap().finalize_blocking(Vec::new()).unwrap()
}

#[test]
fn abandon_releases_everything_and_reports_success() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut alloc = mem.allocate(&small_object()).unwrap();
        alloc.working_mut(0).unwrap().fill(0xCC);
        let (tx, rx) = std::sync::mpsc::channel();
        alloc.abandon(Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv().unwrap(), "{name}");
        let stats = mem.stats();
        assert_eq!((stats.in_use, stats.allocations), (0, 0), "{name}");
        // The abandoned bytes come back zeroed.
        let again = mem.allocate(&small_object()).unwrap();
        assert!(again.working(0).unwrap().iter().all(|&b| b == 0), "{name}");
    }
}

#[test]
fn dropping_an_in_flight_allocation_abandons_it() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        drop(mem.allocate(&small_object()).unwrap());
        assert_eq!(mem.stats().allocations, 0, "{name}");
    }
}

#[test]
fn a_double_free_through_a_raw_handle_is_an_error() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let raw = finalized(&*mem).into_raw();
        assert_eq!(mem.stats().allocations, 1, "{name}: a raw handle keeps the memory");
        let handle = FinalizedAlloc::from_raw(&*mem, raw).unwrap();
        mem.deallocate_blocking(vec![handle]).unwrap();
        let err = FinalizedAlloc::from_raw(&*mem, raw).unwrap_err();
        assert!(matches!(err, MemError::DoubleFree { .. }), "{name}: {err}");
        assert!(err.to_string().contains("double free"), "{name}: {err}");
        // The slot is reused by a new allocation; the stale raw handle still does not match.
        let newer = finalized(&*mem);
        let err = FinalizedAlloc::from_raw(&*mem, raw).unwrap_err();
        assert!(matches!(err, MemError::DoubleFree { .. }), "{name}: {err}");
        drop(newer);
    }
}

#[test]
fn adopting_a_raw_handle_twice_is_an_error() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let raw = finalized(&*mem).into_raw();
        let first = FinalizedAlloc::from_raw(&*mem, raw).unwrap();
        let err = FinalizedAlloc::from_raw(&*mem, raw).unwrap_err();
        assert!(matches!(err, MemError::HandleAlreadyLive { .. }), "{name}: {err}");
        drop(first);
        assert_eq!(mem.stats().allocations, 0, "{name}");
    }
}

#[test]
fn forged_and_foreign_raw_handles_are_errors() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let other = manager(name, ManagerConfig::default());
        let raw = finalized(&*other).into_raw();
        let err = FinalizedAlloc::from_raw(&*mem, raw).unwrap_err();
        assert!(matches!(err, MemError::ForeignAllocation { .. }), "{name}: {err}");
        let (id, bits) = raw.to_bits();
        let forged = RawFinalizedAlloc::from_bits(mem.id(), bits + 1000);
        let err = FinalizedAlloc::from_raw(&*mem, forged).unwrap_err();
        assert!(matches!(err, MemError::UnknownAllocation { .. }), "{name}: {err}");
        assert_eq!(id, other.id());
        FinalizedAlloc::from_raw(&*other, raw).unwrap();
    }
}

#[test]
fn deallocating_through_the_wrong_manager_is_an_error_and_does_not_leak() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let other = manager("dual", ManagerConfig::default());
        let theirs = finalized(&*other);
        let mine = finalized(&*mem);
        let err = mem.deallocate_blocking(vec![theirs, mine]).unwrap_err();
        assert!(matches!(err, MemError::ForeignAllocation { owner, .. } if owner == other.id()), "{name}: {err}");
        assert_eq!(other.stats().allocations, 0, "{name}: released by its owner");
        assert_eq!(mem.stats().allocations, 0, "{name}: the rest of the batch is released");
    }
}

#[test]
fn a_failing_deallocate_action_is_reported_and_the_memory_still_released() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let actions = vec![
            FinalizeAction::new(
                || Ok(()),
                move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            ),
            FinalizeAction::new(|| Ok(()), || Err("deregister failed".into())),
        ];
        let done = mem.allocate(&small_object()).unwrap().finalize_blocking(actions).unwrap();
        let err = mem.deallocate_blocking(vec![done]).unwrap_err();
        assert!(matches!(err, MemError::DeallocateAction { index: 1, .. }), "{name}: {err}");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{name}: the other action still ran");
        assert_eq!(mem.stats().allocations, 0, "{name}");
    }
}

#[test]
fn raw_handles_left_behind_get_their_deallocate_actions_when_the_manager_goes() {
    for name in ALL {
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let mem = manager(name, ManagerConfig::default());
            let r = ran.clone();
            let action = FinalizeAction::new(
                || Ok(()),
                move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            );
            let _raw = mem.allocate(&small_object()).unwrap().finalize_blocking(vec![action]).unwrap().into_raw();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{name}");
    }
}

#[test]
fn handles_keep_the_memory_mapped_after_the_manager_handle_is_dropped() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        let mut alloc = mem.allocate(&small_object()).unwrap();
        alloc.working_mut(0).unwrap()[..6].copy_from_slice(&return_imm_fn(77));
        let code = alloc.target(0).unwrap();
        let done = alloc.finalize_blocking(Vec::new()).unwrap();
        drop(mem);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: finalized code of signature fn() -> u32, kept mapped by `done`.
        assert_eq!(unsafe { call1(code, 0) }, 77, "{name}");
        drop(done);
    }
}

#[test]
fn an_allocation_tied_to_another_is_freed_with_it_or_when_its_callback_is_dropped() {
    for name in ALL {
        let mem = manager(name, ManagerConfig::default());
        // Freed with the allocation it is tied to.
        let child = finalized(&*mem).into_deallocate_action();
        let parent = mem
            .allocate(&small_object())
            .unwrap()
            .finalize_blocking(vec![FinalizeAction { finalize: Box::new(|| Ok(())), deallocate: Some(child) }]);
        assert_eq!(mem.stats().allocations, 2, "{name}");
        mem.deallocate_blocking(vec![parent.unwrap()]).unwrap();
        assert_eq!(mem.stats().allocations, 0, "{name}: the tied allocation went with its parent");
        // Freed when the callback is dropped uncalled.
        let child = finalized(&*mem).into_deallocate_action();
        assert_eq!(mem.stats().allocations, 1, "{name}");
        drop(child);
        assert_eq!(mem.stats().allocations, 0, "{name}: nothing leaks");
    }
}

#[test]
fn a_tied_allocation_makes_no_reference_cycle_through_a_raw_parent() {
    // The parent is kept only as a raw handle, so only dropping the manager releases it; the
    // tied callback must not keep the manager alive, and runs as a no-op when it goes.
    for name in ALL {
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let mem = manager(name, ManagerConfig::default());
            let child = finalized(&*mem).into_deallocate_action();
            let r = ran.clone();
            let action = FinalizeAction::new(
                || Ok(()),
                move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    child()
                },
            );
            let _raw = mem.allocate(&small_object()).unwrap().finalize_blocking(vec![action]).unwrap().into_raw();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{name}: the manager went, running the parent's action");
    }
}
