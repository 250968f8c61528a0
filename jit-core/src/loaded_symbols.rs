//! The process's dynamic symbols read straight from the loaded objects' own tables, for the
//! time `dlsym` cannot be called.
//!
//! glibc's `dlopen` holds the loader's lock while it runs the new library's constructors, and
//! `dlsym` takes that lock. A constructor that calls a JIT'd function not compiled yet (a
//! plugin registering itself with the program) makes the program thread wait for a pool
//! worker to compile and link it; the link looks `printf` up with `dlsym`, which waits for the
//! `dlopen` to return: a deadlock. So while a JIT'd `dlopen` or `dlclose` runs (see
//! [`LoaderBusy`]), generators find names here instead: the objects `dl_iterate_phdr` lists
//! (it takes another lock, which `dlopen` does not hold while constructors run), searched in
//! load order through their GNU or SysV hash tables, as the loader's own lookup does
//! (glibc's `elf/dl-lookup.c`; table layouts: System V gABI "Hash Table", and the GNU hash
//! section as binutils and glibc define it).

use std::cell::Cell;
use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use object::elf;

use crate::dispatch::PausedPools;

static BUSY: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// How many [`LoaderBusy`] guards this thread holds.
    static BUSY_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Hold one around a `dlopen` or `dlclose` made for JIT'd code (orcjit's own do), on the
/// thread that makes it.
///
/// A pool worker could block on the loader's lock in places no one controls: glibc takes it
/// to register a thread-local destructor, which Rust, LLVM and crossbeam do on a thread's
/// first use of one. So the outermost guard of a thread pauses every pool (workers finish the
/// task they run, for at most 10 s, and take no new one until it is dropped), and while the
/// thread holds one its waits run queued work themselves: it holds the lock, which is
/// recursive. While a guard lives anywhere, process and library generators resolve names
/// from the loaded objects' tables rather than with `dlsym` (see the module comment), for
/// the program's other threads.
#[must_use]
pub struct LoaderBusy {
    paused: Option<PausedPools>,
    not_send: std::marker::PhantomData<*const ()>,
}

impl LoaderBusy {
    pub fn enter() -> Self {
        BUSY.fetch_add(1, Ordering::AcqRel);
        let outermost = BUSY_HERE.with(|n| n.replace(n.get() + 1)) == 0;
        LoaderBusy { paused: outermost.then(PausedPools::pause), not_send: std::marker::PhantomData }
    }
}

impl Drop for LoaderBusy {
    fn drop(&mut self) {
        drop(self.paused.take());
        BUSY_HERE.with(|n| n.set(n.get() - 1));
        BUSY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// True while some thread holds a [`LoaderBusy`].
pub(crate) fn loader_busy() -> bool {
    BUSY.load(Ordering::Acquire) != 0
}

/// True while the calling thread holds a [`LoaderBusy`].
pub(crate) fn loader_busy_here() -> bool {
    BUSY_HERE.with(|n| n.get() != 0)
}

/// A defined dynamic symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Addr(usize),
    /// A thread-local variable: the loader's module id of its object, and its offset there.
    ThreadLocal {
        module: u64,
        offset: u64,
    },
}

/// `name` as the loader would bind an unversioned reference to it: the first loaded object
/// (in load order) that defines it with default visibility and its default version. With
/// `only`, just the object whose dynamic section is at that address.
pub(crate) fn find(name: &str, only: Option<usize>) -> Option<Found> {
    struct Search<'a> {
        name: &'a [u8],
        gnu_hash: u32,
        sysv_hash: u32,
        only: Option<usize>,
        found: Option<Found>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> libc::c_int {
        // SAFETY: `data` is the `Search` `find` passes, borrowed for the whole call; `info`
        // is filled by the loader and valid during this callback, as is the object it
        // describes (dl_iterate_phdr keeps it loaded meanwhile).
        let (search, info) = unsafe { (&mut *(data as *mut Search), &*info) };
        // SAFETY: as above.
        search.found = unsafe { find_in(info, search) };
        i32::from(search.found.is_some())
    }
    /// SAFETY: `info` describes an object the loader keeps mapped during the call.
    unsafe fn find_in(info: &libc::dl_phdr_info, s: &Search) -> Option<Found> {
        let base = info.dlpi_addr as usize;
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of the object.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let dynamic = base + headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC)?.p_vaddr as usize;
        if s.only.is_some_and(|only| only != dynamic) {
            return None;
        }
        // SAFETY: the object's mapped dynamic section and the tables it points at.
        let tables = unsafe { Tables::read(base, dynamic as *const Dyn) }?;
        let index = match tables.gnu_hash {
            // SAFETY: the object's own hash tables and symbol table.
            Some(gnu) => unsafe { tables.gnu_lookup(gnu, s.name, s.gnu_hash) },
            // SAFETY: as above.
            None => unsafe { tables.sysv_lookup(tables.sysv_hash?, s.name, s.sysv_hash) },
        }?;
        // SAFETY: `index` is a symbol-table index the hash table gave.
        let sym = unsafe { &*tables.symtab.add(index) };
        let kind = sym.st_info & 0xf;
        if kind == elf::STT_TLS.0 {
            return Some(Found::ThreadLocal { module: info.dlpi_tls_modid as u64, offset: sym.st_value });
        }
        let addr = if sym.st_shndx == elf::SHN_ABS.0 { sym.st_value as usize } else { base + sym.st_value as usize };
        if kind == elf::STT_GNU_IFUNC.0 {
            // SAFETY: an IFUNC symbol's value is its resolver, which takes no arguments and
            // returns the implementation's address (what `dlsym` returns for it too).
            let resolver: unsafe extern "C" fn() -> usize = unsafe { std::mem::transmute(addr) };
            // SAFETY: as above.
            return Some(Found::Addr(unsafe { resolver() }));
        }
        Some(Found::Addr(addr))
    }
    let mut search = Search {
        name: name.as_bytes(),
        gnu_hash: elf::gnu_hash(name.as_bytes()),
        sysv_hash: elf::hash(name.as_bytes()),
        only,
        found: None,
    };
    // SAFETY: `visit` matches the callback type and only reads what the loader passes and the
    // object it describes; the data pointer is `search`, alive across the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// The address of the dynamic section of the library `handle` (from `dlopen`) names.
pub(crate) fn dynamic_section_of(handle: *mut c_void) -> Option<usize> {
    /// The start of glibc's `struct link_map`, as `<link.h>` declares it (public ABI).
    #[repr(C)]
    struct LinkMap {
        l_addr: usize,
        l_name: *const libc::c_char,
        l_ld: *const Dyn,
    }
    let mut map: *const LinkMap = std::ptr::null();
    // SAFETY: `handle` is a live dlopen handle; RTLD_DI_LINKMAP stores its link_map pointer.
    let ok = unsafe { libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut map as *mut _ as *mut c_void) } == 0;
    // SAFETY: the loader's link_map of a loaded library, which stays loaded.
    (ok && !map.is_null()).then(|| unsafe { (*map).l_ld as usize })
}

