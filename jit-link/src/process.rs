//! What a symbol of this process is, for a [`crate::LinkContext`] whose externals live in this
//! process (found with `dlsym`): the answer to
//! [`describe_external`](crate::LinkContext::describe_external). The linker never calls this
//! itself; it only uses what its context says.
//!
//! The facts come from the dynamic loader: `dladdr1(RTLD_DL_SYMENT)` gives the ELF symbol at
//! an address (its type and size), `dl_iterate_phdr` the program header of the segment that
//! holds it (executable, writable, inside `PT_GNU_RELRO`). glibc-specific (`dladdr1`);
//! elsewhere everything is [`ExternalDefinition::Unknown`].

use jit_mem::TargetAddr;

use crate::ExternalDefinition;

/// Writable variables that glibc sets while the process starts and never again, so a copy
/// taken at link time stays right: the standard streams (`freopen` reuses the `FILE`; only a
/// program assigning `stdout` itself changes them, and a copy is read-only, so that faults)
/// and the program's name (set by `__init_misc` before `main`).
pub const STABLE_AFTER_STARTUP: &[&str] =
    &["stdin", "stdout", "stderr", "program_invocation_name", "program_invocation_short_name"];

/// What the definition of `name` at `addr` in this process is:
///
/// - [`ExternalDefinition::Function`]: an ELF `STT_FUNC`/`STT_GNU_IFUNC` symbol at exactly
///   `addr`, or an address inside an executable segment with no symbol of its own there (what
///   `dlsym` returns for an IFUNC such as `memcpy`: the chosen implementation);
/// - [`ExternalDefinition::StableData`] with a snapshot of its `st_size` bytes: a data symbol
///   at exactly `addr` that lies in a read-only segment or in `PT_GNU_RELRO` (read-only once
///   relocated: constants, C++ `type_info` objects), or that is named in
///   [`STABLE_AFTER_STARTUP`];
/// - [`ExternalDefinition::MutableData`]: any other data symbol at exactly `addr` (`optind`,
///   `environ`, `std::cout`);
/// - [`ExternalDefinition::Unknown`]: anything else (no loaded object holds `addr`, a
///   zero-sized or thread-local symbol, JIT'd memory).
pub fn describe_definition(name: &str, addr: TargetAddr) -> ExternalDefinition {
    imp::describe_definition(name, addr)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::{c_int, c_void};
    use std::ops::Range;

    use jit_mem::TargetAddr;
    use object::elf;

    use super::STABLE_AFTER_STARTUP;
    use crate::ExternalDefinition;

    /// `dladdr1` flag: return the `ElfW(Sym)` of the symbol found (glibc `<dlfcn.h>`).
    const RTLD_DL_SYMENT: c_int = 1;

    /// The loaded segment that holds an address.
    #[derive(Clone, Debug, Default)]
    struct Segment {
        range: Range<u64>,
        flags: u32,
        /// The object's `PT_GNU_RELRO` range, if it has one.
        relro: Option<Range<u64>>,
    }

    struct Query {
        addr: u64,
        found: Option<Segment>,
    }

    /// `dl_iterate_phdr` callback: finds the `PT_LOAD` segment holding `query.addr`, and the
    /// same object's `PT_GNU_RELRO`. Plain arithmetic on the loader's tables; cannot panic.
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Query` passed to dl_iterate_phdr below, alive and exclusively
        // ours for the call; `info` is valid for the duration of this callback (dl_iterate_phdr
        // contract).
        let (query, info) = unsafe { (&mut *(data as *mut Query), &*info) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr;
        let range_of = |p: &libc::Elf64_Phdr| {
            let start = base.wrapping_add(p.p_vaddr);
            start..start.saturating_add(p.p_memsz)
        };
        let load = phdrs.iter().find(|p| p.p_type == elf::PT_LOAD.0 && range_of(p).contains(&query.addr));
        let Some(load) = load else { return 0 };
        let relro = phdrs.iter().find(|p| p.p_type == elf::PT_GNU_RELRO.0).map(range_of);
        query.found = Some(Segment { range: range_of(load), flags: load.p_flags, relro });
        1
    }

    fn segment_of(addr: u64) -> Option<Segment> {
        let mut query = Query { addr, found: None };
        // SAFETY: the callback only reads the loader's tables and writes `query`, which lives
        // across the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), &mut query as *mut Query as *mut c_void) };
        query.found
    }

    /// The ELF symbol of a loaded object at exactly `addr`: (type, size).
    fn symbol_at(addr: u64) -> Option<(u8, u64)> {
        let ptr = usize::try_from(addr).ok()? as *const c_void;
        // SAFETY: Dl_info is plain data (pointers and integers); all-zero is a valid value.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let mut sym: *const libc::Elf64_Sym = std::ptr::null();
        // SAFETY: dladdr1 only reads the loader's tables; both out-pointers are valid for
        // writes of their types.
        let found = unsafe {
            libc::dladdr1(ptr, &mut info, &mut sym as *mut *const libc::Elf64_Sym as *mut *mut c_void, RTLD_DL_SYMENT)
        };
        if found == 0 || sym.is_null() || info.dli_saddr as usize as u64 != addr {
            return None;
        }
        // SAFETY: dladdr1 pointed `sym` at an entry of a loaded object's symbol table; it is
        // read at once, while the caller's lookup keeps the object loaded.
        let sym = unsafe { *sym };
        Some((sym.st_info & 0xF, sym.st_size))
    }

    pub(super) fn describe_definition(name: &str, addr: TargetAddr) -> ExternalDefinition {
        let addr = addr.0;
        let Some(segment) = segment_of(addr) else { return ExternalDefinition::Unknown };
        let exec = segment.flags & elf::PF_X.0 != 0;
        let (kind, size) = match symbol_at(addr) {
            Some(found) => found,
            None if exec => return ExternalDefinition::Function,
            None => return ExternalDefinition::Unknown,
        };
        let is = |t: elf::SymbolType| kind == t.0;
        if is(elf::STT_FUNC) || is(elf::STT_GNU_IFUNC) || (is(elf::STT_NOTYPE) && exec) {
            return ExternalDefinition::Function;
        }
        if !(is(elf::STT_OBJECT) || is(elf::STT_COMMON) || is(elf::STT_NOTYPE)) {
            return ExternalDefinition::Unknown;
        }
        let Some(end) = addr.checked_add(size).filter(|_| size > 0) else { return ExternalDefinition::Unknown };
        if end > segment.range.end || segment.flags & elf::PF_R.0 == 0 {
            return ExternalDefinition::Unknown;
        }
        let read_only =
            segment.flags & elf::PF_W.0 == 0 || segment.relro.as_ref().is_some_and(|r| r.start <= addr && end <= r.end);
        if !read_only && !STABLE_AFTER_STARTUP.contains(&name) {
            return ExternalDefinition::MutableData { size };
        }
        let Ok(len) = usize::try_from(size) else { return ExternalDefinition::Unknown };
        // SAFETY: [addr, addr+size) lies inside a readable PT_LOAD segment of an object that
        // is loaded (the caller's lookup found the symbol there), so it is mapped and readable.
        let snapshot = unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len) }.to_vec();
        ExternalDefinition::StableData { snapshot }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use jit_mem::TargetAddr;

    use crate::ExternalDefinition;

    pub(super) fn describe_definition(_name: &str, _addr: TargetAddr) -> ExternalDefinition {
        // Without dladdr1 nothing can be said: far references stay errors.
        ExternalDefinition::Unknown
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::ffi::CString;

    use super::*;

    fn dlsym(name: &str) -> TargetAddr {
        let c = CString::new(name).unwrap_or_default();
        // SAFETY: a valid C string; RTLD_DEFAULT searches the global namespace.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        assert!(!p.is_null(), "{name} is in libc");
        TargetAddr(p as usize as u64)
    }

    #[test]
    fn libc_functions_including_ifuncs_are_functions() {
        assert_eq!(describe_definition("puts", dlsym("puts")), ExternalDefinition::Function);
        // An IFUNC: dlsym returns the chosen implementation, which has no symbol of its own.
        assert_eq!(describe_definition("memcpy", dlsym("memcpy")), ExternalDefinition::Function);
    }

    #[test]
    fn stdout_is_stable_and_copied_with_its_current_value() {
        let addr = dlsym("stdout");
        let ExternalDefinition::StableData { snapshot } = describe_definition("stdout", addr) else {
            panic!("stdout is stable data");
        };
        // SAFETY: `addr` is libc's `stdout`, a pointer-sized variable.
        let now = unsafe { *(addr.0 as usize as *const u64) };
        assert_eq!(snapshot, now.to_le_bytes());
    }

    #[test]
    fn variables_libc_writes_later_are_mutable_and_read_only_data_is_stable() {
        assert_eq!(describe_definition("optind", dlsym("optind")), ExternalDefinition::MutableData { size: 4 });
        assert_eq!(describe_definition("environ", dlsym("environ")), ExternalDefinition::MutableData { size: 8 });
        // const struct in6_addr in .rodata.
        assert!(matches!(
            describe_definition("in6addr_any", dlsym("in6addr_any")),
            ExternalDefinition::StableData { snapshot } if snapshot.len() == 16
        ));
    }

    #[test]
    fn addresses_outside_every_loaded_object_are_unknown() {
        let heap = Box::new(0u64);
        let addr = TargetAddr(&*heap as *const u64 as usize as u64);
        assert_eq!(describe_definition("x", addr), ExternalDefinition::Unknown);
        assert_eq!(describe_definition("x", TargetAddr(0x10)), ExternalDefinition::Unknown);
    }
}
