//! What `-Wl,--export-dynamic` gives a native executable, for JIT'd programs: a library the
//! program loads with `dlopen` sees the program's symbols (a Lua C module calls
//! `luaL_setfuncs`, a Python extension `PyLong_FromLong`), and `dlsym` finds them through
//! `RTLD_DEFAULT` or the handle `dlopen(NULL)` returns.
//!
//! The dynamic loader knows ELF objects only, and JIT'd code lives in none. So JIT'd code's
//! `dlopen` first loads, `RTLD_GLOBAL`, a small shared object whose dynamic symbol table holds
//! the exported symbols the JIT'd program defines, as absolute symbols (`SHN_ABS`, whose value
//! glibc takes as it is since 2.28); a later `dlopen` adds one for the symbols defined since.
//! Publishing looks every such symbol up at Ready, so it links what a native link would have
//! linked (lazily compiled functions publish their stubs and stay uncompiled). JIT'd `dlsym`
//! looks the program's symbols up in the JIT first, as the executable comes first natively.
//!
//! Limits: the published symbols come after the process's own objects in the loader's search
//! order, so a library still binds to its own or libc's definition of a name the program also
//! defines (natively the executable's interposes); a name redefined after it was published
//! keeps its first address for the loader, and once the session ends every published address
//! is stale (a library loaded after that binds to freed memory); thread-local variables are
//! published as plain data (a library that declares one `extern __thread` does not get the
//! program's).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use jit_core::{
    FxHashSet, JitDylib, LoaderBusy, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName, WeakJitDylib,
};
use object::elf;
use parking_lot::Mutex;

/// A dylib whose symbols JIT'd `dlopen` publishes, and what it has published so far.
struct Exporter {
    dylib: WeakJitDylib,
    published: Mutex<FxHashSet<SymbolName>>,
}

static EXPORTERS: Mutex<Vec<Arc<Exporter>>> = Mutex::new(Vec::new());
/// Held for a whole publication (which may link and compile), so that publications do not
/// interleave; `dlsym` only takes [`EXPORTERS`], for a moment.
static PUBLISHING: Mutex<()> = Mutex::new(());

/// Makes `dylib`'s exported symbols visible to the dynamic loader once JIT'd code calls
/// `dlopen`, and to JIT'd `dlsym` at once (see the module comment). Dylibs whose sessions are
/// gone are forgotten.
pub fn export_dynamic(dylib: &JitDylib) {
    let mut exporters = EXPORTERS.lock();
    exporters.retain(|e| e.dylib.upgrade().is_some());
    exporters.push(Arc::new(Exporter { dylib: dylib.downgrade(), published: Mutex::default() }));
}

/// The exporting dylibs whose sessions live, in the order they were exported.
fn live_exporters() -> Vec<(Arc<Exporter>, JitDylib)> {
    let exporters = EXPORTERS.lock();
    exporters.iter().filter_map(|e| Some((e.clone(), e.dylib.upgrade()?))).collect()
}

/// Symbols JIT'd content defines and other objects may see: exported, with an address of its
/// own (not the process's symbols a generator answered with, not orcjit's overrides, which
/// are `ABSOLUTE`), and not a marker for initializers.
fn publishable(flags: SymbolFlags) -> bool {
    flags.contains(SymbolFlags::EXPORTED)
        && !flags.intersects(SymbolFlags::ABSOLUTE | SymbolFlags::MATERIALIZATION_SIDE_EFFECTS_ONLY)
}

/// `dlopen` for JIT'd code: publishes what the program defines and has not published, then
/// loads `file` as libc's `dlopen` does.
pub(crate) unsafe extern "C" fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    if !file.is_null()
        && let Err(e) = publish()
    {
        // The program's dlopen still runs: it fails, naming the symbol, if the library needed one.
        eprintln!("orcjit: cannot make the program's symbols visible to the libraries it loads: {e}");
    }
    // The library's constructors run under the loader's lock, and may call JIT'd code that
    // still has to be compiled and linked: that linking must not wait for the lock.
    let _busy = LoaderBusy::enter();
    // SAFETY: the program's own call, passed on unchanged.
    unsafe { libc::dlopen(file, mode) }
}

/// `dlclose` for JIT'd code: libc's, with the destructors it may run treated as `dlopen`'s
/// constructors are.
pub(crate) unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    let _busy = LoaderBusy::enter();
    // SAFETY: the program's own call, passed on unchanged.
    unsafe { libc::dlclose(handle) }
}

/// `dlsym` for JIT'd code: through `RTLD_DEFAULT` or the program's own handle, the program's
/// exported symbols first; otherwise, or when it has none of that name, libc's `dlsym`.
pub(crate) unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    if !name.is_null() && (handle == libc::RTLD_DEFAULT || handle == program_handle()) {
        // SAFETY: dlsym's contract: `name` is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(name) };
        if let Some(def) = name.to_str().ok().and_then(find) {
            return def.addr.0 as *mut c_void;
        }
    }
    // SAFETY: the program's own call, passed on unchanged.
    unsafe { libc::dlsym(handle, name) }
}

