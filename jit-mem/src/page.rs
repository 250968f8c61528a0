//! The page allocator: one fresh mapping per link graph, each segment on pages of its own
//! and given its protection with `mprotect` at finalize (LLVM's `InProcessMemoryManager`).
//! The baseline the slab managers are measured against: simple, never shares a page between
//! allocations, and leaves about three kernel mappings per object, which meets the kernel's
//! `vm.max_map_count` after some 20,000 objects. Placement stays inside one reservation.

use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::MAX_ALIGN;
use crate::alloc::{
    ActionFn, Backend, OnDone, OnFinalized, Parts, Placed, run_deallocate_actions, run_finalize_actions,
};
use crate::extent::ExtentSet;
use crate::slab::{check_config, check_request, os_error, reserve_target, usable_space};
use crate::sys::{Reservation, align_up, map_anonymous, page_size, protect};
use crate::table::{Key, Lookup, Table};
use crate::{
    AllocRequest, FinalizeAction, FinalizedAlloc, InFlightAlloc, ManagerConfig, ManagerId, ManagerKind, MemError,
    MemStats, MemoryManager, Prot, RawFinalizedAlloc, SegmentInfo, SegmentLifetime, TargetAddr, maps,
};

struct Record {
    parts: Parts,
    dealloc: Vec<ActionFn>,
    handle_live: bool,
}

#[derive(Default)]
struct State {
    space: ExtentSet,
    records: Table<Record>,
    in_use: u64,
    committed: u64,
    allocations: u64,
}

struct Pages {
    id: ManagerId,
    /// Made by `allocate_apart` for one allocation (see `Backend::lives_for_its_allocation`).
    apart: bool,
    page: u64,
    state: Mutex<State>,
    reservation: Reservation,
}

impl Pages {
    fn base(&self) -> u64 {
        self.reservation.base() as u64
    }

    fn allocate(self: &Arc<Self>, request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        check_request(self.id, self.reservation.len() as u64, request)?;
        self.allocate_unbounded(request)
    }

    /// `allocate` without checking the request (`allocate_apart` checks what applies to it:
    /// alignments, not that each segment fits a manager's reservation).
    fn allocate_unbounded(self: &Arc<Self>, request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        let capacity = self.reservation.len() as u64;
        let page = self.page;
        // Standard segments first, then finalize-only ones, each on its own pages.
        let mut order: Vec<usize> = (0..request.segments.len()).collect();
        order.sort_by_key(|&i| request.segments[i].lifetime == SegmentLifetime::FinalizeOnly);
        let mut layout = vec![(0u64, 0u64); request.segments.len()];
        let mut total = 0u64;
        for &i in &order {
            let seg = &request.segments[i];
            total = align_up(total, seg.align.max(page));
            let len = align_up(seg.size, page);
            layout[i] = (total, len);
            total += len;
        }
        let align = request.segments.iter().map(|s| s.align).max().unwrap_or(1).max(page);
        let start = {
            let mut st = self.state.lock();
            let Some(start) = (if total == 0 { Some(0) } else { st.space.take_best_fit(total, align) }) else {
                let (segment, prot, size) =
                    request.segments.iter().enumerate().map(|(i, s)| (i, s.prot, s.size)).next().unwrap_or((
                        0,
                        Prot::RW,
                        0,
                    ));
                return Err(MemError::ReservationExhausted {
                    manager: self.id,
                    segment,
                    prot,
                    size,
                    capacity,
                    in_use: st.in_use,
                });
            };
            st.in_use += request.requested_bytes();
            st.committed += total;
            st.allocations += 1;
            start
        };
        if total > 0 {
            let addr = self.base() + start;
            // SAFETY: the range was just taken from the reservation's free space.
            if let Err(e) = unsafe { map_anonymous(addr as usize, total as usize, Some(Prot::RW)) } {
                let err = os_error(self.id, "mmap", addr, total, e);
                let mut st = self.state.lock();
                st.space.insert(start, total);
                st.in_use = st.in_use.saturating_sub(request.requested_bytes());
                st.committed = st.committed.saturating_sub(total);
                st.allocations = st.allocations.saturating_sub(1);
                return Err(err);
            }
        }
        let segments = request
            .segments
            .iter()
            .zip(&layout)
            .map(|(seg, &(off, len))| {
                let target = self.base() + start + off;
                Placed {
                    info: SegmentInfo {
                        prot: seg.prot,
                        lifetime: seg.lifetime,
                        target: TargetAddr(target),
                        size: seg.size,
                    },
                    working: target as usize as *mut u8,
                    offset: start + off,
                    len,
                    staging: None,
                }
            })
            .collect();
        Ok(InFlightAlloc::new(self.clone(), Parts { segments }))
    }

