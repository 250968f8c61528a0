//! The memory behind interned names ([`crate::SymbolName`]).
//!
//! A name is a slot in a 64 KiB chunk that holds 4,092 of them: an array of reference counts,
//! each followed by the name's Ready mark (4 bytes each), then an array of entry hints
//! (8 bytes), behind a 64-byte header that points to the chunk's array of strings. A
//! `SymbolName` is a pointer to its count; the chunk is found by masking it, the hint and the
//! string by its index.
//!
//! So cloning a name, dropping one, and reading its Ready mark each touch 8 bytes in an array
//! of 8 names to a cache line, rather than a 64-byte heap block of its own. A million names'
//! counts and marks take 8 MB, which the cache holds, where the heap blocks took 96 MB with
//! their strings. The benchmark of issue 2 clones four random names per unit, and reads the
//! marks of four random dependencies per emission and drops them; with heap blocks each was a
//! cache miss once the names outgrew the cache (`jit-core/README.md`). Counts and marks in
//! arrays of their own were slower (930 against 785 ns per DAG symbol at 1e6, warm): the mark
//! and the drop of a dependency then touch two lines.
//!
//! Slots are allocated from shards, each with its own lock, free list and chunks; a thread
//! allocates from the shard it was given first, so names interned together lie together.
//! A freed slot goes back to its chunk's shard. Chunks are freed with the slab, which must
//! not move once it has allocated (it lives in its pool's `Arc`).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::{Cell, UnsafeCell};
use std::mem::{MaybeUninit, size_of};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// A name's slot, as a pointer to its reference count: the number of live handles. The slot
/// is free (or being freed) when the count is 0, and the count never goes from 0 back up.
pub(crate) type Slot = NonNull<AtomicU32>;

const CHUNK_BYTES: usize = 64 * 1024;
const HEADER_BYTES: usize = 64;
/// Slots per chunk: 16 bytes each (count and mark, hint) after the header.
const SLOTS: usize = (CHUNK_BYTES - HEADER_BYTES) / 16;
/// Each count is followed by its mark, so a dependency's mark and the drop of its name
/// touch one cache line.
const HINTS_AT: usize = HEADER_BYTES + 8 * SLOTS;
const _: () = assert!(HINTS_AT % 8 == 0 && HINTS_AT + 8 * SLOTS <= CHUNK_BYTES);
/// Chunks are allocated 4 at a time (with their strings' arrays, 64 KiB each), so that the
/// slots of many names lie in few allocations.
const BLOCK_CHUNKS: usize = 4;
const BLOCK_SLOTS: usize = BLOCK_CHUNKS * SLOTS;
/// Shards of a slab; threads are given one each in turn.
const SHARDS: usize = 8;

/// A slot's string: initialized exactly while the slot is allocated.
type Cold = UnsafeCell<MaybeUninit<Arc<str>>>;

#[repr(C)]
struct Header {
    /// What the slab's owner wants to find from a handle (the pool).
    owner: *const (),
    /// The chunk's strings, `SLOTS` of them.
    cold: NonNull<Cold>,
    shard: *const Mutex<Shard>,
}

const _: () = assert!(size_of::<Header>() <= HEADER_BYTES);

struct Shard {
    /// Blocks of `BLOCK_CHUNKS` chunks, made by `new_block`.
    blocks: Vec<NonNull<u8>>,
    /// Slots of the last block handed out (at most `BLOCK_SLOTS`).
    used_in_last: usize,
    free: Vec<Slot>,
    live: usize,
}

/// A set of chunks owned by one pool.
pub(crate) struct NameSlab {
    shards: [Mutex<Shard>; SHARDS],
}

// SAFETY: the raw pointers in a shard point to blocks (and their string arrays) that the slab
// alone owns and frees; every access to a shard is under its mutex, and a slot's string is
// only written while no handle to the slot exists (at allocation and at free).
unsafe impl Send for Shard {}

