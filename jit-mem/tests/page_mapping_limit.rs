//! The page allocator at the kernel's mapping limit: it reports an error naming
//! vm.max_map_count instead of crashing. In its own test binary (its own process) because
//! it exhausts the process's mappings.

use jit_mem::*;

mod common;

#[test]
fn the_page_allocator_reports_the_mapping_limit_as_an_error() {
    let limit = maps::max_map_count();
    if limit > 300_000 {
        // A raised limit would take too long to reach; nothing to prove here.
        return;
    }
    let mem = common::manager("page", ManagerConfig::default());
    let mut held = Vec::new();
    let err = loop {
        let alloc = match mem.allocate(&common::small_object()) {
            Ok(a) => a,
            Err(e) => break e,
        };
        match alloc.finalize_blocking(Vec::new()) {
            Ok(done) => held.push(done),
            Err(e) => break e,
        }
        assert!(held.len() as u64 <= limit, "more objects than the mapping limit allows");
    };
    let objects = held.len() as u64;
    let stats = mem.stats();
    // Free everything before asserting: the harness needs mappings to report results.
    mem.deallocate_blocking(held).unwrap();
    assert!(matches!(err, MemError::MappingLimit { .. }), "{err}");
    assert!(err.to_string().contains("vm.max_map_count"), "{err}");
    assert!(objects > limit / 4 && objects < limit / 2, "about 3 mappings per object: {objects} objects, {stats:?}");
    assert!(stats.mappings > limit * 9 / 10, "{stats:?}");
    assert_eq!(mem.stats().allocations, 0);
}
