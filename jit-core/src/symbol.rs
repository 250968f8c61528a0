//! The vocabulary every other module speaks: interned symbol names, symbol flags, executor
//! addresses and symbol definitions.
//!
//! Names are interned once per session ([`SymbolStringPool`]) so that tables and the dependency
//! graph compare and hash them by address. A pool entry lives exactly as long as some
//! [`SymbolName`] refers to it: the last handle to go removes it from the pool.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bitflags::bitflags;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::name_slab::{self, NameSlab, Slot};

/// An interned symbol name.
///
/// Contract: two `SymbolName`s from the same pool are equal exactly when their strings are
/// equal, and comparing or hashing them never looks at the string (it is a pointer compare).
/// Cloning is one atomic increment on the name's count, packed with other names' counts
/// (`name_slab`). Ordering (`Ord`) is by string, so sorted output is stable.
pub struct SymbolName(Slot);

// SAFETY: a `SymbolName` is a counted reference to an allocated slot of its pool's slab: the
// slot's fields that change are atomics, its string is not written while any handle exists,
// and the slab outlives every handle (see `PoolShared`). So handles may move and be shared
// between threads as `Arc`s are.
unsafe impl Send for SymbolName {}
// SAFETY: as for `Send`.
unsafe impl Sync for SymbolName {}

/// Handles beyond this many abort, as `Arc` does past `isize::MAX`, rather than wrap the count.
const MAX_HANDLES: u32 = i32::MAX as u32;

impl SymbolName {
    fn count(&self) -> &AtomicU32 {
        // SAFETY: this handle keeps its slot allocated, and the slab that holds it alive.
        unsafe { self.0.as_ref() }
    }

