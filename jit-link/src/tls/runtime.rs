//! The TLS runtime: module registry, per-thread blocks and the `__tls_get_addr` replacement.
//!
//! A module id is `generation << 32 | (slot + 1)`: the slot indexes the registry and each
//! thread's block table, the generation tells a reused slot from its previous owner, so a
//! thread never hands out a block made from another module's template. The registry lock
//! is taken only on a thread's first access to a module; later accesses touch only that
//! thread's table.

use std::alloc::Layout;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// A `tls_index` as the psABI defines it (x86-64 psABI §"Thread-Local Storage",
/// `typedef struct { unsigned long ti_module; unsigned long ti_offset; } tls_index;`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsIndex {
    /// The module id (or [`INDIRECT_MODULE`]).
    pub module: u64,
    /// The offset in the module's block (or, for [`INDIRECT_MODULE`], the address of the
    /// defining graph's `tls_index`).
    pub offset: u64,
}

/// Marks a `tls_index` whose offset field holds the address of the real one: how a graph
/// refers to thread-local variables another graph defines.
pub const INDIRECT_MODULE: u64 = u64::MAX;

/// The largest TLS image a module may have.
pub const MAX_TLS_SIZE: u64 = 64 << 20;
/// The largest alignment a TLS image may ask for.
pub const MAX_TLS_ALIGN: u64 = 1 << 16;

struct Template {
    image: Box<[u8]>,
    layout: Layout,
}

struct Slot {
    generation: u32,
    reserved: bool,
    template: Option<Arc<Template>>,
}

struct Registry {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { slots: Vec::new(), free: Vec::new() });

/// Per-thread blocks alive in the process (for tests and leak checks).
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// How many per-thread TLS blocks exist right now, over all threads and modules.
pub fn live_thread_blocks() -> usize {
    LIVE_BLOCKS.load(Ordering::SeqCst)
}

/// One thread's block of one module.
struct ThreadBlock {
    generation: u32,
    ptr: *mut u8,
    layout: Layout,
}

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        if !self.ptr.is_null() && self.layout.size() > 0 {
            // SAFETY: `ptr` was returned by `std::alloc::alloc(layout)` in `make_block` and is
            // freed only here, once.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) };
            LIVE_BLOCKS.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One thread's blocks, indexed by slot, held by [`blocks_key`]'s value for that thread.
///
/// Not a Rust thread-local: those are destroyed when the thread exits, before the thread's
/// `pthread_key_create` destructors run, and those may read JIT'd thread-locals (natively,
/// thread-local memory lasts until the thread is gone).
struct ThreadBlocks {
    blocks: Vec<Option<ThreadBlock>>,
    /// The same blocks as `blocks`, as the TLS-descriptor resolver reads them without a call
    /// (see `super::descriptor`), published through `publish_fast_entries`.
    fast: Vec<FastEntry>,
    /// Set while `block_addr` uses the table (a reentrant use gets no block).
    busy: bool,
    /// Destructor rounds this table has been kept through (see `free_thread_blocks`).
    rounds: u32,
}

/// The pthread key whose per-thread value is that thread's `ThreadBlocks`.
fn blocks_key() -> Option<libc::pthread_key_t> {
    static KEY: std::sync::OnceLock<Option<libc::pthread_key_t>> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: creates a key whose destructor is `free_thread_blocks`, never deleted.
        (unsafe { libc::pthread_key_create(&mut key, Some(free_thread_blocks)) } == 0).then_some(key)
    })
}

/// The key's destructor, run by glibc at thread exit in rounds (up to
/// `PTHREAD_DESTRUCTOR_ITERATIONS`, 4, while some key still has a value). The blocks are kept
/// through the first three rounds, so every other key's destructor can still read JIT'd
/// thread-locals, and freed in the last.
extern "C" fn free_thread_blocks(table: *mut libc::c_void) {
    const KEEP_ROUNDS: u32 = 3;
    let table = table as *mut ThreadBlocks;
    // SAFETY: the key's value is a `ThreadBlocks` leaked from a Box by `block_addr`, owned by
    // this thread alone; glibc cleared the value before calling this.
    unsafe {
        if (*table).rounds < KEEP_ROUNDS {
            (*table).rounds += 1;
            if let Some(key) = blocks_key() {
                if libc::pthread_setspecific(key, table as *const libc::c_void) == 0 {
                    return;
                }
            }
        }
        drop(Box::from_raw(table));
    }
}