/// A dynamic section entry (gABI `Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

/// One object's dynamic symbol table and what indexes it.
struct Tables {
    symtab: *const libc::Elf64_Sym,
    strtab: *const u8,
    versym: Option<*const u16>,
    gnu_hash: Option<*const u32>,
    sysv_hash: Option<*const u32>,
}

impl Tables {
    /// SAFETY: `dynamic` is the mapped dynamic section of the object loaded at `base`.
    unsafe fn read(base: usize, mut dynamic: *const Dyn) -> Option<Tables> {
        // The loader rewrites these entries to absolute addresses in objects whose dynamic
        // section is writable, and leaves them relative in the others (the vDSO, read-only
        // ones): a value below the base is relative.
        let at = |v: u64| if (v as usize) < base { base + v as usize } else { v as usize };
        let (mut symtab, mut strtab, mut versym, mut gnu_hash, mut sysv_hash) = (0, 0, None, None, None);
        loop {
            // SAFETY: the dynamic section ends with DT_NULL.
            let entry = unsafe { &*dynamic };
            match entry.d_tag as u32 {
                t if t == elf::DT_NULL.0 as u32 => break,
                t if t == elf::DT_SYMTAB.0 as u32 => symtab = at(entry.d_val),
                t if t == elf::DT_STRTAB.0 as u32 => strtab = at(entry.d_val),
                t if t == elf::DT_VERSYM.0 as u32 => versym = Some(at(entry.d_val) as *const u16),
                t if t == elf::DT_GNU_HASH.0 as u32 => gnu_hash = Some(at(entry.d_val) as *const u32),
                t if t == elf::DT_HASH.0 as u32 => sysv_hash = Some(at(entry.d_val) as *const u32),
                _ => {}
            }
            // SAFETY: not past DT_NULL yet.
            dynamic = unsafe { dynamic.add(1) };
        }
        (symtab != 0 && strtab != 0).then_some(Tables {
            symtab: symtab as *const libc::Elf64_Sym,
            strtab: strtab as *const u8,
            versym,
            gnu_hash,
            sysv_hash,
        })
    }

    /// Whether symbol `index` is a definition of `name` a reference from another object may
    /// bind to (glibc's `check_match`, for an unversioned reference).
    ///
    /// SAFETY: `index` is within the symbol table.
    unsafe fn matches(&self, index: usize, name: &[u8]) -> bool {
        // SAFETY: (the caller's) a valid index.
        let sym = unsafe { &*self.symtab.add(index) };
        let (bind, kind, visibility) = (sym.st_info >> 4, sym.st_info & 0xf, sym.st_other & 3);
        let defined = sym.st_shndx != elf::SHN_UNDEF.0
            && (sym.st_value != 0 || kind == elf::STT_TLS.0 || sym.st_shndx == elf::SHN_ABS.0);
        let kind_ok =
            [elf::STT_NOTYPE, elf::STT_OBJECT, elf::STT_FUNC, elf::STT_COMMON, elf::STT_TLS, elf::STT_GNU_IFUNC]
                .iter()
                .any(|k| k.0 == kind);
        let bind_ok = [elf::STB_GLOBAL, elf::STB_WEAK, elf::STB_GNU_UNIQUE].iter().any(|b| b.0 == bind);
        let visible = visibility == elf::STV_DEFAULT.0 || visibility == elf::STV_PROTECTED.0;
        // A hidden version (`name@VER`, bit 15 set) is not the default one an unversioned
        // reference binds to.
        // SAFETY: the version table has one entry per symbol.
        let version_ok = self.versym.is_none_or(|v| unsafe { *v.add(index) } & 0x8000 == 0);
        // SAFETY: st_name is an offset into the string table, whose strings end with NUL.
        let sym_name = unsafe { CStr::from_ptr(self.strtab.add(sym.st_name as usize).cast()) };
        defined && kind_ok && bind_ok && visible && version_ok && sym_name.to_bytes() == name
    }