    /// Gives segments' pages back to the reservation.
    fn unmap(&self, segments: &[Placed]) -> Result<(), MemError> {
        let mut errors = Vec::new();
        let mut returned = Vec::new();
        for seg in segments.iter().filter(|s| s.len > 0) {
            let addr = self.base() + seg.offset;
            // SAFETY: the segment's pages belong to an allocation being released: nothing
            // runs or reads there any more.
            match unsafe { map_anonymous(addr as usize, seg.len as usize, None) } {
                Ok(()) => returned.push((seg.offset, seg.len)),
                // At the mapping limit the kernel refuses a remap that splits a mapping (the
                // segment's neighbours share its protection). Its memory is dropped anyway
                // (MADV_DONTNEED splits nothing) and its pages go back to the free space, to
                // be mapped afresh when reused; until then they read as zeros, with their old
                // protection, rather than fault. (Reporting each refusal read /proc/self/maps,
                // tens of thousands of lines, every time: freeing everything at the limit
                // took minutes.)
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && drop_pages(addr, seg.len) => {
                    returned.push((seg.offset, seg.len))
                }
                // Left out of the free space: never reused, never a fault.
                Err(e) => errors.push(os_error(self.id, "munmap", addr, seg.len, e)),
            }
        }
        let mut st = self.state.lock();
        for seg in segments {
            st.in_use = st.in_use.saturating_sub(seg.info.size);
            st.committed = st.committed.saturating_sub(seg.len);
        }
        for (offset, len) in returned {
            st.space.insert(offset, len);
        }
        drop(st);
        MemError::collect(errors)
    }

    fn release_all(&self, parts: &Parts) -> Result<(), MemError> {
        let r = self.unmap(&parts.segments);
        {
            let mut st = self.state.lock();
            st.allocations = st.allocations.saturating_sub(1);
        }
        r
    }
}

/// Drops the memory of the released pages at `addr` (`len` bytes) without changing any
/// mapping: `MADV_DONTNEED` splits none, so it works at the mapping limit. Whether it did.
fn drop_pages(addr: u64, len: u64) -> bool {
    // SAFETY: the range is the pages of a segment being released, which nothing runs or reads
    // any more; the advice only discards their contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) == 0 }
}

impl Backend for Pages {
    fn id(&self) -> ManagerId {
        self.id
    }

    fn finalize(&self, owner: Arc<dyn Backend>, parts: Parts, actions: Vec<FinalizeAction>, on_done: OnFinalized) {
        for seg in parts.segments.iter().filter(|s| s.len > 0) {
            let addr = self.base() + seg.offset;
            // SAFETY: the allocation is finished writing (it is being finalized) and owns the
            // pages alone.
            if let Err(e) = unsafe { protect(addr as usize, seg.len as usize, seg.info.prot) } {
                let err = os_error(self.id, "mprotect", addr, seg.len, e);
                if let Err(e2) = self.release_all(&parts) {
                    tracing::warn!(error = %e2, "releasing an allocation whose finalize failed");
                }
                return on_done(Err(err));
            }
            if seg.info.prot == Prot::RX {
                crate::sys::flush_icache(seg.info.target.as_ptr(), seg.info.size as usize);
            }
        }
        match run_finalize_actions(self.id, actions) {
            Err(e) => {
                if let Err(e2) = self.release_all(&parts) {
                    tracing::warn!(error = %e2, "releasing an allocation whose finalize action failed");
                }
                on_done(Err(e))
            }
            Ok(dealloc) => {
                let (keep, transient): (Vec<Placed>, Vec<Placed>) =
                    parts.segments.into_iter().partition(|s| s.info.lifetime == SegmentLifetime::Standard);
                if let Err(e) = self.unmap(&transient) {
                    tracing::warn!(error = %e, "releasing finalize-only segments");
                }
                let key = self.state.lock().records.insert(Record {
                    parts: Parts { segments: keep },
                    dealloc,
                    handle_live: true,
                });
                on_done(Ok(FinalizedAlloc::new(key, owner)))
            }
        }
    }

    fn abandon(&self, parts: Parts) -> Result<(), MemError> {
        self.release_all(&parts)
    }

    fn release(&self, key: Key) -> Result<(), MemError> {
        let raw = RawFinalizedAlloc { manager: self.id, slot: key.slot, generation: key.generation };
        let record = {
            let mut st = self.state.lock();
            match st.records.get_mut(key) {
                Lookup::Live(_) => st.records.remove(key),
                Lookup::Gone => None,
                Lookup::Never => {
                    return Err(MemError::UnknownAllocation { manager: self.id, alloc: raw });
                }
            }
        };
        let Some(record) = record else {
            return Err(MemError::DoubleFree { manager: self.id, alloc: raw });
        };
        let mut errors = Vec::new();
        run_deallocate_actions(self.id, raw, record.dealloc, &mut errors);
        if let Err(e) = self.release_all(&record.parts) {
            errors.push(e);
        }
        MemError::collect(errors)
    }

    fn lives_for_its_allocation(&self) -> bool {
        self.apart
    }