/// The addresses JIT'd code should bind `dlopen`, `dlsym` and `dlclose` to.
pub(crate) fn overrides() -> [(&'static str, usize); 3] {
    [
        ("dlopen", dlopen as *const () as usize),
        ("dlsym", dlsym as *const () as usize),
        ("dlclose", dlclose as *const () as usize),
    ]
}

/// What `dlopen(NULL, ...)` returns: the handle of the process's executable.
fn program_handle() -> *mut c_void {
    static HANDLE: OnceLock<usize> = OnceLock::new();
    // SAFETY: dlopen(NULL) loads nothing; it returns the main program's handle.
    *HANDLE.get_or_init(|| unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) } as usize)
        as *mut c_void
}

/// `name` as some exporting dylib defines it, once Ready.
fn find(name: &str) -> Option<SymbolDef> {
    live_exporters().into_iter().find_map(|(_, jd)| {
        let name = jd.session().intern(name);
        let flags = jd.symbol_flags(&name)?;
        publishable(flags).then(|| jd.session().lookup_symbol(&jd.search_order(), &name).ok())?
    })
}

/// Loads a shared object holding every publishable symbol not published yet. Linking what
/// is looked up may pull in static-library members, which define more: the lookups repeat
/// until they define nothing new, so that what a native link would have linked is published.
fn publish() -> Result<(), String> {
    let _one_at_a_time = PUBLISHING.lock();
    let exporters = live_exporters();
    let mut symbols: Vec<Published> = Vec::new();
    let mut newly: Vec<(&Exporter, SymbolName)> = Vec::new();
    for (exporter, jd) in &exporters {
        let published = exporter.published.lock();
        let mut tried: FxHashSet<SymbolName> = FxHashSet::default();
        loop {
            let wanted: Vec<SymbolName> = jd
                .defined_symbols()
                .into_iter()
                .filter(|(name, flags)| publishable(*flags) && !published.contains(name) && !tried.contains(name))
                .map(|(name, _)| name)
                .collect();
            if wanted.is_empty() {
                break;
            }
            tried.extend(wanted.iter().cloned());
            for (name, def) in ready(jd, wanted) {
                if !name.as_str().contains('\0') {
                    symbols.push(Published { name: name.as_str().to_owned(), def });
                }
                newly.push((exporter, name));
            }
        }
    }
    if !symbols.is_empty() {
        load(&shared_object(&symbols))?;
    }
    for (exporter, name) in newly {
        exporter.published.lock().insert(name);
    }
    Ok(())
}

/// `names` at Ready, all in one lookup; if that fails, one by one, leaving out those that
/// fail (the error they get is theirs to report when the program uses them).
fn ready(jd: &JitDylib, names: Vec<SymbolName>) -> Vec<(SymbolName, SymbolDef)> {
    if names.is_empty() {
        return Vec::new();
    }
    let es = jd.session();
    let order = jd.search_order();
    let set: SymbolLookupSet = names.iter().cloned().collect();
    match es.lookup_blocking(&order, set, RequiredState::Ready) {
        Ok(found) => found.into_iter().collect(),
        Err(_) => names.into_iter().filter_map(|n| es.lookup_symbol(&order, &n).ok().map(|def| (n, def))).collect(),
    }
}

struct Published {
    name: String,
    def: SymbolDef,
}