impl NameSlab {
    pub(crate) fn new() -> Self {
        let shard = || Mutex::new(Shard { blocks: Vec::new(), used_in_last: BLOCK_SLOTS, free: Vec::new(), live: 0 });
        NameSlab { shards: std::array::from_fn(|_| shard()) }
    }

    /// A slot holding `name`, with a count of 1 and clear mark and hint; `owner` is what
    /// [`owner`] returns for it. Also says whether it is its shard's only live slot (the caller
    /// keeps the slab alive while a shard has live slots, see `symbol::PoolShared`).
    pub(crate) fn alloc(&self, owner: *const (), name: Arc<str>) -> (Slot, bool) {
        thread_local!(static SHARD: Cell<usize> = const { Cell::new(usize::MAX) });
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let index = SHARD.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        });
        let shard_lock = &self.shards[index];
        let mut shard = shard_lock.lock();
        let slot = match shard.free.pop() {
            Some(slot) => slot,
            None => {
                if shard.used_in_last == BLOCK_SLOTS {
                    let block = new_block(owner, shard_lock);
                    shard.blocks.push(block);
                    shard.used_in_last = 0;
                }
                let block = *shard.blocks.last().expect("a block was just added");
                let (chunk, i) = (shard.used_in_last / SLOTS, shard.used_in_last % SLOTS);
                shard.used_in_last += 1;
                // SAFETY: `block` is a live block of this shard, `chunk < BLOCK_CHUNKS` and
                // `i < SLOTS`, so this is a count in it; it is not handed out yet.
                unsafe { block.add(chunk * CHUNK_BYTES + HEADER_BYTES + 8 * i).cast::<AtomicU32>() }
            }
        };
        // SAFETY: the slot is free: no handle refers to it and no other thread writes it (its
        // shard's lock is held), so its fields and string may be (re)initialized.
        unsafe {
            slot.as_ptr().write(AtomicU32::new(1));
            slot.add(1).as_ptr().write(AtomicU32::new(0));
            hint_cell(slot).as_ptr().write(AtomicU64::new(0));
            (*cold(slot)).get().write(MaybeUninit::new(name));
        }
        shard.live += 1;
        (slot, shard.live == 1)
    }
}

fn block_layout() -> Layout {
    Layout::from_size_align(BLOCK_CHUNKS * CHUNK_BYTES, CHUNK_BYTES).expect("a block's layout is valid")
}

/// `BLOCK_CHUNKS` chunks in one allocation aligned to a chunk, their headers written, with
/// one array of strings for all of them.
fn new_block(owner: *const (), shard: &Mutex<Shard>) -> NonNull<u8> {
    let cold: Box<[Cold]> = (0..BLOCK_SLOTS).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let cold = NonNull::new(Box::into_raw(cold).cast::<Cold>()).expect("a box is not null");
    let layout = block_layout();
    // SAFETY: `layout` has a non-zero size.
    let Some(block) = NonNull::new(unsafe { alloc(layout) }) else { handle_alloc_error(layout) };
    for k in 0..BLOCK_CHUNKS {
        // SAFETY: `block` is a fresh allocation of `BLOCK_CHUNKS` chunks, each starting with
        // room for a header (aligned, as the block is), and `cold` one of `BLOCK_SLOTS`
        // strings. Only the headers are written here, the slots as they are handed out.
        unsafe {
            let header = Header { owner, cold: cold.add(k * SLOTS), shard };
            block.add(k * CHUNK_BYTES).cast::<Header>().write(header);
        }
    }
    block
}

/// The header of `slot`'s chunk, and `slot`'s index in it.
fn locate(slot: Slot) -> (*const Header, usize) {
    let base = slot.as_ptr() as usize & !(CHUNK_BYTES - 1);
    (base as *const Header, (slot.as_ptr() as usize - base - HEADER_BYTES) / 8)
}

