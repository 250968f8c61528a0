//! A slot map that grows in fixed chunks: entries never move once inserted.
//!
//! The session keeps one entry per symbol, unit, query and emitted group. `slotmap::SlotMap`
//! keeps its slots in one `Vec`, so every time it doubles, every entry is copied to fresh memory
//! and the old block freed: for a million 120-byte symbol entries that is about 240 MB of
//! copying and a page fault per 4 KiB of the new block, which was a quarter of the time of a
//! million `define`s. Here the slots live in chunks of [`CHUNK`] that are allocated once and
//! filled in place, so an entry is written once, where it stays.
//!
//! Keys are `slotmap` keys (the crate's `new_key_type!` ids) encoded the way `slotmap` encodes
//! them (index in the low half, an odd version in the high half), so they keep their `Ord`,
//! `Hash` and FFI form. A removed slot's version is bumped, so a stale key finds nothing.

use std::marker::PhantomData;

use slotmap::{Key, KeyData};

/// Slots per chunk. 1,024 entries of the largest kind (a symbol) is about 120 KiB.
const CHUNK: usize = 1024;

enum Slot<V> {
    /// Versions of occupied slots are odd.
    Occupied { version: u32, value: V },
    /// `next_free` is the index of the next free slot, or 0 for none (index 0 is never used).
    Vacant { version: u32, next_free: u32 },
}

pub(crate) struct Arena<K, V> {
    chunks: Vec<Vec<Slot<V>>>,
    /// Slots ever used: indices `1..=used` exist.
    used: u32,
    len: usize,
    free_head: u32,
    _key: PhantomData<fn(K) -> K>,
}

impl<K: Key, V> Default for Arena<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

fn key_parts<K: Key>(key: K) -> (u32, u32) {
    let ffi = key.data().as_ffi();
    (ffi as u32, (ffi >> 32) as u32)
}

fn make_key<K: Key>(index: u32, version: u32) -> K {
    K::from(KeyData::from_ffi((u64::from(version) << 32) | u64::from(index)))
}

impl<K: Key, V> Arena<K, V> {
    pub fn new() -> Self {
        Arena { chunks: Vec::new(), used: 0, len: 0, free_head: 0, _key: PhantomData }
    }