    /// A new handle to `slot`, unless its count has reached 0 (its last handle is gone and
    /// it is being freed: it never comes back).
    fn upgrade(slot: Slot) -> Option<SymbolName> {
        // SAFETY: `slot` is read from its pool's map, under the map's lock, so it has not been
        // freed (a slot is freed after it leaves the map, under the same lock).
        let count = unsafe { slot.as_ref() };
        let mut seen = count.load(Ordering::Relaxed);
        loop {
            if seen == 0 {
                return None;
            }
            if seen > MAX_HANDLES {
                std::process::abort();
            }
            match count.compare_exchange_weak(seen, seen + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(SymbolName(slot)),
                Err(now) => seen = now,
            }
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // SAFETY: this handle keeps its slot allocated for as long as it is borrowed.
        unsafe { name_slab::name(self.0) }
    }

    /// Where this name is defined, kept beside the reference count: the key of a live symbol
    /// entry with this name, written by the session of this name's pool when it defines the
    /// name and no live entry holds the hint (definitions in other dylibs go to their dylib's
    /// overflow table; see `SessionState::symbol_id`). The session checks the entry before
    /// trusting it. A lookup by name then touches memory it has just touched (this handle) and
    /// the entry it needs anyway, instead of probing a hash table at a random place. Any value
    /// is safe, so the accesses are relaxed.
    pub(crate) fn hint(&self) -> u64 {
        // SAFETY: this handle keeps its slab alive.
        unsafe { name_slab::hint(self.0) }.load(Ordering::Relaxed)
    }

    pub(crate) fn set_hint(&self, hint: u64) {
        // SAFETY: this handle keeps its slab alive.
        unsafe { name_slab::hint(self.0) }.store(hint, Ordering::Relaxed);
    }

    /// A dylib of this name's session in which the name has a live entry that is Ready
    /// (`DylibId::ready_mark`), or 0 when none is known: written by the session of this name's
    /// pool when such an entry becomes Ready, and cleared when it is removed. A name Ready in
    /// several dylibs marks one. A dependency marked Ready in the dylib it is asked for needs
    /// no look at its entry, which is a cache miss when its symbol was emitted long before.
    /// Only that session writes the mark, under its lock, and a reader trusts it only for a
    /// name of its own pool (`is_from`), so the accesses are relaxed.
    pub(crate) fn ready_in(&self) -> u32 {
        // SAFETY: this handle keeps its slab alive.
        unsafe { name_slab::mark(self.0) }.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready_in(&self, mark: u32) {
        // SAFETY: this handle keeps its slab alive.
        unsafe { name_slab::mark(self.0) }.store(mark, Ordering::Relaxed);
    }

    /// Whether this name was interned by `pool` (whose session alone may write its marks).
    pub(crate) fn is_from(&self, pool: &SymbolStringPool) -> bool {
        // SAFETY: this handle keeps its slot allocated, and so its slab alive.
        std::ptr::eq(unsafe { name_slab::owner(self.0) }, Arc::as_ptr(&pool.0).cast())
    }

    /// The address that identifies this name: equal names share it.
    fn key(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// Frees the slot of the handle that took its count to 0.
    #[cold]
    #[inline(never)]
    fn release(slot: Slot) {
        // SAFETY: the pool that owns the slot's slab is alive: a shard with an allocated slot
        // holds a reference to it (`PoolShared`), and this slot is not freed yet.
        let pool = unsafe { &*name_slab::owner(slot).cast::<PoolShared>() };
        // SAFETY: the slot is allocated until `free` below.
        let name = unsafe { name_slab::name(slot) };
        // Out of the map, unless a concurrent `intern` has already put a fresh slot in its
        // place. Either way the map's lock is taken, so no `intern` still reads this slot.
        pool.map.remove_if(name, |_, listed| listed.0 == slot);
        // SAFETY: the count is 0 and never rises again, and the map no longer lists the slot.
        let (name, emptied) = unsafe { name_slab::free(slot) };
        drop(name);
        if emptied {
            // SAFETY: the shard took this reference when its first live slot was allocated
            // (`SymbolStringPool::fresh_slot`); the pool is not used after it is dropped.
            unsafe { Arc::decrement_strong_count(std::ptr::from_ref(pool)) };
        }
    }
}

impl Clone for SymbolName {
    #[inline]
    fn clone(&self) -> Self {
        if self.count().fetch_add(1, Ordering::Relaxed) > MAX_HANDLES {
            std::process::abort();
        }
        SymbolName(self.0)
    }
}

impl Drop for SymbolName {
    #[inline]
    fn drop(&mut self) {
        // As `Arc`: the release makes this handle's uses happen before the slot is freed, and
        // the acquire fence makes every other handle's uses happen before it too.
        if self.count().fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            SymbolName::release(self.0);
        }
    }
}

impl std::ops::Deref for SymbolName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SymbolName {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for SymbolName {}

impl Hash for SymbolName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.key());
    }
}

impl PartialOrd for SymbolName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SymbolName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self == other { std::cmp::Ordering::Equal } else { self.as_str().cmp(other.as_str()) }
    }
}

impl fmt::Display for SymbolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for SymbolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.as_str())
    }
}

/// A slot as the pool's map lists it.
#[derive(Clone, Copy)]
struct Listed(Slot);

// SAFETY: a listed slot is only dereferenced under the map's lock, while it cannot be freed
// (see `SymbolName::upgrade`); its fields that change are atomics.
unsafe impl Send for Listed {}
// SAFETY: as for `Send`.
unsafe impl Sync for Listed {}

/// A pool's map and the slab of its names' slots.
///
/// It lives while a pool handle does, and while any of its names does: each shard of the slab
/// with an allocated slot holds one strong reference (taken when the shard's first live slot
/// is allocated and dropped when its last is freed), so the slab is freed only after the
/// last name is.
struct PoolShared {
    map: DashMap<Arc<str>, Listed, FxBuildHasher>,
    slab: NameSlab,
}

/// The pool that interns symbol names; cheap to clone (all clones share one pool).
///
/// Contract: `intern` may be called from any thread at any time; it never takes the session
/// lock. Entries whose last [`SymbolName`] was dropped are reclaimed at that moment.
#[derive(Clone)]
pub struct SymbolStringPool(Arc<PoolShared>);