/// `slot`'s hint cell.
///
/// # Safety
/// `slot` is a slot handed out by a live slab.
unsafe fn hint_cell(slot: Slot) -> NonNull<AtomicU64> {
    let (header, index) = locate(slot);
    // SAFETY: the chunk is `CHUNK_BYTES` from `header`, and the hints at `HINTS_AT` are
    // `SLOTS` of 8 bytes, `index < SLOTS` being the slot's.
    unsafe { NonNull::new_unchecked(header.cast::<u8>().add(HINTS_AT + 8 * index).cast_mut()).cast() }
}

/// The string cell of `slot`.
///
/// # Safety
/// `slot` is a slot handed out by a live slab.
unsafe fn cold(slot: Slot) -> *const Cold {
    let (header, index) = locate(slot);
    // SAFETY: the chunk's header is initialized (by `new_block`) and `index < SLOTS`, the
    // length of its string array.
    unsafe { (*header).cold.as_ptr().add(index) }
}

/// The Ready mark of `slot` (`SymbolName::ready_in`).
///
/// # Safety
/// `slot` is a slot handed out by a slab that outlives `'a`.
pub(crate) unsafe fn mark<'a>(slot: Slot) -> &'a AtomicU32 {
    // SAFETY: a mark follows its count, is initialized when the slot is handed out, and lives
    // with the slab.
    unsafe { slot.add(1).as_ref() }
}

/// The entry hint of `slot` (`SymbolName::hint`).
///
/// # Safety
/// `slot` is a slot handed out by a slab that outlives `'a`.
pub(crate) unsafe fn hint<'a>(slot: Slot) -> &'a AtomicU64 {
    // SAFETY: hints are initialized when a slot is handed out, and live with the slab.
    unsafe { hint_cell(slot).as_ref() }
}

/// The string of an allocated slot.
///
/// # Safety
/// `slot` is allocated (its count is not 0, or the caller is freeing it) and stays so for `'a`.
pub(crate) unsafe fn name<'a>(slot: Slot) -> &'a str {
    // SAFETY: an allocated slot's string cell is initialized and not written until the slot
    // is freed, which the caller rules out for `'a`.
    unsafe { (*(*cold(slot)).get()).assume_init_ref() }
}

/// The `owner` that `slot` was allocated with.
///
/// # Safety
/// `slot` is a slot handed out by a live slab.
pub(crate) unsafe fn owner(slot: Slot) -> *const () {
    // SAFETY: the header of a live slab's chunk is initialized and never written again.
    unsafe { (*locate(slot).0).owner }
}

/// Frees `slot`: returns its string, and whether its shard now has no live slot.
///
/// # Safety
/// `slot` is allocated, its count is 0, and nothing will read it again (no handle refers to it
/// and its pool no longer lists it).
pub(crate) unsafe fn free(slot: Slot) -> (Arc<str>, bool) {
    // SAFETY: the slab is live (the slot is allocated), so its shard's mutex is too.
    let shard_lock = unsafe { &*(*locate(slot).0).shard };
    let mut shard = shard_lock.lock();
    // SAFETY: the slot is allocated, so its string is initialized; it is taken out once,
    // under the shard's lock, and the slot is then listed free.
    let name = unsafe { (*(*cold(slot)).get()).assume_init_read() };
    shard.free.push(slot);
    shard.live -= 1;
    (name, shard.live == 0)
}

impl Drop for NameSlab {
    fn drop(&mut self) {
        for shard in &mut self.shards {
            let shard = shard.get_mut();
            debug_assert_eq!(shard.live, 0, "a slab outlives its live names");
            for &block in &shard.blocks {
                // SAFETY: every block was made by `new_block` and is freed once, here; its
                // first chunk's strings start its string array, whose cells are all
                // uninitialized (no slot is live), so dropping it drops nothing else.
                unsafe {
                    let cold = (*block.cast::<Header>().as_ptr()).cold;
                    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(cold.as_ptr(), BLOCK_SLOTS)));
                    dealloc(block.as_ptr(), block_layout());
                }
            }
        }
    }
}
