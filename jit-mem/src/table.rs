//! A generational table of finalized allocations: keys are (slot, generation), so a stale
//! or forged key is detected instead of reaching another allocation's record.

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Key {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

pub(crate) enum Lookup<'a, T> {
    Live(&'a mut T),
    /// The slot once held this key's record, which is gone: a double free.
    Gone,
    /// No record ever had this key.
    Never,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Table<T> {
    slots: Vec<Slot<T>>,
    vacant: Vec<u32>,
    live: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { slots: Vec::new(), vacant: Vec::new(), live: 0 }
    }
}

impl<T> Table<T> {
    pub(crate) fn insert(&mut self, value: T) -> Key {
        self.live += 1;
        if let Some(slot) = self.vacant.pop() {
            let entry = &mut self.slots[slot as usize];
            entry.value = Some(value);
            return Key { slot, generation: entry.generation };
        }
        let slot = self.slots.len() as u32;
        self.slots.push(Slot { generation: 0, value: Some(value) });
        Key { slot, generation: 0 }
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Lookup<'_, T> {
        let Some(slot) = self.slots.get_mut(key.slot as usize) else {
            return Lookup::Never;
        };
        let current = slot.generation;
        match &mut slot.value {
            Some(v) if current == key.generation => Lookup::Live(v),
            None if current == key.generation => Lookup::Gone,
            _ if key.generation < current => Lookup::Gone,
            _ => Lookup::Never,
        }
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.slots.get_mut(key.slot as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        // A slot whose generation would wrap is retired rather than risk a stale key
        // matching again.
        if let Some(next) = entry.generation.checked_add(1) {
            entry.generation = next;
            self.vacant.push(key.slot);
        }
        self.live -= 1;
        Some(value)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.live = 0;
        self.slots.iter_mut().filter_map(|s| s.value.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_forged_keys_are_told_apart() {
        let mut table = Table::default();
        let a = table.insert("a");
        assert!(matches!(table.get_mut(a), Lookup::Live(_)));
        assert_eq!(table.remove(a), Some("a"));
        assert!(matches!(table.get_mut(a), Lookup::Gone));
        let b = table.insert("b");
        assert_eq!(b.slot, a.slot);
        assert!(matches!(table.get_mut(a), Lookup::Gone));
        assert!(matches!(table.get_mut(Key { slot: 7, generation: 0 }), Lookup::Never));
        assert!(matches!(table.get_mut(Key { slot: b.slot, generation: 9 }), Lookup::Never));
        assert_eq!(table.remove(a), None);
        assert_eq!(table.len(), 1);
    }
}