    fn disown(&self, key: Key) {
        if let Lookup::Live(r) = self.state.lock().records.get_mut(key) {
            r.handle_live = false;
        }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
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

/// Page-per-segment allocator: see the module documentation.
pub struct PageAllocator {
    inner: Arc<Pages>,
}

impl PageAllocator {
    /// An allocator with its own reservation (`config.slab` is ignored).
    pub fn new(config: ManagerConfig) -> Result<PageAllocator, MemError> {
        let id = ManagerId::next(ManagerKind::PagePerSegment);
        let (len, _) = check_config(id, &config)?;
        let reservation = reserve_target(id, len, config.placement)?;
        let page = page_size() as u64;
        let state = State { space: usable_space(reservation.base(), len, page), ..State::default() };
        Ok(PageAllocator { inner: Arc::new(Pages { id, apart: false, page, state: Mutex::new(state), reservation }) })
    }

    /// Allocates `request` apart from every manager: in a reservation of its own, anywhere,
    /// exactly as large as the request needs, even beyond [`crate::MAX_RESERVATION`]. For
    /// data that code reaches only through 64-bit addresses or the GOT, such as x86-64's
    /// large data sections (`.ldata`, `.lbss`, `.lrodata`) of the medium and large code
    /// models, where a program may keep arrays larger than a manager's 2 GiB.
    ///
    /// The segments are mapped and protected as by any page allocator: zero-filled pages
    /// that cost no memory until touched. The allocation is its manager's only one: the
    /// reservation goes when the allocation is released (so [`FinalizedAlloc::into_raw`]
    /// keeps nothing alive; [`FinalizedAlloc::into_deallocate_action`] holds it). Code is
    /// refused ([`MemError::CodeApart`]): nothing would keep it within reach of other code,
    /// or off the 4 GiB multiples the unwinder skips.
    pub fn allocate_apart(request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        let id = ManagerId::next(ManagerKind::PagePerSegment);
        if let Some((segment, s)) = request.segments.iter().enumerate().find(|(_, s)| s.prot == Prot::RX) {
            return Err(MemError::CodeApart { manager: id, segment, size: s.size });
        }
        if let Some((segment, s)) =
            request.segments.iter().enumerate().find(|(_, s)| !s.align.is_power_of_two() || s.align > MAX_ALIGN)
        {
            return Err(MemError::InvalidAlignment { manager: id, segment, align: s.align, max: MAX_ALIGN });
        }
        let page = page_size() as u64;
        // Every segment on pages of its own at its alignment: what `Pages::allocate` lays out,
        // in any order.
        let len = request.segments.iter().try_fold(0u64, |len, s| {
            len.checked_add(s.size.checked_next_multiple_of(page)?)?.checked_add(s.align.max(page))
        });
        let Some(len) = len.filter(|&len| len <= isize::MAX as u64).map(|len| len.max(page)) else {
            let requested = request.segments.iter().fold(0u64, |n, s| n.saturating_add(s.size));
            return Err(os_error(id, "reserve", 0, requested, std::io::Error::from_raw_os_error(libc::ENOMEM)));
        };
        let reservation =
            Reservation::new(len as usize, MAX_ALIGN as usize).map_err(|e| os_error(id, "reserve", 0, len, e))?;
        let mut space = ExtentSet::default();
        space.insert(0, len);
        let state = State { space, ..State::default() };
        Arc::new(Pages { id, apart: true, page, state: Mutex::new(state), reservation }).allocate_unbounded(request)
    }
}

impl MemoryManager for PageAllocator {
    fn id(&self) -> ManagerId {
        self.inner.id
    }
    fn allocate(&self, request: &AllocRequest) -> Result<InFlightAlloc, MemError> {
        self.inner.allocate(request)
    }
    fn deallocate(&self, allocs: Vec<FinalizedAlloc>, on_done: OnDone) {
        on_done(crate::alloc::deallocate_all(&*self.inner, allocs))
    }
    fn adopt_raw(&self, raw: RawFinalizedAlloc) -> Result<FinalizedAlloc, MemError> {
        if raw.manager != self.inner.id {
            return Err(MemError::ForeignAllocation { manager: self.inner.id, owner: raw.manager, alloc: raw });
        }
        let key = raw.key();
        let id = self.inner.id;
        match self.inner.state.lock().records.get_mut(key) {
            Lookup::Live(r) if r.handle_live => Err(MemError::HandleAlreadyLive { manager: id, alloc: raw }),
            Lookup::Live(r) => {
                r.handle_live = true;
                Ok(FinalizedAlloc::new(key, self.inner.clone()))
            }
            Lookup::Gone => Err(MemError::DoubleFree { manager: id, alloc: raw }),
            Lookup::Never => Err(MemError::UnknownAllocation { manager: id, alloc: raw }),
        }
    }
    fn stats(&self) -> MemStats {
        let range = self.reservation();
        let st = self.inner.state.lock();
        let (committed, in_use, allocations) = (st.committed, st.in_use, st.allocations);
        drop(st);
        MemStats {
            reserved: self.inner.reservation.len() as u64,
            committed,
            in_use,
            mappings: maps::count_in(std::slice::from_ref(&(range.start.0..range.end.0))),
            allocations,
        }
    }
    fn reservation(&self) -> Range<TargetAddr> {
        let base = self.inner.base();
        TargetAddr(base)..TargetAddr(base + self.inner.reservation.len() as u64)
    }
}