    fn slot(&self, index: u32) -> Option<&Slot<V>> {
        if index == 0 || index > self.used {
            return None;
        }
        let i = (index - 1) as usize;
        Some(&self.chunks[i / CHUNK][i % CHUNK])
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<V>> {
        if index == 0 || index > self.used {
            return None;
        }
        let i = (index - 1) as usize;
        Some(&mut self.chunks[i / CHUNK][i % CHUNK])
    }

    pub fn insert(&mut self, value: V) -> K {
        self.len += 1;
        if self.free_head != 0 {
            let index = self.free_head;
            let slot = self.slot_mut(index).expect("free list holds live indices");
            let Slot::Vacant { version, next_free } = *slot else { unreachable!("free list holds vacant slots") };
            let version = version.wrapping_add(1) | 1;
            *slot = Slot::Occupied { version, value };
            self.free_head = next_free;
            return make_key(index, version);
        }
        let i = self.used as usize;
        assert!(i < u32::MAX as usize - 1, "arena full");
        if i % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk with room").push(Slot::Occupied { version: 1, value });
        self.used += 1;
        make_key(self.used, 1)
    }

    pub fn get(&self, key: K) -> Option<&V> {
        let (index, version) = key_parts(key);
        match self.slot(index)? {
            Slot::Occupied { version: v, value } if *v == version => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let (index, version) = key_parts(key);
        match self.slot_mut(index)? {
            Slot::Occupied { version: v, value } if *v == version => Some(value),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    pub fn remove(&mut self, key: K) -> Option<V> {
        let (index, version) = key_parts(key);
        let free_head = self.free_head;
        let slot = self.slot_mut(index)?;
        if !matches!(slot, Slot::Occupied { version: v, .. } if *v == version) {
            return None;
        }
        let vacant = Slot::Vacant { version: version.wrapping_add(1), next_free: free_head };
        let Slot::Occupied { value, .. } = std::mem::replace(slot, vacant) else { unreachable!("checked") };
        self.free_head = index;
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Removes every entry. Keys handed out before stay dead: versions are kept.
    pub fn clear(&mut self) {
        drop(self.drain());
    }

    /// Removes and returns every entry.
    pub fn drain(&mut self) -> std::vec::IntoIter<(K, V)> {
        let mut out = Vec::with_capacity(self.len);
        let mut free_head = 0;
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            for (o, slot) in chunk.iter_mut().enumerate() {
                let index = (c * CHUNK + o + 1) as u32;
                let version = match slot {
                    Slot::Occupied { version, .. } | Slot::Vacant { version, .. } => *version,
                };
                let vacant_version = if version % 2 == 1 { version.wrapping_add(1) } else { version };
                let old = std::mem::replace(slot, Slot::Vacant { version: vacant_version, next_free: free_head });
                free_head = index;
                if let Slot::Occupied { value, .. } = old {
                    out.push((make_key(index, version), value));
                }
            }
        }
        self.free_head = free_head;
        self.len = 0;
        out.into_iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(o, slot)| match slot {
                Slot::Occupied { version, value } => Some((make_key((c * CHUNK + o + 1) as u32, *version), value)),
                Slot::Vacant { .. } => None,
            })
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        self.chunks.iter_mut().enumerate().flat_map(|(c, chunk)| {
            chunk.iter_mut().enumerate().filter_map(move |(o, slot)| match slot {
                Slot::Occupied { version, value } => Some((make_key((c * CHUNK + o + 1) as u32, *version), value)),
                Slot::Vacant { .. } => None,
            })
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }
}

impl<K: Key, V> std::ops::Index<K> for Arena<K, V> {
    type Output = V;
    fn index(&self, key: K) -> &V {
        self.get(key).expect("live key")
    }
}

impl<K: Key, V> std::ops::IndexMut<K> for Arena<K, V> {
    fn index_mut(&mut self, key: K) -> &mut V {
        self.get_mut(key).expect("live key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotmap::new_key_type;

    new_key_type! { struct Id; }

    #[test]
    fn entries_stay_put_and_stale_keys_find_nothing() {
        let mut a: Arena<Id, u64> = Arena::new();
        let keys: Vec<Id> = (0..3 * CHUNK as u64 + 5).map(|v| a.insert(v)).collect();
        let first = &a[keys[0]] as *const u64;
        assert_eq!(a.len(), keys.len());
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(a[k], i as u64);
        }
        assert_eq!(first, &a[keys[0]] as *const u64, "growth moved an entry");

        assert_eq!(a.remove(keys[7]), Some(7));
        assert_eq!(a.remove(keys[7]), None);
        assert!(a.get(keys[7]).is_none());
        let reused = a.insert(99);
        assert_ne!(reused, keys[7], "a reused slot gets a new version");
        assert!(a.get(keys[7]).is_none());
        assert_eq!(a[reused], 99);
        assert_eq!(a.len(), keys.len());

        let mut all: Vec<(Id, u64)> = a.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_by_key(|&(_, v)| v);
        assert_eq!(all.len(), keys.len());
        assert_eq!(a.keys().count(), keys.len());

        let drained: Vec<(Id, u64)> = a.drain().collect();
        assert_eq!(drained.len(), keys.len());
        assert_eq!(a.len(), 0);
        for (k, _) in drained {
            assert!(a.get(k).is_none(), "a drained key stays dead");
        }
        let k = a.insert(1);
        assert_eq!(a[k], 1);
        assert_eq!(a.len(), 1);
        a.clear();
        assert!(a.get(k).is_none());
        assert!(a.get(Id::default()).is_none(), "the null key is never live");
    }
}