/// A reserved module id: released when dropped, unless installed.
#[derive(Debug)]
pub struct TlsModule {
    slot: usize,
    generation: u32,
}

impl TlsModule {
    /// Reserves a module id.
    pub fn reserve() -> TlsModule {
        let mut reg = REGISTRY.lock();
        let slot = match reg.free.pop() {
            Some(slot) => slot,
            None => {
                reg.slots.push(Slot { generation: 0, reserved: false, template: None });
                reg.slots.len() - 1
            }
        };
        let s = &mut reg.slots[slot];
        // Never 0, so every id is at least 2^32 and tells itself from the dynamic loader's
        // module ids (see `tls_get_addr`); never u32::MAX, so no id is `INDIRECT_MODULE`.
        s.generation = match s.generation.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        s.reserved = true;
        TlsModule { slot, generation: s.generation }
    }

    /// The id code passes in `tls_index.module`.
    pub fn id(&self) -> u64 {
        ((self.generation as u64) << 32) | (self.slot as u64 + 1)
    }

    /// Publishes the module's TLS image (`image.len()` bytes, aligned to `align`): from now
    /// on a thread's first access copies it. The module stays registered until the returned
    /// handle is dropped.
    pub fn install(self, image: Vec<u8>, align: u64) -> Result<InstalledTlsModule, String> {
        let align = align.max(1);
        if image.len() as u64 > MAX_TLS_SIZE || align > MAX_TLS_ALIGN || !align.is_power_of_two() {
            return Err(format!("TLS image of {} bytes aligned to {align} is not supported", image.len()));
        }
        let layout = Layout::from_size_align(image.len().max(1), align as usize).map_err(|e| e.to_string())?;
        let template = Arc::new(Template { image: image.into_boxed_slice(), layout });
        let mut reg = REGISTRY.lock();
        if let Some(s) = reg.slots.get_mut(self.slot) {
            s.template = Some(template);
        }
        let installed = InstalledTlsModule { slot: self.slot, generation: self.generation };
        std::mem::forget(self);
        Ok(installed)
    }
}

fn release(slot: usize, generation: u32) {
    let mut reg = REGISTRY.lock();
    if let Some(s) = reg.slots.get_mut(slot) {
        if s.generation == generation && s.reserved {
            s.reserved = false;
            s.template = None;
            reg.free.push(slot);
        }
    }
}

impl Drop for TlsModule {
    fn drop(&mut self) {
        release(self.slot, self.generation);
    }
}

/// A registered module: dropping it unregisters the template. Threads that already made a
/// block for it keep that memory until they exit or touch the slot's next owner.
#[derive(Debug)]
pub struct InstalledTlsModule {
    slot: usize,
    generation: u32,
}

impl InstalledTlsModule {
    /// The module id.
    pub fn id(&self) -> u64 {
        ((self.generation as u64) << 32) | (self.slot as u64 + 1)
    }
}

impl Drop for InstalledTlsModule {
    fn drop(&mut self) {
        release(self.slot, self.generation);
    }
}

