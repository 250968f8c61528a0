//! Packing many small segments into slabs: the engine shared by the dual-mapped and the
//! mprotect slab managers. A slab is a page-aligned range of the reservation dedicated to one
//! protection; segments are placed best-fit inside the slabs of their protection, and freed
//! space is reused. How a slab is mapped, and whether its pages are sealed with `mprotect` at
//! finalize, is the [`SlabBacking`]'s business.
//!
//! How bytes reach R and RX slabs is the backing's choice ([`Writes`]): through a second view
//! (dual mapping), through a staging buffer copied at finalize (mprotect backing over
//! `/proc/self/mem`; the slab has its final protection from the start), or in place with the
//! pages sealed afterwards (mprotect backing otherwise).
//!
//! Sealing (in-place writes, R and RX slabs): a page is writable while open; the first
//! finalize of an allocation touching it *closes* it (no new allocation lands there), and
//! once every allocation touching it has finalized or been abandoned it is *sealed* (made
//! R/RX, in one `mprotect` per run of pages). A finalize completes when all its pages are
//! sealed. A sealed page is reopened (made RW) only when no live allocation touches it.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::alloc::{ActionFn, Backend, OnFinalized, Parts, Placed, run_deallocate_actions, run_finalize_actions};
use crate::extent::ExtentSet;
use crate::sys::{LowReservationError, Reservation, align_up, page_size};
use crate::table::{Key, Lookup, Table};
use crate::{
    AllocRequest, FinalizeAction, FinalizedAlloc, InFlightAlloc, LOW_PLACEMENT_LIMIT, MAX_ALIGN, MAX_RESERVATION,
    ManagerConfig, ManagerId, MemError, MemStats, NEAR_REACH, Placement, Prot, RawFinalizedAlloc, SegmentInfo,
    SegmentLifetime, TargetAddr, maps,
};

/// Segments are placed at multiples of this, and sized in multiples of it.
pub(crate) const GRANULE: u64 = 16;

/// An empty spare slab keeps up to this many dirty bytes instead of giving its pages back:
/// a manager whose last object comes and goes would otherwise punch and re-fault its pages
/// every time.
const SPARE_KEEP_DIRTY: u64 = 256 << 10;

/// How the linker's bytes reach R and RX slabs (RW slabs are always written in place).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Writes {
    /// Through a second, writable view of the same pages ([`SlabBacking::working`]).
    View,
    /// In place: the pages start writable and are sealed once every allocation touching
    /// them is finalized.
    Sealed,
    /// Into a private zeroed buffer per segment, which finalize copies into pages that have
    /// their final protection from the start ([`SlabBacking::publish`]).
    Staged,
}

