//! After a fork, parent and child of the dual-mapped manager each keep JIT-compiling into the
//! same free space (each has the same copy of the allocator), and neither may overwrite the
//! other's code: the child moves its code slabs to a memfd of its own. Its own test binary:
//! it forks, which is only sound while no other test thread holds a lock.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod common;

use common::*;
use jit_mem::*;

fn pipe() -> [libc::c_int; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    fds
}

fn send(fd: libc::c_int, value: u64) {
    let bytes = value.to_le_bytes();
    // SAFETY: writing 8 bytes from a live array to a pipe's write end.
    assert_eq!(unsafe { libc::write(fd, bytes.as_ptr().cast(), 8) }, 8);
}

fn receive(fd: libc::c_int) -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: reading 8 bytes into a live array from a pipe's read end (blocks until the
    // other process writes them, or fails once it has exited).
    assert_eq!(unsafe { libc::read(fd, bytes.as_mut_ptr().cast(), 8) }, 8, "the other process wrote nothing");
    u64::from_le_bytes(bytes)
}

/// Allocates and finalizes a function returning `imm`; returns its address, keeping the
/// allocation for the life of the process.
fn code_returning(mem: &DualMappedManager, imm: u32) -> TargetAddr {
    let mut alloc = mem.allocate(&small_object()).unwrap();
    let f = return_imm_fn(imm);
    alloc.working_mut(0).unwrap()[..f.len()].copy_from_slice(&f);
    let code = alloc.target(0).unwrap();
    std::mem::forget(alloc.finalize_blocking(Vec::new()).unwrap());
    code
}

#[test]
fn parent_and_child_compile_into_the_same_free_space_without_overwriting_each_other() {
    let mem = DualMappedManager::new(ManagerConfig::default()).unwrap();
    let before = code_returning(&mem, 1);
    let (to_child, to_parent) = (pipe(), pipe());
    // SAFETY: this test binary runs one test; the child only allocates, writes through the
    // manager, calls code, writes to a pipe and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Wait until the parent has placed its new code, then place the child's.
            receive(to_child[0]);
            let mine = code_returning(&mem, 2);
            // SAFETY: finalized code of signature fn(u32) -> u32.
            let ok = unsafe { call1(mine, 0) == 2 && call1(before, 0) == 1 };
            (ok, mine.0)
        }));
        let (ok, addr) = result.unwrap_or((false, 0));
        send(to_parent[1], addr);
        // SAFETY: leaving without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mine = code_returning(&mem, 3);
    send(to_child[1], 0);
    let childs = receive(to_parent[0]);
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child ran its code: {status:#x}");
    assert_eq!(childs, mine.0, "both placed their code at the same address");
    // SAFETY: finalized code of signature fn(u32) -> u32.
    assert_eq!(unsafe { call1(mine, 0) }, 3, "the child overwrote its parent's code");
    // SAFETY: as above.
    assert_eq!(unsafe { call1(before, 0) }, 1);
}
