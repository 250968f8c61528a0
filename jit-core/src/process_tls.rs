//! Thread-local variables of the process (libstdc++'s `std::__once_callable`, glibc's `errno`).
//!
//! `dlsym` answers a thread-local symbol with the calling thread's instance of it: an address
//! no other thread may use, and the generator that asks runs on whichever thread served the
//! lookup. So a generator defines such a symbol at the address of a psABI `tls_index`
//! instead (x86-64 psABI §"Thread-Local Storage": `{ ti_module, ti_offset }`), in the
//! dynamic loader's terms: the loader's module id of the library and the variable's offset in
//! that library's block. Code reaches its own thread's instance with
//! `__tls_get_addr(&tls_index)`, as code compiled with `-fPIC` does for an `extern` variable.
//! The same convention holds for JIT'd thread-local symbols (jit-link defines them at their
//! `tls_index`), whose module ids orcjit's `__tls_get_addr` tells from the loader's.

use std::ffi::c_void;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::symbol::ExecutorAddr;

/// A `tls_index`, as the psABI and glibc's `__tls_get_addr` read it.
#[repr(C)]
struct TlsIndex {
    module: u64,
    offset: u64,
}

/// The `tls_index` of each process variable handed out so far, by (module, offset). They
/// live as long as the process: JIT'd code may use them until it exits, and a library
/// `dlopen`ed for JIT'd code is never closed. One per thread-local variable looked up.
static INDICES: Mutex<Option<FxHashMap<(u64, u64), &'static TlsIndex>>> = Mutex::new(None);

/// One library's thread-local block, as the calling thread sees it.
#[derive(Clone, Copy, Debug)]
struct Block {
    module: u64,
    start: usize,
    size: usize,
}

/// The calling thread's blocks of every loaded library that has thread-local storage and
/// has made this thread's block (a library in the initial set always has; a `dlopen`ed one
/// once the thread has touched its variables, which `dlsym` does).
fn thread_blocks() -> Vec<Block> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, size: usize, data: *mut c_void) -> libc::c_int {
        // SAFETY: `data` is the `Vec<Block>` `thread_blocks` passes, borrowed for the whole
        // `dl_iterate_phdr` call; `info` points at a `size`-byte `dl_phdr_info` the loader
        // filled, valid during this callback.
        let (blocks, info) = unsafe { (&mut *(data as *mut Vec<Block>), &*info) };
        // Loaders older than glibc 2.26 do not fill in the TLS fields.
        if size < std::mem::size_of::<libc::dl_phdr_info>() || info.dlpi_tls_data.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of a loaded object.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        if let Some(tls) = headers.iter().find(|h| h.p_type == libc::PT_TLS) {
            blocks.push(Block {
                module: info.dlpi_tls_modid as u64,
                start: info.dlpi_tls_data as usize,
                size: tls.p_memsz as usize,
            });
        }
        0
    }
    let mut blocks: Vec<Block> = Vec::new();
    // SAFETY: `visit` matches the callback type and only reads what the loader passes; the
    // data pointer is `blocks`, alive across the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut blocks as *mut Vec<Block> as *mut c_void) };
    blocks
}

/// The address of the process-lifetime `tls_index` {`module`, `offset`}.
pub(crate) fn index_of(module: u64, offset: u64) -> ExecutorAddr {
    let mut indices = INDICES.lock();
    let index = *indices
        .get_or_insert_with(FxHashMap::default)
        .entry((module, offset))
        .or_insert_with(|| Box::leak(Box::new(TlsIndex { module, offset })));
    ExecutorAddr::from_ptr(index as *const TlsIndex as *const c_void)
}

/// Replaces, in `found` (addresses `dlsym` returned on the calling thread), each instance of
/// a thread-local variable with the address of the variable's `tls_index`.
///
/// Call it after the `dlsym` calls: a library loaded with `dlopen` makes a thread's block
/// only when that thread first touches one of its variables, as `dlsym` does.
pub(crate) fn thread_locals_to_indices(found: &mut [ExecutorAddr]) {
    if found.is_empty() {
        return;
    }
    let blocks = thread_blocks();
    for addr in found {
        let a = addr.0 as usize;
        let Some(b) = blocks.iter().find(|b| a >= b.start && a - b.start < b.size) else {
            continue;
        };
        *addr = index_of(b.module, (a - b.start) as u64);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    unsafe extern "C" {
        /// The dynamic loader's own (x86-64 psABI; exported by ld-linux-x86-64.so.2).
        fn __tls_get_addr(index: *const TlsIndex) -> *mut c_void;
    }

    /// The calling thread's instance of the variable whose `tls_index` is at `index`.
    ///
    /// # Safety
    ///
    /// `index` is the address of a `tls_index` naming a variable of a loaded library.
    pub(crate) unsafe fn instance_at(index: ExecutorAddr) -> usize {
        // SAFETY: (the caller's) a valid index, which the loader only reads.
        unsafe { __tls_get_addr(index.0 as usize as *const TlsIndex) as usize }
    }

    #[test]
    fn errno_resolves_to_a_tls_index_every_thread_can_use() {
        // glibc exports `errno` (as a GLIBC_PRIVATE thread-local symbol); dlsym answers with
        // this thread's instance, which is where `__errno_location` points.
        // SAFETY: the name is NUL-terminated; RTLD_DEFAULT searches the process.
        let here = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"errno".as_ptr()) };
        // SAFETY: __errno_location has no preconditions.
        assert_eq!(here, unsafe { libc::__errno_location() } as *mut c_void);
        let mut found = [ExecutorAddr::from_ptr(here), ExecutorAddr::from_ptr(here)];
        thread_locals_to_indices(&mut found);
        assert_ne!(found[0], ExecutorAddr::from_ptr(here));
        assert_eq!(found[0], found[1], "one tls_index per variable");
        let index = found[0];
        let on_thread = move || {
            // SAFETY: `index` is the address of a live tls_index naming errno's module and offset.
            let got = unsafe { instance_at(index) };
            // SAFETY: __errno_location has no preconditions.
            (got, unsafe { libc::__errno_location() } as usize)
        };
        let (main_got, main_errno) = on_thread();
        assert_eq!(main_got, main_errno);
        let (other_got, other_errno) = std::thread::spawn(on_thread).join().unwrap();
        assert_eq!(other_got, other_errno);
        assert_ne!(other_got, main_got);
    }

    #[test]
    fn an_ordinary_address_is_left_alone() {
        // SAFETY: as in the test above.
        let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) };
        let mut found = [ExecutorAddr::from_ptr(malloc)];
        thread_locals_to_indices(&mut found);
        assert_eq!(found[0], ExecutorAddr::from_ptr(malloc));
    }
}