/// Writes `bytes` to a file of its own, loads it `RTLD_GLOBAL` and removes the file (the
/// mapping stays). A file, not a memfd: the loader recognizes an object it has loaded by the
/// path it was given, and `/proc/self/fd/N` names a later memfd that gets number N too.
fn load(bytes: &[u8]) -> Result<(), String> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let dir = std::path::absolute(std::env::temp_dir()).unwrap_or_else(|_| PathBuf::from("/tmp"));
    let path = dir.join(format!("orcjit-exports-{}-{seq}.so", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create '{}': {e}", path.display()))?;
    let written = file.write_all(bytes).map_err(|e| format!("cannot write '{}': {e}", path.display()));
    drop(file);
    let loaded = written.and_then(|()| {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: loads a shared object with no code, relocations or initializers: only
        // symbols. The handle is never closed, so the symbols stay while the process lives.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns NULL or a NUL-terminated message, copied at once.
            let msg = unsafe { libc::dlerror() };
            let msg = if msg.is_null() {
                "unknown error".into()
            } else {
                // SAFETY: as above, not NULL.
                unsafe { CStr::from_ptr(msg) }.to_string_lossy()
            };
            return Err(format!("cannot load '{}': {msg}", path.display()));
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    loaded
}

/// A shared object (x86-64, little-endian ELF64) that defines `symbols` as absolute global
/// symbols and holds nothing else: one read-only PT_LOAD over the whole file, a PT_DYNAMIC,
/// a non-executable PT_GNU_STACK, and the dynamic section, SysV hash table, symbol table and
/// string table the loader reads. Layouts: System V gABI, "Object Files" (ELF header, symbol
/// table, hash table) and "Program Loading and Dynamic Linking" (program header, dynamic
/// section); glibc needs no section headers.
fn shared_object(symbols: &[Published]) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    const PHNUM: u64 = 3;
    const DYN: u64 = 16;
    const SYM: u64 = 24;
    let soname = format!("orcjit-exports-{}.so", std::process::id());

    let mut strtab = vec![0u8];
    let mut add_string = |s: &str| {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let soname_at = add_string(&soname);
    let name_at: Vec<u32> = symbols.iter().map(|s| add_string(&s.name)).collect();

    // SysV hash: bucket[hash % nbucket] heads a chain through chain[] of symbol indices.
    let nsyms = symbols.len() + 1; // index 0 is the null symbol
    let nbucket = symbols.len().max(1);
    let mut bucket = vec![0u32; nbucket];
    let mut chain = vec![0u32; nsyms];
    for (i, s) in symbols.iter().enumerate() {
        let index = i + 1;
        let b = elf::hash(s.name.as_bytes()) as usize % nbucket;
        chain[index] = bucket[b];
        bucket[b] = index as u32;
    }

    let dynamic_off = EHDR + PHDR * PHNUM;
    let dynamic_len = DYN * 7;
    let hash_off = dynamic_off + dynamic_len;
    let hash_len = 4 * (2 + nbucket + nsyms) as u64;
    let symtab_off = (hash_off + hash_len).next_multiple_of(8);
    let strtab_off = symtab_off + SYM * nsyms as u64;
    let size = strtab_off + strtab.len() as u64;

    let mut out = Writer(Vec::with_capacity(size as usize));
    // ELF header.
    out.bytes(&elf::ELFMAG);
    out.bytes(&[
        elf::ELFCLASS64.0,
        elf::ELFDATA2LSB.0,
        elf::EV_CURRENT.0,
        elf::ELFOSABI_SYSV.0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    out.u16(elf::ET_DYN.0);
    out.u16(elf::EM_X86_64.0);
    out.u32(elf::EV_CURRENT.0.into());
    out.u64(0); // e_entry
    out.u64(EHDR); // e_phoff
    out.u64(0); // e_shoff
    out.u32(0); // e_flags
    out.u16(EHDR as u16);
    out.u16(PHDR as u16);
    out.u16(PHNUM as u16);
    out.u16(64); // e_shentsize
    out.u16(0); // e_shnum
    out.u16(0); // e_shstrndx
    // Program headers: type, flags, offset, vaddr, paddr, filesz, memsz, align.
    let mut phdr = |p_type: u32, flags: u32, off: u64, len: u64, align: u64| {
        out.u32(p_type);
        out.u32(flags);
        out.u64(off);
        out.u64(off);
        out.u64(off);
        out.u64(len);
        out.u64(len);
        out.u64(align);
    };
    phdr(elf::PT_LOAD.0, elf::PF_R.0, 0, size, 0x1000);
    phdr(elf::PT_DYNAMIC.0, elf::PF_R.0, dynamic_off, dynamic_len, 8);
    phdr(elf::PT_GNU_STACK.0, (elf::PF_R | elf::PF_W).0, 0, 0, 16);
    // Dynamic section (addresses are file offsets: the segment maps the file from vaddr 0).
    for (tag, value) in [
        (elf::DT_HASH, hash_off),
        (elf::DT_STRTAB, strtab_off),
        (elf::DT_SYMTAB, symtab_off),
        (elf::DT_STRSZ, strtab.len() as u64),
        (elf::DT_SYMENT, SYM),
        (elf::DT_SONAME, u64::from(soname_at)),
        (elf::DT_NULL, 0),
    ] {
        out.u64(tag.0 as u64);
        out.u64(value);
    }
    out.u32(nbucket as u32);
    out.u32(nsyms as u32);
    bucket.iter().chain(&chain).for_each(|&v| out.u32(v));
    out.0.resize(symtab_off as usize, 0);
    // Symbols: name, info, other, shndx, value, size.
    out.bytes(&[0; SYM as usize]);
    for (s, &name) in symbols.iter().zip(&name_at) {
        let kind = if s.def.flags.contains(SymbolFlags::CALLABLE) { elf::STT_FUNC } else { elf::STT_OBJECT };
        out.u32(name);
        out.bytes(&[(elf::STB_GLOBAL.0 << 4) | kind.0, elf::STV_DEFAULT.0]);
        out.u16(elf::SHN_ABS.0);
        out.u64(s.def.addr.0);
        out.u64(0);
    }
    out.bytes(&strtab);
    debug_assert_eq!(out.0.len() as u64, size);
    out.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}