    /// SAFETY: `table` is this object's DT_GNU_HASH table.
    unsafe fn gnu_lookup(&self, table: *const u32, name: &[u8], hash: u32) -> Option<usize> {
        // Header: nbuckets, symoffset, bloom_size (in 64-bit words), bloom_shift; then the
        // bloom filter, the buckets, and one chain word per symbol from symoffset on, whose
        // low bit ends a chain.
        // SAFETY: (the caller's) the table's header and the arrays it sizes.
        unsafe {
            let (nbuckets, symoffset, bloom_size, shift) = (*table, *table.add(1), *table.add(2), *table.add(3));
            if nbuckets == 0 || bloom_size == 0 {
                return None;
            }
            let bloom = table.add(4) as *const u64;
            let word = bloom.add(((hash / 64) % bloom_size) as usize).read_unaligned();
            let mask = (1u64 << (hash % 64)) | (1u64 << ((hash >> shift) % 64));
            if word & mask != mask {
                return None;
            }
            let buckets = bloom.add(bloom_size as usize) as *const u32;
            let chains = buckets.add(nbuckets as usize);
            let mut index = *buckets.add((hash % nbuckets) as usize);
            if index < symoffset {
                return None;
            }
            loop {
                let chain_hash = *chains.add((index - symoffset) as usize);
                if (chain_hash | 1) == (hash | 1) && self.matches(index as usize, name) {
                    return Some(index as usize);
                }
                if chain_hash & 1 != 0 {
                    return None;
                }
                index += 1;
            }
        }
    }

    /// SAFETY: `table` is this object's DT_HASH table.
    unsafe fn sysv_lookup(&self, table: *const u32, name: &[u8], hash: u32) -> Option<usize> {
        // Header: nbucket, nchain; then the buckets, then the chains (both symbol indices).
        // SAFETY: (the caller's) the table's header and the arrays it sizes.
        unsafe {
            let (nbucket, nchain) = (*table, *table.add(1));
            if nbucket == 0 {
                return None;
            }
            let chains = table.add(2 + nbucket as usize);
            let mut index = *table.add(2 + (hash % nbucket) as usize);
            while index != 0 && index < nchain {
                if self.matches(index as usize, name) {
                    return Some(index as usize);
                }
                index = *chains.add(index as usize);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dlsym(name: &std::ffi::CStr) -> usize {
        // SAFETY: a NUL-terminated name, looked up in the whole process.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    }

    #[test]
    fn finds_what_dlsym_finds_in_the_loaded_objects() {
        // Plain functions, IFUNCs (memcpy and strlen pick an implementation per CPU), data,
        // a versioned symbol with several versions (memcpy: GLIBC_2.2.5 and GLIBC_2.14).
        for name in [c"malloc", c"memcpy", c"strlen", c"printf", c"stdout", c"environ", c"pthread_create", c"dlopen"] {
            let found = find(name.to_str().unwrap(), None);
            assert_eq!(found, Some(Found::Addr(dlsym(name))), "{name:?}");
        }
        assert_eq!(find("no_such_symbol_anywhere", None), None);
    }

    #[test]
    fn a_thread_local_is_its_module_and_offset() {
        let Some(Found::ThreadLocal { module, offset }) = find("errno", None) else { panic!("errno is TLS") };
        let index = [module, offset];
        // SAFETY: a valid tls_index for a variable of a loaded library.
        let here = unsafe { crate::process_tls::tests::instance_at(crate::ExecutorAddr::from_ptr(index.as_ptr())) };
        // SAFETY: no preconditions.
        assert_eq!(here, unsafe { libc::__errno_location() } as usize);
    }

    #[test]
    fn a_library_handle_limits_the_search_to_that_library() {
        // SAFETY: loads libm, which stays loaded (libc's own is already there).
        let libm = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW) };
        assert!(!libm.is_null());
        let dynamic = dynamic_section_of(libm).expect("libm's link map");
        // SAFETY: as above.
        let cos = unsafe { libc::dlsym(libm, c"cos".as_ptr()) } as usize;
        assert_eq!(find("cos", Some(dynamic)), Some(Found::Addr(cos)));
        assert_eq!(find("malloc", Some(dynamic)), None, "libc's, not libm's");
    }
}