/// How slabs are mapped.
pub(crate) trait SlabBacking: Send + Sync + 'static {
    fn writes(&self) -> Writes;

    /// Copies a staged segment's bytes to `target` (for [`Writes::Staged`]).
    fn publish(&self, _target: usize, _bytes: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Maps reservation range `[offset, offset+len)` (at `base`) as a new `prot` slab.
    ///
    /// # Safety
    /// The range must be an unused part of the reservation that starts at `base`.
    unsafe fn map_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()>;

    /// Returns a slab to the reservation.
    ///
    /// # Safety
    /// No allocation may live in the slab.
    unsafe fn unmap_slab(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()>;

    /// Gives the pages of an empty slab back to the kernel, keeping it mapped (zeroed) with
    /// the protection it has.
    ///
    /// # Safety
    /// No allocation may live in the slab, and (when pages are sealed) all its pages must be
    /// writable again.
    unsafe fn discard_pages(&self, base: usize, offset: u64, len: u64, prot: Prot) -> io::Result<()>;

    /// Where the linker writes the byte at reservation `offset` of a `prot` slab.
    fn working(&self, base: usize, offset: u64, prot: Prot) -> *mut u8;

    /// Address ranges other than the target reservation that hold this backing's mappings.
    fn other_ranges(&self) -> Vec<Range<u64>>;
}

#[derive(Default)]
struct Page {
    /// In-flight allocations touching the page.
    pending: u32,
    /// Live allocations (in flight or finalized) touching the page.
    live: u32,
    /// No new allocation may land here.
    closing: bool,
    /// Has its final protection.
    sealed: bool,
    /// Finalizes waiting for this page to be sealed.
    waiters: Vec<Key>,
}

struct Slab {
    len: u64,
    /// Bytes held by live allocations.
    live: u64,
    /// End of the highest byte ever handed out since the pages were last discarded: below it
    /// memory may be dirty, above it it is fresh zero pages.
    high: u64,
    /// Per-page sealing state (sealing slabs only).
    pages: Vec<Page>,
}

#[derive(Default)]
struct Class {
    free: ExtentSet,
    slabs: BTreeMap<u64, Slab>,
}

impl Class {
    fn slab_of(&mut self, offset: u64) -> Option<(u64, &mut Slab)> {
        self.slabs
            .range_mut(..=offset)
            .next_back()
            .filter(|(s, slab)| offset < **s + slab.len)
            .map(|(s, slab)| (*s, slab))
    }
}

struct Record {
    parts: Parts,
    dealloc: Vec<ActionFn>,
    handle_live: bool,
}

struct Waiter {
    owner: Arc<dyn Backend>,
    parts: Parts,
    actions: Vec<FinalizeAction>,
    on_done: OnFinalized,
    remaining: usize,
}

/// Work found under the lock, done after it is released.
enum Ready {
    Complete(Waiter),
    Fail(Waiter, MemError),
}

#[derive(Default)]
struct State {
    space: ExtentSet,
    classes: [Class; 3],
    records: Table<Record>,
    waiters: Table<Waiter>,
    in_use: u64,
    committed: u64,
    allocations: u64,
}

/// A slab manager's shared state; handles hold it alive.
pub(crate) struct Slabs<B: SlabBacking> {
    id: ManagerId,
    backing: B,
    slab: u64,
    page: u64,
    state: Mutex<State>,
    // Last: unmapped after the backing's views of it are gone.
    reservation: Reservation,
}

/// Turns an OS failure into the error that names it, telling the mapping limit apart.
pub(crate) fn os_error(manager: ManagerId, op: &'static str, addr: u64, len: u64, source: io::Error) -> MemError {
    if source.raw_os_error() == Some(libc::ENOMEM) {
        let mappings = maps::process_total();
        let limit = maps::max_map_count();
        if mappings + 16 >= limit {
            return MemError::MappingLimit { manager, op, addr: TargetAddr(addr), len, mappings, limit };
        }
    }
    MemError::Os { manager, op, addr: TargetAddr(addr), len, source }
}

/// Checks a configuration and returns (reservation bytes, slab bytes).
pub(crate) fn check_config(id: ManagerId, config: &ManagerConfig) -> Result<(u64, u64), MemError> {
    let page = page_size() as u64;
    if config.reservation < page || config.reservation > MAX_RESERVATION {
        return Err(MemError::InvalidReservation { manager: id, requested: config.reservation, max: MAX_RESERVATION });
    }
    let reservation = align_up(config.reservation, page).min(MAX_RESERVATION);
    let slab = align_up(config.slab.max(page), page).min(reservation);
    Ok((reservation, slab))
}

/// The free space of a fresh reservation of `len` bytes at `base`: all of it but the page that
/// starts at a multiple of 4 GiB, if one lies inside (`len` is at most 2 GiB: at most one does).
///
/// Nothing may be placed at such an address, since code there would be invisible to the
/// unwinder. libgcc's `__register_frame` path (`classify_object_over_fdes`, `add_fdes` and
/// `linear_search_fdes` in libgcc/unwind-dw2-fde.c) reads an FDE's pc_begin in its CIE's
/// encoding, and when that encoding is narrower than a pointer (the `pcrel|sdata4` clang and
/// gcc emit) it takes a pc_begin whose low 32 bits are zero for a discarded link-once function
/// and skips the FDE: an exception thrown through a function starting at such an address ends
/// in `std::terminate`. Code can only start at a reservation's multiple of 4 GiB if that page
/// is handed out, so it never is; it costs one page of address space, no memory.
pub(crate) fn usable_space(base: usize, len: u64, page: u64) -> ExtentSet {
    const FOUR_GIB: u64 = 1 << 32;
    let mut space = ExtentSet::default();
    let boundary = (FOUR_GIB - base as u64 % FOUR_GIB) % FOUR_GIB;
    if boundary < len {
        space.insert(0, boundary);
        space.insert(boundary + page, len.saturating_sub(boundary + page));
    } else {
        space.insert(0, len);
    }
    space
}

/// Reserves a manager's target range of `len` bytes where `placement` says.
pub(crate) fn reserve_target(id: ManagerId, len: u64, placement: Placement) -> Result<Reservation, MemError> {
    match placement {
        // No multiple of 4 GiB splits the free space (see `usable_space`): a segment as large
        // as most of the reservation still fits.
        Placement::Anywhere => {
            Reservation::new_unsplit(len as usize, MAX_ALIGN as usize).map_err(|e| os_error(id, "reserve", 0, len, e))
        }
        Placement::Near(anchor) => match Reservation::new_near(len as usize, MAX_ALIGN as usize, anchor, NEAR_REACH) {
            Some(near) => Ok(near),
            None => Reservation::new_unsplit(len as usize, MAX_ALIGN as usize)
                .map_err(|e| os_error(id, "reserve", 0, len, e)),
        },
        Placement::Low => {
            Reservation::new_below(len as usize, MAX_ALIGN as usize, LOW_PLACEMENT_LIMIT).map_err(|e| match e {
                LowReservationError::NoRoom { largest_free } => MemError::LowAddressSpaceExhausted {
                    manager: id,
                    requested: len,
                    limit: LOW_PLACEMENT_LIMIT,
                    largest_free,
                },
                LowReservationError::Os(e) => os_error(id, "reserve below 2 GiB", 0, len, e),
            })
        }
    }
}

/// Checks every segment of a request.
pub(crate) fn check_request(id: ManagerId, capacity: u64, request: &AllocRequest) -> Result<(), MemError> {
    for (segment, s) in request.segments.iter().enumerate() {
        if !s.align.is_power_of_two() || s.align > MAX_ALIGN {
            return Err(MemError::InvalidAlignment { manager: id, segment, align: s.align, max: MAX_ALIGN });
        }
        if s.size > capacity {
            return Err(MemError::SegmentTooLarge { manager: id, segment, prot: s.prot, size: s.size, capacity });
        }
    }
    Ok(())
}

impl<B: SlabBacking> Slabs<B> {
    pub(crate) fn new(
        id: ManagerId,
        config: &ManagerConfig,
        make_backing: impl FnOnce(&Reservation) -> Result<B, MemError>,
    ) -> Result<Slabs<B>, MemError> {
        let (len, slab) = check_config(id, config)?;
        let reservation = reserve_target(id, len, config.placement)?;
        let backing = make_backing(&reservation)?;
        let page = page_size() as u64;
        let state = State { space: usable_space(reservation.base(), len, page), ..State::default() };
        Ok(Slabs { id, backing, slab, page, state: Mutex::new(state), reservation })
    }

    pub(crate) fn base(&self) -> usize {
        self.reservation.base()
    }

    pub(crate) fn backing(&self) -> &B {
        &self.backing
    }

    /// Runs `f` on the R and RX slabs, as `(prot, offset, len, high)` (`high`: the end of
    /// the bytes that may be non-zero), with the state locked so that none changes meanwhile.
    /// `None` without calling `f` if the state is locked: in a forked child, by a thread of
    /// the parent that was placing or freeing a segment when the process forked.
    pub(crate) fn try_with_code_slabs<T>(&self, f: impl FnOnce(&[(Prot, u64, u64, u64)]) -> T) -> Option<T> {
        let st = self.state.try_lock()?;
        let slabs: Vec<(Prot, u64, u64, u64)> = [Prot::RX, Prot::R]
            .into_iter()
            .flat_map(|prot| st.classes[prot.index()].slabs.iter().map(move |(&at, s)| (prot, at, s.len, s.high)))
            .collect();
        Some(f(&slabs))
    }

    /// Whether `prot` segments are written in place and their pages sealed at finalize.
    fn seals(&self, prot: Prot) -> bool {
        self.backing.writes() == Writes::Sealed && prot != Prot::RW
    }

    /// Whether `prot` segments are written in a staging buffer and published at finalize.
    fn stages(&self, prot: Prot) -> bool {
        self.backing.writes() == Writes::Staged && prot != Prot::RW
    }

    pub(crate) fn allocate(self: &Arc<Self>, request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        let capacity = self.reservation.len() as u64;
        check_request(self.id, capacity, request)?;
        let mut segments = Vec::with_capacity(request.segments.len());
        let mut dirty = Vec::with_capacity(request.segments.len());
        let mut ready = Vec::new();
        // Staging buffers come zeroed from the allocator, made before the lock is taken.
        let mut staging: Vec<Option<Box<[u8]>>> = request
            .segments
            .iter()
            .map(|seg| self.stages(seg.prot).then(|| vec![0u8; seg.size as usize].into_boxed_slice()))
            .collect();
        {
            let mut st = self.state.lock();
            for (index, seg) in request.segments.iter().enumerate() {
                match self.place(&mut st, index, seg.prot, seg.size, seg.align) {
                    Ok((offset, len, dirty_len)) => {
                        let info = SegmentInfo {
                            prot: seg.prot,
                            lifetime: seg.lifetime,
                            target: TargetAddr(self.base() as u64 + offset),
                            size: seg.size,
                        };
                        let mut staged = staging[index].take();
                        let working = match &mut staged {
                            Some(buffer) => buffer.as_mut_ptr(),
                            None => {
                                let working = self.backing.working(self.base(), offset, seg.prot);
                                dirty.push((working, dirty_len.min(seg.size) as usize));
                                working
                            }
                        };
                        segments.push(Placed { info, working, offset, len, staging: staged });
                    }
                    Err(e) => {
                        for p in &segments {
                            self.free_segment(&mut st, p, true, &mut ready);
                        }
                        drop(st);
                        self.drain(ready);
                        return Err(e);
                    }
                }
            }
            st.in_use += request.requested_bytes();
            st.allocations += 1;
        }
        for (ptr, len) in dirty {
            // SAFETY: the range was just handed to this allocation alone and is writable
            // through its working view (open pages of a writable mapping).
            unsafe { crate::sys::zero(ptr, len) };
        }
        Ok(InFlightAlloc::new(self.clone(), Parts { segments }))
    }

    /// Finds room for one segment, growing a new slab if needed. Returns the offset, the
    /// length taken, and how many of its leading bytes may be dirty.
    fn place(
        &self,
        st: &mut State,
        index: usize,
        prot: Prot,
        size: u64,
        align: u64,
    ) -> Result<(u64, u64, u64), MemError> {
        let len = align_up(size.max(1), GRANULE);
        let align = align.max(GRANULE);
        let class = prot.index();
        let offset = match st.classes[class].free.take_best_fit(len, align) {
            Some(offset) => offset,
            None => {
                self.grow(st, index, prot, len, align)?;
                st.classes[class].free.take_best_fit(len, align).ok_or_else(|| self.exhausted(st, index, prot, size))?
            }
        };
        let page = self.page;
        let seals = self.seals(prot);
        let Some((start, slab)) = st.classes[class].slab_of(offset) else {
            return Err(self.exhausted(st, index, prot, size));
        };
        slab.live += len;
        let rel = offset - start;
        let old_high = slab.high;
        let dirty = old_high.saturating_sub(rel).min(len);
        let mut grown = 0;
        if rel + len > old_high {
            grown = align_up(rel + len, page) - align_up(old_high, page);
            slab.high = rel + len;
        }
        if seals {
            for p in (rel / page)..(rel + len).div_ceil(page) {
                let pg = &mut slab.pages[p as usize];
                pg.pending += 1;
                pg.live += 1;
            }
        }
        st.committed += grown;
        Ok((offset, len, dirty))
    }

    fn exhausted(&self, st: &State, segment: usize, prot: Prot, size: u64) -> MemError {
        MemError::ReservationExhausted {
            manager: self.id,
            segment,
            prot,
            size,
            capacity: self.reservation.len() as u64,
            in_use: st.in_use,
        }
    }

    /// Maps a new slab for `prot` big enough for `len` bytes at `align`. Code grows up from the
    /// bottom of the reservation and data down from the top, so slabs of one protection sit
    /// side by side and the kernel merges their mappings.
    fn grow(&self, st: &mut State, index: usize, prot: Prot, len: u64, align: u64) -> Result<(), MemError> {
        let page = self.page;
        let needed = align_up(len, page);
        let slab_align = align.max(page);
        let mut placed = None;
        for want in [self.slab.max(needed), needed] {
            let at = if prot == Prot::RX {
                st.space.take_lowest(want, slab_align)
            } else {
                st.space.take_highest(want, slab_align)
            };
            if let Some(at) = at {
                placed = Some((at, want));
                break;
            }
        }
        let Some((start, slab_len)) = placed else {
            return Err(self.exhausted(st, index, prot, len));
        };
        // SAFETY: the range was just taken from the reservation's free space.
        if let Err(e) = unsafe { self.backing.map_slab(self.base(), start, slab_len, prot) } {
            st.space.insert(start, slab_len);
            return Err(os_error(self.id, "map slab", self.base() as u64 + start, slab_len, e));
        }
        let pages = if self.seals(prot) { (0..slab_len / page).map(|_| Page::default()).collect() } else { Vec::new() };
        let class = &mut st.classes[prot.index()];
        class.slabs.insert(start, Slab { len: slab_len, live: 0, high: 0, pages });
        class.free.insert(start, slab_len);
        tracing::trace!(manager = %self.id, %prot, start, slab_len, "slab mapped");
        Ok(())
    }

    /// Returns one segment's space. `pending`: the segment was never finalized.
    fn free_segment(&self, st: &mut State, seg: &Placed, pending: bool, ready: &mut Vec<Ready>) {
        let prot = seg.info.prot;
        let page = self.page;
        let base = self.base();
        let class_index = prot.index();
        let mut to_seal = Vec::new();
        let slab_start;
        {
            let class = &mut st.classes[class_index];
            let Some((start, slab)) = class.slab_of(seg.offset) else {
                tracing::error!(manager = %self.id, offset = seg.offset, "freed segment lies in no slab");
                return;
            };
            slab_start = start;
            slab.live = slab.live.saturating_sub(seg.len);
            if !self.seals(prot) {
                if !class.free.insert(seg.offset, seg.len) {
                    tracing::error!(manager = %self.id, offset = seg.offset, "segment freed twice");
                }
            } else {
                let rel = seg.offset - start;
                let mut free_now = Vec::new();
                for p in (rel / page)..(rel + seg.len).div_ceil(page) {
                    let pg = &mut slab.pages[p as usize];
                    if pending {
                        pg.pending = pg.pending.saturating_sub(1);
                    }
                    pg.live = pg.live.saturating_sub(1);
                    let page_start = start + p * page;
                    if !pg.closing {
                        let a = seg.offset.max(page_start);
                        let b = (seg.offset + seg.len).min(page_start + page);
                        free_now.push((a, b - a));
                    } else if pg.live == 0 {
                        let reopened = !pg.sealed
                            // SAFETY: no live allocation touches the page, so nothing runs or
                            // reads there; making it writable again disturbs nobody.
                            || unsafe { crate::sys::protect(base + page_start as usize, page as usize, Prot::RW) }.is_ok();
                        if reopened {
                            *pg = Page::default();
                            free_now.push((page_start, page));
                        } else {
                            tracing::warn!(manager = %self.id, page_start, "could not reopen a sealed page; it stays out of use");
                        }
                    } else if pg.pending == 0 && !pg.sealed {
                        to_seal.push(page_start);
                    }
                }
                for (a, len) in free_now {
                    class.free.insert(a, len);
                }
            }
        }
        if !to_seal.is_empty() {
            self.seal(st, class_index, prot, to_seal, ready);
        }
        self.maybe_release_slab(st, class_index, prot, slab_start);
    }

    /// Keeps one empty slab per protection as a spare (its pages discarded unless few were
    /// used); unmaps others.
    fn maybe_release_slab(&self, st: &mut State, class_index: usize, prot: Prot, start: u64) {
        let class = &mut st.classes[class_index];
        let Some(slab) = class.slabs.get(&start) else {
            return;
        };
        if slab.live != 0 || slab.pages.iter().any(|p| p.closing || p.live != 0) || !class.free.covers(start, slab.len)
        {
            return;
        }
        let (len, high) = (slab.len, slab.high);
        let other_empty = class.slabs.iter().any(|(&s, other)| s != start && other.live == 0);
        let released = align_up(high, self.page);
        if other_empty {
            // SAFETY: the slab holds no live allocation (checked above).
            match unsafe { self.backing.unmap_slab(self.base(), start, len, prot) } {
                Ok(()) => {
                    class.free.carve(start, len);
                    class.slabs.remove(&start);
                    st.space.insert(start, len);
                    st.committed = st.committed.saturating_sub(released);
                }
                Err(e) => {
                    tracing::warn!(manager = %self.id, start, error = %e, "could not unmap an empty slab; keeping it")
                }
            }
        } else if high > SPARE_KEEP_DIRTY {
            // SAFETY: empty, and having no closing pages, sealed pages have all been reopened.
            match unsafe { self.backing.discard_pages(self.base(), start, len, prot) } {
                Ok(()) => {
                    if let Some(slab) = class.slabs.get_mut(&start) {
                        slab.high = 0;
                    }
                    st.committed = st.committed.saturating_sub(released);
                }
                Err(e) => {
                    tracing::warn!(manager = %self.id, start, error = %e, "could not discard an empty slab's pages")
                }
            }
        }
    }

    /// Seals pages (offsets) of one class: one `mprotect` per run of adjacent pages, then
    /// wakes the finalizes that waited for them.
    fn seal(&self, st: &mut State, class_index: usize, prot: Prot, mut pages: Vec<u64>, ready: &mut Vec<Ready>) {
        pages.sort_unstable();
        pages.dedup();
        let page = self.page;
        let mut i = 0;
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && pages[j] == pages[j - 1] + page {
                j += 1;
            }
            let (start, len) = (pages[i], (j - i) as u64 * page);
            // SAFETY: every allocation touching these pages has finished writing (none is
            // pending) and no new one may land on them (they are closing).
            let result = unsafe { crate::sys::protect(self.base() + start as usize, len as usize, prot) };
            let error = result.err();
            let mut woken = Vec::new();
            for &p in &pages[i..j] {
                if let Some((s, slab)) = st.classes[class_index].slab_of(p) {
                    let pg = &mut slab.pages[((p - s) / page) as usize];
                    pg.sealed = error.is_none();
                    woken.append(&mut pg.waiters);
                }
            }
            for key in woken {
                match &error {
                    None => {
                        if let Lookup::Live(w) = st.waiters.get_mut(key) {
                            w.remaining = w.remaining.saturating_sub(1);
                            if w.remaining == 0 {
                                if let Some(w) = st.waiters.remove(key) {
                                    ready.push(Ready::Complete(w));
                                }
                            }
                        }
                    }
                    Some(e) => {
                        if let Some(w) = st.waiters.remove(key) {
                            let source = match e.raw_os_error() {
                                Some(code) => io::Error::from_raw_os_error(code),
                                None => io::Error::new(e.kind(), e.to_string()),
                            };
                            ready.push(Ready::Fail(
                                w,
                                os_error(self.id, "seal pages", self.base() as u64 + start, len, source),
                            ));
                        }
                    }
                }
            }
            i = j;
        }
    }

    pub(crate) fn finalize(
        &self,
        owner: Arc<dyn Backend>,
        parts: Parts,
        actions: Vec<FinalizeAction>,
        on_done: OnFinalized,
    ) {
        match self.backing.writes() {
            Writes::View => return self.complete(owner, parts, actions, on_done),
            Writes::Staged => return self.publish_and_complete(owner, parts, actions, on_done),
            Writes::Sealed => {}
        }
        let page = self.page;
        let mut ready = Vec::new();
        {
            let mut st = self.state.lock();
            // The pages of this allocation, per class, and which must be sealed now.
            let mut mine: Vec<(usize, u64)> = Vec::new();
            for seg in parts.segments.iter().filter(|s| self.seals(s.info.prot)) {
                let class_index = seg.info.prot.index();
                let mut to_seal = Vec::new();
                {
                    let class = &mut st.classes[class_index];
                    let Some((start, slab)) = class.slab_of(seg.offset) else {
                        continue;
                    };
                    let rel = seg.offset - start;
                    let mut carve = Vec::new();
                    for p in (rel / page)..(rel + seg.len).div_ceil(page) {
                        let pg = &mut slab.pages[p as usize];
                        let page_start = start + p * page;
                        pg.pending = pg.pending.saturating_sub(1);
                        if !pg.closing {
                            pg.closing = true;
                            carve.push(page_start);
                        }
                        if pg.pending == 0 && !pg.sealed {
                            to_seal.push(page_start);
                        }
                        mine.push((class_index, page_start));
                    }
                    for c in carve {
                        class.free.carve(c, page);
                    }
                }
                self.seal(&mut st, class_index, seg.info.prot, to_seal, &mut ready);
            }
            mine.sort_unstable();
            mine.dedup();
            let mut unsealed = Vec::new();
            let mut failed = false;
            for &(class_index, p) in &mine {
                if let Some((s, slab)) = st.classes[class_index].slab_of(p) {
                    let pg = &slab.pages[((p - s) / page) as usize];
                    if !pg.sealed {
                        // Unsealed with nobody pending: its seal just failed.
                        failed |= pg.pending == 0;
                        unsealed.push((class_index, p));
                    }
                }
            }
            let waiter = Waiter { owner, parts, actions, on_done, remaining: unsealed.len() };
            if failed {
                let err = MemError::Os {
                    manager: self.id,
                    op: "seal pages",
                    addr: TargetAddr(self.base() as u64),
                    len: 0,
                    source: io::Error::other("mprotect of a finalized page range failed"),
                };
                ready.push(Ready::Fail(waiter, err));
            } else if unsealed.is_empty() {
                ready.push(Ready::Complete(waiter));
            } else {
                let key = st.waiters.insert(waiter);
                for (class_index, p) in unsealed {
                    if let Some((s, slab)) = st.classes[class_index].slab_of(p) {
                        slab.pages[((p - s) / page) as usize].waiters.push(key);
                    }
                }
            }
        }
        self.drain(ready);
    }

    /// Copies every staged segment into its pages, then completes the finalize.
    fn publish_and_complete(
        &self,
        owner: Arc<dyn Backend>,
        mut parts: Parts,
        actions: Vec<FinalizeAction>,
        on_done: OnFinalized,
    ) {
        for seg in &mut parts.segments {
            let Some(bytes) = seg.staging.take() else {
                continue;
            };
            // The buffer goes now; nothing writes through an allocation being finalized.
            seg.working = std::ptr::null_mut();
            if let Err(e) = self.backing.publish(seg.info.target.0 as usize, &bytes) {
                let err = os_error(self.id, "write through /proc/self/mem", seg.info.target.0, seg.info.size, e);
                return self.fail_finalize(&parts, err, on_done);
            }
        }
        self.complete(owner, parts, actions, on_done)
    }

    /// Finishes a finalize whose pages are final: icache, actions, finalize-only segments,
    /// the record.
    fn complete(&self, owner: Arc<dyn Backend>, parts: Parts, actions: Vec<FinalizeAction>, on_done: OnFinalized) {
        for seg in parts.segments.iter().filter(|s| s.info.prot == Prot::RX) {
            crate::sys::flush_icache(seg.info.target.as_ptr(), seg.info.size as usize);
        }
        match run_finalize_actions(self.id, actions) {
            Err(e) => self.fail_finalize(&parts, e, on_done),
            Ok(dealloc) => {
                let mut ready = Vec::new();
                let (keep, transient): (Vec<Placed>, Vec<Placed>) =
                    parts.segments.into_iter().partition(|s| s.info.lifetime == SegmentLifetime::Standard);
                let key = {
                    let mut st = self.state.lock();
                    for seg in &transient {
                        st.in_use = st.in_use.saturating_sub(seg.info.size);
                        self.free_segment(&mut st, seg, false, &mut ready);
                    }
                    st.records.insert(Record { parts: Parts { segments: keep }, dealloc, handle_live: true })
                };
                self.drain(ready);
                on_done(Ok(FinalizedAlloc::new(key, owner)));
            }
        }
    }

    /// Ends a finalize that failed: the memory goes back, then `on_done` hears `err`.
    fn fail_finalize(&self, parts: &Parts, err: MemError, on_done: OnFinalized) {
        let mut ready = Vec::new();
        {
            let mut st = self.state.lock();
            self.release_parts(&mut st, parts, false, &mut ready);
        }
        self.drain(ready);
        on_done(Err(err));
    }

    fn release_parts(&self, st: &mut State, parts: &Parts, pending: bool, ready: &mut Vec<Ready>) {
        for seg in &parts.segments {
            self.free_segment(st, seg, pending, ready);
        }
        st.in_use = st.in_use.saturating_sub(parts.requested());
        st.allocations = st.allocations.saturating_sub(1);
    }

    /// Runs what was found under the lock, until nothing more turns up.
    fn drain(&self, mut ready: Vec<Ready>) {
        while let Some(item) = ready.pop() {
            match item {
                Ready::Complete(w) => self.complete(w.owner, w.parts, w.actions, w.on_done),
                Ready::Fail(w, e) => {
                    let mut more = Vec::new();
                    {
                        let mut st = self.state.lock();
                        self.release_parts(&mut st, &w.parts, false, &mut more);
                    }
                    ready.append(&mut more);
                    (w.on_done)(Err(e));
                }
            }
        }
    }

    pub(crate) fn abandon(&self, parts: Parts) -> Result<(), MemError> {
        let mut ready = Vec::new();
        {
            let mut st = self.state.lock();
            self.release_parts(&mut st, &parts, true, &mut ready);
        }
        self.drain(ready);
        Ok(())
    }

    pub(crate) fn release(&self, key: Key) -> Result<(), MemError> {
        let raw = RawFinalizedAlloc { manager: self.id, slot: key.slot, generation: key.generation };
        let record = {
            let mut st = self.state.lock();
            match st.records.get_mut(key) {
                Lookup::Live(_) => st.records.remove(key),
                Lookup::Gone => {
                    return Err(MemError::DoubleFree { manager: self.id, alloc: raw });
                }
                Lookup::Never => {
                    return Err(MemError::UnknownAllocation { manager: self.id, alloc: raw });
                }
            }
        };
        let Some(record) = record else {
            return Err(MemError::DoubleFree { manager: self.id, alloc: raw });
        };
        let mut errors = Vec::new();
        // Deallocate actions run while the memory is still mapped: they may read it.
        run_deallocate_actions(self.id, raw, record.dealloc, &mut errors);
        let mut ready = Vec::new();
        {
            let mut st = self.state.lock();
            self.release_parts(&mut st, &record.parts, false, &mut ready);
        }
        self.drain(ready);
        MemError::collect(errors)
    }

    pub(crate) fn disown(&self, key: Key) {
        if let Lookup::Live(r) = self.state.lock().records.get_mut(key) {
            r.handle_live = false;
        }
    }

    pub(crate) fn adopt(self: &Arc<Self>, raw: RawFinalizedAlloc) -> Result<FinalizedAlloc, MemError> {
        if raw.manager != self.id {
            return Err(MemError::ForeignAllocation { manager: self.id, owner: raw.manager, alloc: raw });
        }
        let key = raw.key();
        match self.state.lock().records.get_mut(key) {
            Lookup::Live(r) if r.handle_live => Err(MemError::HandleAlreadyLive { manager: self.id, alloc: raw }),
            Lookup::Live(r) => {
                r.handle_live = true;
                Ok(FinalizedAlloc::new(key, self.clone()))
            }
            Lookup::Gone => Err(MemError::DoubleFree { manager: self.id, alloc: raw }),
            Lookup::Never => Err(MemError::UnknownAllocation { manager: self.id, alloc: raw }),
        }
    }

    pub(crate) fn stats(&self) -> MemStats {
        let base = self.base() as u64;
        let mut ranges = self.backing.other_ranges();
        ranges.push(base..base + self.reservation.len() as u64);
        let reserved = ranges.iter().map(|r| r.end - r.start).sum();
        let st = self.state.lock();
        let (committed, in_use, allocations) = (st.committed, st.in_use, st.allocations);
        drop(st);
        MemStats { reserved, committed, in_use, mappings: maps::count_in(&ranges), allocations }
    }

    pub(crate) fn range(&self) -> Range<TargetAddr> {
        let base = self.base() as u64;
        TargetAddr(base)..TargetAddr(base + self.reservation.len() as u64)
    }

    pub(crate) fn id(&self) -> ManagerId {
        self.id
    }
}

