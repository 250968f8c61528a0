//! `Placement::near_libc()` with the dual-mapped manager: the targets of two managers of the
//! default size lie within reach of libc, and their working views out of it. One test in a
//! process of its own: other tests' managers would take the room near libc meanwhile.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use jit_mem::*;

/// Placed by the kernel, the first manager's working view took the free space just below the
/// libraries and its target the space above them, so a second near-libc manager found no room
/// on either side and went anywhere, where PIE code reaching libc's variables cannot link.
#[test]
fn two_near_libc_managers_fit_because_working_views_keep_out_of_libc_s_reach() {
    let Placement::Near(environ) = Placement::near_libc() else { panic!("the loader does not know libc's environ") };
    let config = ManagerConfig::default().with_placement(Placement::near_libc());
    let managers = [manager("dual", config), manager("dual", config)];
    for (i, mem) in managers.iter().enumerate() {
        let range = mem.reservation();
        let farthest = environ.abs_diff(range.start.0).max(environ.abs_diff(range.end.0));
        assert!(
            farthest <= NEAR_REACH,
            "manager {i}: target {range:x?} reaches {farthest:#x} past environ {environ:#x}"
        );
        let mut alloc = mem.allocate(&small_object()).unwrap();
        let code = alloc.target(0).unwrap();
        let view = alloc.working_mut(0).unwrap().as_ptr() as u64;
        assert_ne!(view, code.0, "manager {i}: dual-mapped, so the working view lies apart");
        assert!(
            view.abs_diff(environ) > NEAR_REACH,
            "manager {i}: the working view at {view:#x} takes room within reach of environ {environ:#x}"
        );
    }
}