/// Makes this thread's block of `slot`, or null if the module is not (or no longer) installed
/// or memory is exhausted.
fn make_block(slot: usize, generation: u32) -> Option<ThreadBlock> {
    let template = {
        let reg = REGISTRY.lock();
        let s = reg.slots.get(slot)?;
        if s.generation != generation {
            return None;
        }
        s.template.clone()?
    };
    // SAFETY: the layout has a non-zero size (at least one byte, see `install`).
    let ptr = unsafe { std::alloc::alloc(template.layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` points at `layout.size() >= image.len()` fresh bytes; the zero fill covers
    // the bytes past the image (none today, as the image includes `.tbss` as zeros).
    unsafe {
        std::ptr::copy_nonoverlapping(template.image.as_ptr(), ptr, template.image.len());
        std::ptr::write_bytes(ptr.add(template.image.len()), 0, template.layout.size() - template.image.len());
    }
    LIVE_BLOCKS.fetch_add(1, Ordering::SeqCst);
    Some(ThreadBlock { generation, ptr, layout: template.layout })
}

fn block_addr(module: u64, offset: u64) -> *mut u8 {
    let slot = match (module & 0xFFFF_FFFF).checked_sub(1) {
        Some(s) => s as usize,
        None => return std::ptr::null_mut(),
    };
    let generation = (module >> 32) as u32;
    if let Some(block) = published_block(slot, generation) {
        return block.wrapping_add(offset as usize);
    }
    let Some(key) = blocks_key() else { return std::ptr::null_mut() };
    // SAFETY: reads this thread's value of the key: null, or a table set below.
    let mut table = unsafe { libc::pthread_getspecific(key) } as *mut ThreadBlocks;
    if table.is_null() {
        table = Box::into_raw(Box::new(ThreadBlocks { blocks: Vec::new(), fast: Vec::new(), busy: false, rounds: 0 }));
        // SAFETY: stores this thread's table; the key's destructor frees it.
        if unsafe { libc::pthread_setspecific(key, table as *const libc::c_void) } != 0 {
            // SAFETY: not stored: freed here, once.
            drop(unsafe { Box::from_raw(table) });
            return std::ptr::null_mut();
        }
    }
    // SAFETY: this thread's own table, used by this thread alone; `busy` refuses reentry.
    let table = unsafe { &mut *table };
    if table.busy {
        return std::ptr::null_mut();
    }
    table.busy = true;
    let addr = block_in(table, slot, generation, offset);
    table.busy = false;
    addr
}

/// The address of `offset` in this thread's block of module `slot`/`generation`, made from
/// the module's template on first use (and then published to the TLS-descriptor resolver).
fn block_in(table: &mut ThreadBlocks, slot: usize, generation: u32, offset: u64) -> *mut u8 {
    if let Some(Some(b)) = table.blocks.get(slot) {
        if b.generation == generation {
            return b.ptr.wrapping_add(offset as usize);
        }
    }
    let Some(block) = make_block(slot, generation) else {
        return std::ptr::null_mut();
    };
    if table.blocks.len() <= slot {
        table.blocks.resize_with(slot + 1, || None);
    }
    let ptr = block.ptr;
    table.blocks[slot] = Some(block);
    if table.fast.len() <= slot {
        // The resolver must not read the entries while they move.
        publish_fast_entries(&[]);
        table.fast.resize(slot + 1, FastEntry { generation: 0, block: 0 });
    }
    table.fast[slot] = FastEntry { generation: u64::from(generation), block: ptr as u64 };
    publish_fast_entries(&table.fast);
    ptr.wrapping_add(offset as usize)
}

impl Drop for ThreadBlocks {
    fn drop(&mut self) {
        // The blocks go with the table: the resolver must not find them any more.
        if !self.fast.is_empty() {
            publish_fast_entries(&[]);
        }
    }
}

/// One module's block in this thread, as the TLS-descriptor resolver reads it: `generation`
/// (0: none) as in the module id's upper half, `block` its address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct FastEntry {
    generation: u64,
    block: u64,
}

// This thread's fast entries (indexed by slot) and their number, read by the resolver with
// `%fs`-relative loads (initial-exec: the executable's static TLS, or, in a shared library,
// the few bytes of surplus the dynamic loader keeps for such libraries).
std::arch::global_asm!(
    ".pushsection .tbss.orcjit_tls_fast,\"awT\",@nobits",
    ".p2align 3",
    ".globl orcjit_tls_fast_entries",
    ".hidden orcjit_tls_fast_entries",
    ".type orcjit_tls_fast_entries,@object",
    ".size orcjit_tls_fast_entries, 8",
    "orcjit_tls_fast_entries:",
    ".zero 8",
    ".globl orcjit_tls_fast_len",
    ".hidden orcjit_tls_fast_len",
    ".type orcjit_tls_fast_len,@object",
    ".size orcjit_tls_fast_len, 8",
    "orcjit_tls_fast_len:",
    ".zero 8",
    ".popsection",
);

/// This thread's block of module `slot`/`generation` as published for the resolver: what the
/// thread's table holds, read without `pthread_getspecific` (the general-dynamic model's
/// `__tls_get_addr` calls take this way too).
fn published_block(slot: usize, generation: u32) -> Option<*mut u8> {
    let (entries, len): (*const FastEntry, usize);
    // SAFETY: reads this thread's two words of static TLS defined above.
    unsafe {
        std::arch::asm!(
            "mov {t}, qword ptr [rip + orcjit_tls_fast_entries@GOTTPOFF]",
            "mov {e}, qword ptr fs:[{t}]",
            "mov {t}, qword ptr [rip + orcjit_tls_fast_len@GOTTPOFF]",
            "mov {n}, qword ptr fs:[{t}]",
            t = out(reg) _,
            e = out(reg) entries,
            n = out(reg) len,
            options(nostack, readonly, preserves_flags),
        );
    }
    if slot >= len {
        return None;
    }
    // SAFETY: `len` entries start at `entries` while published (the table that owns them
    // unpublishes them before they move or go).
    let entry = unsafe { entries.add(slot).read() };
    (entry.generation == u64::from(generation)).then_some(entry.block as *mut u8)
}

/// Points this thread's resolver at `entries` (empty: none). The length goes to 0 first, so
/// that a signal handler's access in between takes the slow way, never a half-made table.
fn publish_fast_entries(entries: &[FastEntry]) {
    // SAFETY: writes this thread's two words of static TLS defined above (initial-exec
    // addresses, as the resolver reads them); `entries` outlives their use (the table that owns
    // it clears them when it changes or is dropped).
    unsafe {
        std::arch::asm!(
            "mov {t}, qword ptr [rip + orcjit_tls_fast_len@GOTTPOFF]",
            "mov qword ptr fs:[{t}], 0",
            "mov {t}, qword ptr [rip + orcjit_tls_fast_entries@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {p}",
            "mov {t}, qword ptr [rip + orcjit_tls_fast_len@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {n}",
            t = out(reg) _,
            p = in(reg) entries.as_ptr(),
            n = in(reg) entries.len(),
            options(nostack, preserves_flags),
        );
    }
}

unsafe extern "C" {
    /// The dynamic loader's `__tls_get_addr` (x86-64 psABI; exported by ld-linux-x86-64.so.2).
    #[link_name = "__tls_get_addr"]
    fn loader_tls_get_addr(index: *const TlsIndex) -> *mut u8;
}

/// orcjit's `__tls_get_addr`: the address of this thread's copy of the variable `index`
/// describes. Returns null (the access then faults) if the module was freed.
///
/// An index whose module id is below 2^32 is the dynamic loader's (a thread-local variable of
/// a library of the process, which jit-core's generators define at such an index) and goes to
/// the loader's `__tls_get_addr`.
///
/// # Safety
///
/// `index` must point at a readable `tls_index` (JIT'd code passes the one the linker made);
/// an [`INDIRECT_MODULE`] index must hold the address of another readable `tls_index`; a
/// loader's index must name a loaded library's module and a variable in its block.
pub unsafe extern "C" fn tls_get_addr(index: *const TlsIndex) -> *mut u8 {
    if index.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the caller passes a readable `tls_index` (the function's contract).
    let mut ti = unsafe { index.read_unaligned() };
    if ti.module == INDIRECT_MODULE {
        let real = ti.offset as usize as *const TlsIndex;
        if real.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: an indirect index holds the address of the defining graph's `tls_index`
        // (the linker wrote it), readable while that graph is linked (the contract).
        ti = unsafe { real.read_unaligned() };
    }
    match ti.module {
        0 => std::ptr::null_mut(),
        // SAFETY: a loader's module id and offset, which the contract requires to be valid;
        // the loader only reads the index it is given.
        1..=0xFFFF_FFFF => unsafe { loader_tls_get_addr(&ti) },
        _ => block_addr(ti.module, ti.offset),
    }
}

/// The address to bind `__tls_get_addr` to.
pub fn tls_get_addr_address() -> jit_mem::TargetAddr {
    jit_mem::TargetAddr(tls_get_addr as unsafe extern "C" fn(*const TlsIndex) -> *mut u8 as usize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(module: u64, offset: u64) -> *mut u8 {
        let ti = TlsIndex { module, offset };
        // SAFETY: `ti` is a readable tls_index.
        unsafe { tls_get_addr(&ti) }
    }

    #[test]
    fn each_thread_gets_its_own_copy_of_the_template_freed_at_thread_exit() {
        let module = TlsModule::reserve();
        let installed = module.install(vec![1, 2, 3, 4, 5, 6, 7, 8], 8).unwrap();
        let id = installed.id();
        let here = addr(id, 4);
        assert!(!here.is_null());
        // SAFETY: offset 4 of this thread's 8-byte block.
        unsafe {
            assert_eq!(*here, 5);
            *here = 50;
        }
        assert_eq!(addr(id, 4), here, "the same block on every access");
        let before = live_thread_blocks();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let p = addr(id, 4);
                    // SAFETY: that thread's block.
                    (p as usize, unsafe { *p })
                })
            })
            .collect();
        for t in threads {
            let (p, v) = t.join().unwrap();
            assert_eq!(v, 5, "a fresh copy of the template");
            assert_ne!(p, here as usize, "not this thread's block");
        }
        // The threads have exited: their blocks are gone (tests running alongside may hold
        // a block or two of their own).
        assert!(live_thread_blocks() <= before + 2, "{} blocks live, {before} before", live_thread_blocks());
        // SAFETY: this thread's block, still alive.
        unsafe { assert_eq!(*here, 50) };
        drop(installed);
        // A thread that never touched it gets nothing (this one keeps its block until it
        // exits: the fast path does not consult the registry, and code of a freed module
        // cannot run anyway).
        let fresh = std::thread::spawn(move || addr(id, 4) as usize).join().unwrap();
        assert_eq!(fresh, 0, "a freed module has no address");
    }

    #[test]
    fn a_reused_slot_never_hands_out_the_previous_modules_block() {
        let first = TlsModule::reserve().install(vec![11; 16], 16).unwrap();
        let old_id = first.id();
        let old = addr(old_id, 0);
        // SAFETY: this thread's block of the first module.
        unsafe { assert_eq!(*old, 11) };
        drop(first);
        let second = TlsModule::reserve().install(vec![22; 16], 16).unwrap();
        let p = addr(second.id(), 0);
        // SAFETY: this thread's block of the second module.
        unsafe { assert_eq!(*p, 22) };
        assert!(addr(old_id, 0).is_null(), "the old id is dead even if its slot was reused");
    }

    #[test]
    fn an_indirect_index_reaches_the_defining_modules_variable() {
        let m = TlsModule::reserve().install(vec![0, 0, 0, 0, 9, 9, 9, 9], 4).unwrap();
        let real = TlsIndex { module: m.id(), offset: 4 };
        let indirect = TlsIndex { module: INDIRECT_MODULE, offset: &real as *const TlsIndex as usize as u64 };
        // SAFETY: both indices are readable; the indirect one points at the real one.
        let (a, b) = unsafe { (tls_get_addr(&real), tls_get_addr(&indirect)) };
        assert_eq!(a, b);
        assert!(!a.is_null());
    }

    #[test]
    fn reserving_and_dropping_releases_the_slot() {
        let m = TlsModule::reserve();
        let id = m.id();
        drop(m);
        assert!(addr(id, 0).is_null());
        assert!(addr(0, 0).is_null(), "module 0 is never valid");
    }
}
