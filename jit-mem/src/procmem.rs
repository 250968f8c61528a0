//! Writing into pages that are not writable, through `/proc/self/mem`.
//!
//! The kernel lets a process write its own memory through this file whatever the pages'
//! protection (it is how debuggers plant breakpoints), so code can be copied into pages that
//! are already read-only or executable and stay so: no mapping is ever writable and
//! executable, and no second view of the pages exists. Julia's JIT memory manager uses the
//! same path where dual mapping is refused (`SelfMemAllocator` in `src/cgmemmgr.cpp`).
//!
//! Some kernels refuse it (Linux 6.12's `proc_mem.force_override=never`, some hardening
//! patches, seccomp filters): [`ProcMem::open`] probes a real write and reports the refusal,
//! and the mprotect manager then seals pages in place instead.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::Prot;
use crate::sys::{HeldFile, map_anonymous_anywhere, page_size, unmap};

/// How many times this process's line of descent has forked (bumped in each child).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation: a descriptor opened in another generation belongs to another
/// process. (Comparing `getpid()` would cost a system call on every write.)
fn fork_generation() -> u64 {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: the child handler only bumps an atomic, which is async-signal-safe.
        let ret = unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        if ret != 0 {
            tracing::warn!(
                error = ret,
                "pthread_atfork failed: a forked child would write through its parent's /proc/self/mem"
            );
        }
    });
    FORKS.load(Ordering::Relaxed)
}

/// An open `/proc/self/mem` of this process.
pub(crate) struct ProcMem {
    /// The file, and the fork generation it was opened in: a forked child must not write
    /// its parent's memory through an inherited descriptor, so it opens its own.
    file: RwLock<(u64, HeldFile)>,
}

/// Opens `/proc/self/mem`, held as a [`HeldFile`]: every write checks the descriptor still
/// names it, as a write through a number the program reused would land in the program's file.
fn open_proc_mem() -> io::Result<HeldFile> {
    // std opens with O_CLOEXEC: an exec'd child never inherits it.
    HeldFile::new(OpenOptions::new().read(true).write(true).open("/proc/self/mem")?)
}

impl ProcMem {
    /// Opens `/proc/self/mem` and checks that a write into a read-only page lands.
    pub(crate) fn open() -> io::Result<ProcMem> {
        let generation = fork_generation();
        let mem = ProcMem { file: RwLock::new((generation, open_proc_mem()?)) };
        mem.probe()?;
        Ok(mem)
    }

    /// Writes a pattern into a fresh read-only page and reads it back through the page.
    fn probe(&self) -> io::Result<()> {
        let page = page_size();
        let addr = map_anonymous_anywhere(page, Prot::R)?;
        let pattern = *b"orcjit\xC3\x90";
        let outcome = self.write(addr, &pattern).and_then(|()| {
            // SAFETY: `addr` is the start of the readable page mapped above, which only this
            // function uses; the read is volatile because the bytes changed behind the
            // compiler's back (through the file).
            let seen = unsafe { std::ptr::read_volatile(addr as *const [u8; 8]) };
            if seen == pattern {
                Ok(())
            } else {
                Err(io::Error::other("a write through /proc/self/mem did not reach the page"))
            }
        });
        // SAFETY: the page was mapped above and nothing refers to it any more.
        let _ = unsafe { unmap(addr, page) };
        outcome
    }

    /// Copies `bytes` to address `addr` of this process, whatever the protection of the
    /// pages there (which must be mapped).
    pub(crate) fn write(&self, addr: usize, bytes: &[u8]) -> io::Result<()> {
        let generation = fork_generation();
        {
            let file = self.file.read();
            if file.0 == generation && file.1.is_intact() {
                return file.1.file().write_all_at(bytes, addr as u64);
            }
        }
        let mut file = self.file.write();
        if file.0 != generation || !file.1.is_intact() {
            *file = (generation, open_proc_mem()?);
        }
        file.1.file().write_all_at(bytes, addr as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn writes_land_in_read_only_pages_and_the_pages_stay_read_only() {
        let mem = ProcMem::open().expect("/proc/self/mem writable on the test machine");
        let page = page_size();
        let addr = map_anonymous_anywhere(page, Prot::R).expect("a page");
        mem.write(addr + 100, b"hello").expect("written");
        // SAFETY: readable page mapped above.
        let seen = unsafe { std::slice::from_raw_parts((addr + 100) as *const u8, 5) };
        assert_eq!(seen, b"hello");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let line =
            maps.lines().find(|l| l.starts_with(&format!("{addr:x}-"))).expect("the page is listed in /proc/self/maps");
        assert!(line.split_whitespace().nth(1).expect("perms").starts_with("r--"), "{line}");
        // SAFETY: mapped above, no references remain.
        unsafe { unmap(addr, page) }.expect("unmapped");
    }

    #[test]
    fn a_program_that_reuses_the_descriptor_number_keeps_its_file() {
        let mem = ProcMem::open().expect("/proc/self/mem writable on the test machine");
        let fd = mem.file.read().1.file().as_raw_fd();
        let scratch = crate::sys::replace_descriptor_with_scratch_file(fd, 1 << 20);
        let page = page_size();
        let addr = map_anonymous_anywhere(page, Prot::R).expect("a page");
        mem.write(addr + 8, b"landed").expect("written");
        // SAFETY: readable page mapped above.
        assert_eq!(unsafe { std::slice::from_raw_parts((addr + 8) as *const u8, 6) }, b"landed");
        assert!(crate::sys::all_zero(&scratch), "the write went to the program's file");
        // SAFETY: mapped above, no references remain; the descriptor number holds the scratch
        // file's duplicate, which is ours.
        unsafe {
            unmap(addr, page).expect("unmapped");
            libc::close(fd);
        }
    }

    #[test]
    fn a_write_to_unmapped_memory_is_an_error() {
        let mem = ProcMem::open().expect("/proc/self/mem writable on the test machine");
        let page = page_size();
        let addr = map_anonymous_anywhere(page, Prot::R).expect("a page");
        // SAFETY: mapped above, no references remain.
        unsafe { unmap(addr, page) }.expect("unmapped");
        assert!(mem.write(addr, b"x").is_err());
    }
}
