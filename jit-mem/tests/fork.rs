//! A forked child that keeps JIT-compiling writes its own memory, not its parent's: the
//! mprotect manager's `/proc/self/mem` descriptor belongs to the process that opened it, and
//! the child must open its own. Its own test binary: it forks, which is only sound while no
//! other test thread holds a lock.
#![cfg(target_arch = "x86_64")]

mod common;

use common::*;
use jit_mem::*;

#[test]
fn a_forked_child_writes_its_own_memory() {
    let mem = MprotectSlabManager::with_writes(ManagerConfig::default(), MprotectWrites::ProcSelfMem)
        .expect("/proc/self/mem writable here");
    // The descriptor is opened (and used once) before the fork.
    let mut first = mem.allocate(&small_object()).unwrap();
    let f = return_imm_fn(1);
    first.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
    let first_code = first.target(0).unwrap();
    let _first = first.finalize_blocking(Vec::new()).unwrap();

    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: this test binary runs one test; the child only allocates, writes through the
    // manager, calls the code, writes to the pipe and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut second = mem.allocate(&small_object()).unwrap();
            let f = return_imm_fn(2);
            second.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
            let code = second.target(0).unwrap();
            let done = second.finalize_blocking(Vec::new()).unwrap();
            // SAFETY: finalized code of signature fn() -> u32.
            let ok = unsafe { call1(code, 0) } == 2 && unsafe { call1(first_code, 0) } == 1;
            std::mem::forget(done);
            (ok, code.0)
        }));
        let (ok, addr) = status.unwrap_or((false, 0));
        let bytes = addr.to_le_bytes();
        // SAFETY: writing 8 bytes from a live array to the pipe's write end, then leaving
        // without running the parent's destructors.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), 8);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child ran its code: {status:#x}");
    let mut bytes = [0u8; 8];
    // SAFETY: reading 8 bytes into a live array from the pipe's read end.
    assert_eq!(unsafe { libc::read(fds[0], bytes.as_mut_ptr().cast(), 8) }, 8);
    let child_code = TargetAddr(u64::from_le_bytes(bytes));
    assert!(mem.reservation().contains(&child_code));
    // The child's object lands next to the first one, on a page the parent has mapped too,
    // where the parent never wrote: it must still read zero here.
    assert_eq!(child_code.0 / 4096, first_code.0 / 4096, "child at {child_code:?}, first at {first_code:?}");
    // SAFETY: the page holds the parent's first object, so it is mapped and readable.
    assert_eq!(unsafe { read_target(child_code, 6) }, vec![0; 6], "the child wrote into its parent");
    // SAFETY: finalized code of signature fn() -> u32.
    assert_eq!(unsafe { call1(first_code, 0) }, 1);
}
