//! Running out of the low address space: low managers are made until no free range below
//! 2 GiB − 16 MiB is left, which is a clear error, and dropping one makes room again. In its
//! own test binary (its own process), as it takes the whole low address space.
#![cfg(target_arch = "x86_64")]

mod common;

use jit_mem::*;

#[test]
fn low_managers_exhaust_the_low_address_space_with_a_clear_error_and_recover() {
    let config = ManagerConfig::with_reservation(256 << 20).with_placement(Placement::Low);
    let mut held = Vec::new();
    let err = loop {
        match manager_by_name("dual", config) {
            Some(Ok(m)) => held.push(m),
            Some(Err(e)) => break e,
            None => unreachable!(),
        }
        // 2 GiB - 16 MiB holds at most seven 256 MiB ranges.
        assert!(held.len() <= 7, "more low reservations than fit below the limit");
    };
    assert!(!held.is_empty(), "at least one low reservation fits in a fresh process");
    assert!(matches!(err, MemError::LowAddressSpaceExhausted { requested, .. } if requested == 256 << 20), "{err}");
    assert!(err.to_string().contains("no free range of 268435456 bytes below 0x7f000000"), "{err}");
    let mut ranges: Vec<_> = held.iter().map(|m| m.reservation()).collect();
    ranges.sort_by_key(|r| r.start);
    assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start), "{ranges:?}");
    // The first was placed highest: as close to the limit as the alignment allows.
    assert!(LOW_PLACEMENT_LIMIT - held[0].reservation().end.0 < MAX_ALIGN, "{:?}", held[0].reservation());

    held.pop();
    let again = manager_by_name("mprotect", config).expect("known manager").expect("room again after dropping one");
    let req = common::small_object();
    again.allocate(&req).unwrap().finalize_blocking(Vec::new()).unwrap();
}
