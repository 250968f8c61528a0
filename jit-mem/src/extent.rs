//! Free space as a set of disjoint extents `[start, start+len)` of offsets, coalesced on
//! insert, with best-fit, lowest-fit and highest-fit placement. Knows nothing about memory.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Default, Debug)]
pub(crate) struct ExtentSet {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    free: u64,
}

/// How many too-badly-aligned candidates best-fit looks at before it asks for an extent
/// that fits whatever its alignment.
const BEST_FIT_PROBES: usize = 8;

impl ExtentSet {
    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free
    }

    fn add(&mut self, start: u64, len: u64) {
        self.by_start.insert(start, len);
        self.by_len.insert((len, start));
        self.free += len;
    }

    fn remove(&mut self, start: u64, len: u64) {
        self.by_start.remove(&start);
        self.by_len.remove(&(len, start));
        self.free -= len;
    }

    /// Returns `[start, start+len)` to the set. Returns false (and changes nothing) if any
    /// of it is already free, which would mean a double release.
    pub(crate) fn insert(&mut self, mut start: u64, mut len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let end = start + len;
        if let Some((&s, &l)) = self.by_start.range(..end).next_back() {
            if s + l > start {
                return false;
            }
            if s + l == start {
                self.remove(s, l);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.by_start.get(&end) {
            self.remove(end, l);
            len += l;
        }
        self.add(start, len);
        true
    }

    /// Takes `size` bytes at `pos` out of the free extent `[start, start+len)`.
    fn take_at(&mut self, start: u64, len: u64, pos: u64, size: u64) -> u64 {
        self.remove(start, len);
        if pos > start {
            self.add(start, pos - start);
        }
        let end = start + len;
        if pos + size < end {
            self.add(pos + size, end - pos - size);
        }
        pos
    }

    /// The smallest extent that fits `size` bytes aligned to `align`; takes the bytes from
    /// its low end.
    pub(crate) fn take_best_fit(&mut self, size: u64, align: u64) -> Option<u64> {
        let size = size.max(1);
        let fits = |&(len, start): &(u64, u64)| {
            let pos = align_up(start, align);
            (pos + size <= start + len).then_some((len, start, pos))
        };
        let found = self
            .by_len
            .range((size, 0)..)
            .take(BEST_FIT_PROBES)
            .find_map(fits)
            .or_else(|| self.by_len.range((size + align - 1, 0)..).next().and_then(fits));
        let (len, start, pos) = found?;
        Some(self.take_at(start, len, pos, size))
    }

    /// The lowest-addressed fit.
    pub(crate) fn take_lowest(&mut self, size: u64, align: u64) -> Option<u64> {
        let size = size.max(1);
        let (start, len, pos) = self.by_start.iter().find_map(|(&start, &len)| {
            let pos = align_up(start, align);
            (pos + size <= start + len).then_some((start, len, pos))
        })?;
        Some(self.take_at(start, len, pos, size))
    }

    /// The highest-addressed fit, taken from the top of its extent.
    pub(crate) fn take_highest(&mut self, size: u64, align: u64) -> Option<u64> {
        let size = size.max(1);
        let (start, len, pos) = self.by_start.iter().rev().find_map(|(&start, &len)| {
            let top = (start + len).checked_sub(size)?;
            let pos = top & !(align - 1);
            (pos >= start).then_some((start, len, pos))
        })?;
        Some(self.take_at(start, len, pos, size))
    }

    /// Removes whatever free space lies inside `[start, start+len)`.
    pub(crate) fn carve(&mut self, start: u64, len: u64) {
        let end = start + len;
        let first = self.by_start.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        let hits: Vec<(u64, u64)> =
            self.by_start.range(first..end).filter(|&(&s, &l)| s + l > start).map(|(&s, &l)| (s, l)).collect();
        for (s, l) in hits {
            self.remove(s, l);
            if s < start {
                self.add(s, start - s);
            }
            if s + l > end {
                self.add(end, s + l - end);
            }
        }
    }

    /// Whether all of `[start, start+len)` is free.
    pub(crate) fn covers(&self, start: u64, len: u64) -> bool {
        self.by_start.range(..=start).next_back().is_some_and(|(&s, &l)| s + l >= start + len)
    }
}

const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_coalesce_with_both_neighbours() {
        let mut set = ExtentSet::default();
        assert!(set.insert(0, 16));
        assert!(set.insert(32, 16));
        assert!(set.insert(16, 16));
        assert_eq!(set.by_start.len(), 1);
        assert_eq!(set.free_bytes(), 48);
        assert!(set.covers(0, 48));
    }

    #[test]
    fn overlapping_insert_is_refused() {
        let mut set = ExtentSet::default();
        assert!(set.insert(0, 64));
        assert!(!set.insert(32, 8));
        assert!(!set.insert(60, 8));
        assert_eq!(set.free_bytes(), 64);
    }

    #[test]
    fn best_fit_prefers_the_smallest_hole_and_honours_alignment() {
        let mut set = ExtentSet::default();
        set.insert(0, 1000);
        set.insert(2000, 40);
        assert_eq!(set.take_best_fit(32, 16), Some(2000));
        assert_eq!(set.take_best_fit(64, 256), Some(0));
        assert_eq!(set.take_best_fit(10, 512), Some(512));
        assert_eq!(set.free_bytes(), 1040 - 32 - 64 - 10);
    }

    #[test]
    fn lowest_and_highest_fit_take_from_the_ends() {
        let mut set = ExtentSet::default();
        set.insert(4096, 4096 * 10);
        assert_eq!(set.take_lowest(4096, 4096), Some(4096));
        assert_eq!(set.take_highest(8192, 4096), Some(4096 * 9));
        assert_eq!(set.free_bytes(), 4096 * 7);
        assert_eq!(set.take_highest(4096 * 8, 4096), None);
    }

    #[test]
    fn carve_removes_only_the_intersection() {
        let mut set = ExtentSet::default();
        set.insert(0, 100);
        set.insert(200, 100);
        set.carve(50, 200);
        assert!(set.covers(0, 50));
        assert!(set.covers(250, 50));
        assert!(!set.covers(50, 1));
        assert_eq!(set.free_bytes(), 100);
    }
}