impl<B: SlabBacking> Backend for Slabs<B> {
    fn id(&self) -> ManagerId {
        self.id
    }
    fn finalize(&self, owner: Arc<dyn Backend>, parts: Parts, actions: Vec<FinalizeAction>, on_done: OnFinalized) {
        Slabs::finalize(self, owner, parts, actions, on_done)
    }
    fn abandon(&self, parts: Parts) -> Result<(), MemError> {
        Slabs::abandon(self, parts)
    }
    fn release(&self, key: Key) -> Result<(), MemError> {
        Slabs::release(self, key)
    }
    fn disown(&self, key: Key) {
        Slabs::disown(self, key)
    }
}

impl<B: SlabBacking> Drop for Slabs<B> {
    fn drop(&mut self) {
        // Allocations kept only as raw handles still get their deallocate actions before the
        // reservation goes.
        let records: Vec<Record> = self.state.get_mut().records.drain().collect();
        for record in records {
            let mut errors = Vec::new();
            run_deallocate_actions(
                self.id,
                RawFinalizedAlloc { manager: self.id, slot: 0, generation: 0 },
                record.dealloc,
                &mut errors,
            );
            for e in errors {
                tracing::warn!(error = %e, "deallocate action failed while dropping the manager");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::usable_space;

    const PAGE: u64 = 4096;
    const GIB: u64 = 1 << 30;

    #[test]
    fn the_page_at_a_multiple_of_4_gib_is_never_free_space() {
        // A reservation starting at a multiple of 4 GiB loses its first page.
        let at = usable_space(0x7f52_0000_0000, GIB, PAGE);
        assert!(!at.covers(0, 1) && at.covers(PAGE, GIB - PAGE));
        assert_eq!(at.free_bytes(), GIB - PAGE);
        // One that spans a multiple of 4 GiB loses the page there, and keeps both sides.
        let base = 0x7f52_0000_0000 - 3 * GIB / 2;
        let across = usable_space(base as usize, 2 * GIB, PAGE);
        let boundary = 3 * GIB / 2;
        assert!(across.covers(0, boundary) && across.covers(boundary + PAGE, GIB / 2 - PAGE));
        assert!(!across.covers(boundary, 1) && !across.covers(boundary + PAGE - 1, 1));
        assert_eq!(across.free_bytes(), 2 * GIB - PAGE);
        // One that ends at a multiple of 4 GiB (exclusive) keeps everything.
        let below = usable_space((0x7f52_0000_0000 - GIB) as usize, GIB, PAGE);
        assert!(below.covers(0, GIB));
    }
}