impl Default for SymbolStringPool {
    fn default() -> Self {
        Self::new()
    }
}

impl SymbolStringPool {
    pub fn new() -> Self {
        SymbolStringPool(Arc::new(PoolShared { map: DashMap::with_hasher(FxBuildHasher), slab: NameSlab::new() }))
    }

    /// Returns the one `SymbolName` for `name` in this pool.
    pub fn intern(&self, name: &str) -> SymbolName {
        if let Some(live) = self.0.map.get(name).and_then(|listed| SymbolName::upgrade(listed.0)) {
            return live;
        }
        let key: Arc<str> = Arc::from(name);
        match self.0.map.entry(key.clone()) {
            Entry::Occupied(mut listed) => {
                if let Some(live) = SymbolName::upgrade(listed.get().0) {
                    return live;
                }
                // Its last handle has just gone and it is on its way out: list a fresh slot
                // instead (the dying one's `release` leaves it be).
                let fresh = self.fresh_slot(key);
                listed.insert(Listed(fresh));
                SymbolName(fresh)
            }
            Entry::Vacant(vacant) => {
                let fresh = self.fresh_slot(key);
                vacant.insert(Listed(fresh));
                SymbolName(fresh)
            }
        }
    }

    /// A slot for `name`, its count 1.
    fn fresh_slot(&self, name: Arc<str>) -> Slot {
        let (slot, first_in_shard) = self.0.slab.alloc(Arc::as_ptr(&self.0).cast(), name);
        if first_in_shard {
            // The shard's reference to the pool (see `PoolShared`), dropped by
            // `SymbolName::release` when the shard's last live slot is freed. Taken while `self`
            // keeps the pool alive, so its order against such a drop does not matter.
            std::mem::forget(self.0.clone());
        }
        slot
    }

    /// Number of live entries (names some handle still refers to, give or take concurrent drops).
    pub fn len(&self) -> usize {
        self.0.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SymbolStringPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymbolStringPool").field("len", &self.len()).finish()
    }
}

/// An address in the process that runs JIT'd code (here always this process).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ExecutorAddr(pub u64);

impl ExecutorAddr {
    pub const NULL: ExecutorAddr = ExecutorAddr(0);

    pub fn from_ptr<T: ?Sized>(ptr: *const T) -> Self {
        ExecutorAddr(ptr as *const u8 as usize as u64)
    }

    /// The address as a raw pointer; dereferencing it is the caller's business.
    pub fn as_ptr<T>(self) -> *const T {
        self.0 as usize as *const T
    }

    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ExecutorAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Display for ExecutorAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

bitflags! {
    /// What a definition promises about its symbol (the ELF binding and type, in ORC's terms).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SymbolFlags: u8 {
        /// Visible to lookups that match exported symbols only (ELF default visibility).
        const EXPORTED = 1 << 0;
        /// May be overridden by a strong definition; loses silently to one.
        const WEAK = 1 << 1;
        /// A common (tentative) definition: weak, and sized by the largest one.
        const COMMON = 1 << 2;
        /// The address is absolute, not relative to any allocation.
        const ABSOLUTE = 1 << 3;
        /// The symbol is a function (a lazy stub may stand for it).
        const CALLABLE = 1 << 4;
        /// Materializing it has side effects (e.g. running initializers) but it has no address:
        /// it must be looked up as weakly referenced and never appears in a result.
        const MATERIALIZATION_SIDE_EFFECTS_ONLY = 1 << 5;
    }
}

impl SymbolFlags {
    pub fn is_strong(self) -> bool {
        !self.intersects(SymbolFlags::WEAK | SymbolFlags::COMMON)
    }
}

impl fmt::Debug for SymbolFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bitflags::parser::to_writer(self, &mut *f)
    }
}

/// A resolved symbol: its address and flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SymbolDef {
    pub addr: ExecutorAddr,
    pub flags: SymbolFlags,
}

