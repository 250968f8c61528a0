//! The vocabulary every other module speaks: interned symbol names, symbol flags, executor
//! addresses and symbol definitions.
//!
//! Names are interned once per session ([`SymbolStringPool`]) so that tables and the dependency
//! graph compare and hash them by address. A pool entry lives exactly as long as some
//! [`SymbolName`] refers to it: the last handle to go removes it from the pool.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bitflags::bitflags;
use dashmap::DashMap;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// An interned symbol name.
///
/// Contract: two `SymbolName`s from the same pool are equal exactly when their strings are
/// equal, and comparing or hashing them never looks at the string (it is a pointer compare).
/// Cloning is one atomic increment. Ordering (`Ord`) is by string, so sorted output is stable.
#[derive(Clone)]
pub struct SymbolName(Arc<Interned>);

struct Interned {
    name: Arc<str>,
    pool: Weak<PoolShared>,
    /// An entry of this name in its session (see [`SymbolName::hint`]).
    hint: AtomicU64,
    /// A dylib in which this name is Ready (see [`SymbolName::ready_in`]).
    ready_in: AtomicU64,
}

impl Drop for Interned {
    fn drop(&mut self) {
        // The last handle is gone. Take the entry out of the pool unless a concurrent `intern`
        // has already replaced it with a live one (then its `Weak` upgrades and we keep it).
        if let Some(pool) = self.pool.upgrade() {
            pool.map.remove_if(&*self.name, |_, w| w.strong_count() == 0);
        }
    }
}

impl SymbolName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// Where this name is defined, kept beside the reference count: the key of a live symbol
    /// entry with this name, written by the session of this name's pool when it defines the
    /// name and no live entry holds the hint (definitions in other dylibs go to their dylib's
    /// overflow table; see `SessionState::symbol_id`). The session checks the entry before
    /// trusting it. A lookup by name then touches memory it has just touched (this handle) and
    /// the entry it needs anyway, instead of probing a hash table at a random place. Any value
    /// is safe, so the accesses are relaxed.
    pub(crate) fn hint(&self) -> u64 {
        self.0.hint.load(Ordering::Relaxed)
    }

    pub(crate) fn set_hint(&self, hint: u64) {
        self.0.hint.store(hint, Ordering::Relaxed);
    }

    /// A dylib of this name's session in which the name has a live entry that is Ready, packed
    /// by the session (`DylibId::packed`), or 0 when none is known: written by the session of
    /// this name's pool when such an entry becomes Ready, and cleared when it is removed. A
    /// name Ready in several dylibs marks one. A dependency marked Ready in the dylib it is
    /// asked for needs no look at its entry, which is a cache miss when its symbol was emitted
    /// long before. Only that session writes the mark, under its lock, and a reader trusts it
    /// only for a dylib of its own session, so the accesses are relaxed.
    pub(crate) fn ready_in(&self) -> u64 {
        self.0.ready_in.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready_in(&self, packed_dylib: u64) {
        self.0.ready_in.store(packed_dylib, Ordering::Relaxed);
    }

    /// Whether this name was interned by `pool` (whose session alone may write its hint).
    pub(crate) fn is_from(&self, pool: &SymbolStringPool) -> bool {
        std::ptr::eq(self.0.pool.as_ptr(), Arc::as_ptr(&pool.0))
    }

    /// The address that identifies this name: equal names share it.
    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
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
        Arc::ptr_eq(&self.0, &other.0)
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

struct PoolShared {
    map: DashMap<Arc<str>, Weak<Interned>, FxBuildHasher>,
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
        SymbolStringPool(Arc::new(PoolShared { map: DashMap::with_hasher(FxBuildHasher) }))
    }

    /// Returns the one `SymbolName` for `name` in this pool.
    pub fn intern(&self, name: &str) -> SymbolName {
        if let Some(live) = self.0.map.get(name).and_then(|w| w.upgrade()) {
            return SymbolName(live);
        }
        let key: Arc<str> = Arc::from(name);
        let mut slot = self.0.map.entry(key.clone()).or_default();
        if let Some(live) = slot.upgrade() {
            return SymbolName(live);
        }
        let fresh = Arc::new(Interned {
            name: key,
            pool: Arc::downgrade(&self.0),
            hint: AtomicU64::new(0),
            ready_in: AtomicU64::new(0),
        });
        *slot = Arc::downgrade(&fresh);
        SymbolName(fresh)
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
    fn flags_say_strength() {
        assert!(SymbolFlags::EXPORTED.is_strong());
        assert!(!(SymbolFlags::EXPORTED | SymbolFlags::WEAK).is_strong());
        assert!(!SymbolFlags::COMMON.is_strong());
        assert_eq!(format!("{:?}", SymbolFlags::EXPORTED | SymbolFlags::CALLABLE), "EXPORTED | CALLABLE");
    }
}