impl SymbolDef {
    pub fn new(addr: ExecutorAddr, flags: SymbolFlags) -> Self {
        SymbolDef { addr, flags }
    }
}

/// The symbols a materialization unit can provide, with their flags.
///
/// A short list kept inline (most units provide one or a few symbols, so defining one costs no
/// allocation); lookups by name are linear. Names must be unique within an interface:
/// `JitDylib::define` rejects an interface that repeats one.
#[derive(Default, PartialEq, Eq)]
pub struct Interface(SmallVec<[(SymbolName, SymbolFlags); 2]>);

impl Clone for Interface {
    fn clone(&self) -> Self {
        Interface(crate::collect_small(self.0.iter().cloned()))
    }
}

impl Interface {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` with `flags` (replacing the flags if it is already present).
    pub fn insert(&mut self, name: SymbolName, flags: SymbolFlags) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = flags,
            None => self.0.push((name, flags)),
        }
    }

    /// Adds `name` without checking for a duplicate (for building large interfaces quickly).
    pub fn push(&mut self, name: SymbolName, flags: SymbolFlags) {
        self.0.push((name, flags));
    }

    pub fn with(mut self, name: SymbolName, flags: SymbolFlags) -> Self {
        self.insert(name, flags);
        self
    }

    pub fn remove(&mut self, name: &SymbolName) -> Option<SymbolFlags> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(i).1)
    }

    pub fn get(&self, name: &SymbolName) -> Option<SymbolFlags> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    }

    pub fn contains(&self, name: &SymbolName) -> bool {
        self.get(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SymbolName, SymbolFlags)> {
        self.0.iter().map(|(n, f)| (n, *f))
    }

    pub fn names(&self) -> impl Iterator<Item = &SymbolName> {
        self.0.iter().map(|(n, _)| n)
    }

    pub fn as_slice(&self) -> &[(SymbolName, SymbolFlags)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(SymbolName, SymbolFlags)> for Interface {
    fn from_iter<I: IntoIterator<Item = (SymbolName, SymbolFlags)>>(iter: I) -> Self {
        Interface(crate::collect_small(iter))
    }
}

impl IntoIterator for Interface {
    type Item = (SymbolName, SymbolFlags);
    type IntoIter = smallvec::IntoIter<[(SymbolName, SymbolFlags); 2]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Interface {
    type Item = &'a (SymbolName, SymbolFlags);
    type IntoIter = std::slice::Iter<'a, (SymbolName, SymbolFlags)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(n, fl)| (n, fl))).finish()
    }
}

/// Name -> definition, the result of a lookup.
pub type SymbolMap = FxHashMap<SymbolName, SymbolDef>;
/// Name -> flags.
pub type SymbolFlagsMap = FxHashMap<SymbolName, SymbolFlags>;
pub type SymbolNameSet = FxHashSet<SymbolName>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_intern_to_the_same_name() {
        let pool = SymbolStringPool::new();
        let a = pool.intern("printf");
        let b = pool.intern("printf");
        let c = pool.intern("puts");
        assert_eq!(a, b);
        assert_eq!(a.key(), b.key());
        assert_ne!(a, c);
        assert_eq!(&*a, "printf");
        assert_eq!(format!("{a:?}"), "'printf'");
        assert!(a < c, "ordering is by string: printf < puts");
    }

    #[test]
    fn dead_entries_are_reclaimed_when_the_last_handle_drops() {
        let pool = SymbolStringPool::new();
        let a = pool.intern("x");
        let a2 = a.clone();
        let _b = pool.intern("y");
        assert_eq!(pool.len(), 2);
        drop(a);
        assert_eq!(pool.len(), 2, "a clone still refers to 'x'");
        drop(a2);
        assert_eq!(pool.len(), 1);
        // Re-interning after reclamation gives a fresh, working entry.
        let again = pool.intern("x");
        assert_eq!(again, pool.intern("x"));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn concurrent_interning_agrees_and_reclaims() {
        let pool = SymbolStringPool::new();
        let names: Vec<String> = (0..200).map(|i| format!("sym{i}")).collect();
        let results: Vec<Vec<SymbolName>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let pool = pool.clone();
                    let names = &names;
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for round in 0..50 {
                            for (i, n) in names.iter().enumerate() {
                                let name = pool.intern(n);
                                // Keep some, drop others, so entries die and come back.
                                if (i + round + t) % 7 == 0 {
                                    out.push(name);
                                }
                            }
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for kept in &results {
            for name in kept {
                assert_eq!(*name, pool.intern(name.as_str()));
            }
        }
        drop(results);
        assert_eq!(pool.len(), 0, "every entry died with its last handle");
    }

    #[test]
    fn names_outlive_their_pool_which_goes_with_the_last_of_them() {
        let pool = SymbolStringPool::new();
        let shared = Arc::downgrade(&pool.0);
        let (a, b) = (pool.intern("alpha"), pool.intern("beta"));
        let a2 = a.clone();
        drop(pool);
        assert_eq!((a.as_str(), b.as_str()), ("alpha", "beta"));
        assert_eq!(a, a2);
        drop((a, b));
        assert!(shared.upgrade().is_some(), "a clone of 'alpha' still lives");
        assert_eq!(a2.as_str(), "alpha");
        drop(a2);
        assert!(shared.upgrade().is_none(), "the pool and its slab went with the last name");
    }

    #[test]
    fn a_freed_slot_serves_a_new_name_with_clear_marks() {
        let pool = SymbolStringPool::new();
        let a = pool.intern("a");
        a.set_hint(7);
        a.set_ready_in(3);
        let slot = a.key();
        drop(a);
        let b = pool.intern("b");
        assert_eq!(b.key(), slot, "the freed slot is reused (same thread, same shard)");
        assert_eq!((b.as_str(), b.hint(), b.ready_in()), ("b", 0, 0));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn names_in_many_chunks_from_many_threads_read_back_and_are_all_freed() {
        // 4 threads x 20,000 names: more than a block of chunks (16,368 slots) per shard.
        let pool = SymbolStringPool::new();
        let shared = Arc::downgrade(&pool.0);
        let kept: Vec<Vec<SymbolName>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let pool = pool.clone();
                    s.spawn(move || {
                        let names: Vec<SymbolName> = (0..20_000).map(|i| pool.intern(&format!("t{t}_{i}"))).collect();
                        for (i, name) in names.iter().enumerate() {
                            assert_eq!(name.as_str(), format!("t{t}_{i}"));
                        }
                        names.into_iter().enumerate().filter(|(i, _)| i % 3 == 0).map(|(_, n)| n).collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(pool.len(), kept.iter().map(Vec::len).sum::<usize>());
        for (t, names) in kept.iter().enumerate() {
            for (k, name) in names.iter().enumerate() {
                assert_eq!(*name, pool.intern(&format!("t{t}_{}", 3 * k)));
            }
        }
        // Freed slots serve new names.
        let fresh: Vec<SymbolName> = (0..30_000).map(|i| pool.intern(&format!("fresh{i}"))).collect();
        assert!(fresh.iter().enumerate().all(|(i, n)| n.as_str() == format!("fresh{i}")));
        drop((pool, fresh));
        assert!(shared.upgrade().is_some());
        drop(kept);
        assert!(shared.upgrade().is_none(), "every slot freed, the slab with them");
    }

    #[test]
    fn flags_say_strength() {
        assert!(SymbolFlags::EXPORTED.is_strong());
        assert!(!(SymbolFlags::EXPORTED | SymbolFlags::WEAK).is_strong());
        assert!(!SymbolFlags::COMMON.is_strong());
        assert_eq!(format!("{:?}", SymbolFlags::EXPORTED | SymbolFlags::CALLABLE), "EXPORTED | CALLABLE");
    }
}
