//! The life of one allocation: in flight (being written), finalized (runnable), released.
//!
//! An [`InFlightAlloc`] owns its segments' bytes exclusively until it is finalized or
//! abandoned; a [`FinalizedAlloc`] owns the runnable memory until it is deallocated or
//! dropped. Both keep their manager's memory mapped (they hold its state alive), so no
//! handle can outlive the pages it names.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::table::Key;
use crate::{ActionError, ManagerId, MemError, MemoryManager, Prot, SegmentLifetime, TargetAddr};

/// A callback run when an allocation is finalized or deallocated.
pub type ActionFn = Box<dyn FnOnce() -> Result<(), ActionError> + Send + 'static>;

/// Called once with the finalized allocation, or with the error that released it.
pub type OnFinalized = Box<dyn FnOnce(Result<FinalizedAlloc, MemError>) + Send + 'static>;

/// Called once when an abandon or deallocate completes.
pub type OnDone = Box<dyn FnOnce(Result<(), MemError>) + Send + 'static>;

/// Work tied to an allocation's life, such as registering and deregistering `.eh_frame`.
///
/// At finalize, after the segments have their final protection, every `finalize` callback
/// runs in order. If one fails, the `deallocate` callbacks of those that already ran run in
/// reverse order, the allocation is released and finalize reports the failure. At
/// deallocate, the `deallocate` callbacks run in reverse order before the memory goes.
pub struct FinalizeAction {
    /// Runs at finalize; an error fails the finalize.
    pub finalize: ActionFn,
    /// Runs at deallocate, if the finalize callback succeeded.
    pub deallocate: Option<ActionFn>,
}

impl FinalizeAction {
    /// An action with both callbacks.
    pub fn new(
        finalize: impl FnOnce() -> Result<(), ActionError> + Send + 'static,
        deallocate: impl FnOnce() -> Result<(), ActionError> + Send + 'static,
    ) -> FinalizeAction {
        FinalizeAction { finalize: Box::new(finalize), deallocate: Some(Box::new(deallocate)) }
    }

    /// An action with only a finalize callback.
    pub fn on_finalize(finalize: impl FnOnce() -> Result<(), ActionError> + Send + 'static) -> FinalizeAction {
        FinalizeAction { finalize: Box::new(finalize), deallocate: None }
    }
}

impl fmt::Debug for FinalizeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinalizeAction").field("has_deallocate", &self.deallocate.is_some()).finish()
    }
}

/// Where one segment of an allocation was placed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentInfo {
    /// Protection once finalized.
    pub prot: Prot,
    /// When it is released.
    pub lifetime: SegmentLifetime,
    /// Where its bytes will run.
    pub target: TargetAddr,
    /// Its size in bytes, as requested.
    pub size: u64,
}

/// A segment's working bytes, borrowed from an in-flight allocation.
#[derive(Debug)]
pub struct WorkingSegment<'a> {
    /// Where the segment is and will run.
    pub info: SegmentInfo,
    /// The bytes the linker writes: zero-filled at allocation.
    pub bytes: &'a mut [u8],
}

/// One placed segment, with the manager's bookkeeping for it.
pub(crate) struct Placed {
    pub(crate) info: SegmentInfo,
    /// Start of the working view of the segment: writable, `info.size` bytes.
    pub(crate) working: *mut u8,
    /// Offset of the space taken, from the manager's reservation base.
    pub(crate) offset: u64,
    /// Length of the space taken (the size rounded to the manager's granule).
    pub(crate) len: u64,
    /// The buffer `working` points into, when the manager stages the segment's bytes apart
    /// from its pages (and copies them there at finalize).
    pub(crate) staging: Option<Box<[u8]>>,
}

/// The segments of one allocation, owned by whoever holds them: an [`InFlightAlloc`], a
/// finalize waiting for its pages, or a finalized record.
pub(crate) struct Parts {
    pub(crate) segments: Vec<Placed>,
}

// SAFETY: `Parts` is the exclusive owner of its segments' byte ranges (the manager hands a
// range to one allocation at a time), and the raw `working` pointers are only dereferenced
// through `&self`/`&mut self` of the owner, so moving or sharing it across threads is as safe
// as moving or sharing a `Vec<u8>`. The pages stay mapped while the owner's `Arc` to the
// manager state lives.
unsafe impl Send for Parts {}
// SAFETY: shared access only reads through the pointers (see `Send` above).
unsafe impl Sync for Parts {}

impl Parts {
    pub(crate) fn requested(&self) -> u64 {
        self.segments.iter().map(|s| s.info.size).sum()
    }
}

/// The manager side of allocations: implemented by each manager's shared state, which the
/// handles keep alive.
pub(crate) trait Backend: Send + Sync + 'static {
    fn id(&self) -> ManagerId;
    /// Makes `parts` runnable, runs `actions`, and calls `on_done` (now or later).
    fn finalize(&self, owner: Arc<dyn Backend>, parts: Parts, actions: Vec<FinalizeAction>, on_done: OnFinalized);
    /// Releases never-finalized memory.
    fn abandon(&self, parts: Parts) -> Result<(), MemError>;
    /// Releases a finalized allocation: runs its deallocate actions, frees its memory.
    fn release(&self, key: Key) -> Result<(), MemError>;
    /// Marks the allocation as having no live handle (it became raw).
    fn disown(&self, key: Key);
    /// Whether this manager exists for one allocation alone
    /// ([`crate::PageAllocator::allocate_apart`]): then nothing but that allocation keeps it,
    /// and a weak hold on it would free the allocation at once.
    fn lives_for_its_allocation(&self) -> bool {
        false
    }
}

/// Runs the finalize callbacks in order. On success returns the deallocate callbacks to
/// keep; on failure runs those of the actions that already ran, in reverse.
pub(crate) fn run_finalize_actions(
    manager: ManagerId,
    actions: Vec<FinalizeAction>,
) -> Result<Vec<ActionFn>, MemError> {
    let mut undo: Vec<ActionFn> = Vec::with_capacity(actions.len());
    for (index, action) in actions.into_iter().enumerate() {
        if let Err(source) = (action.finalize)() {
            for dealloc in undo.into_iter().rev() {
                if let Err(e) = dealloc() {
                    tracing::warn!(%manager, error = %e, "deallocate action failed while unwinding a failed finalize");
                }
            }
            return Err(MemError::FinalizeAction { manager, index, source });
        }
        undo.extend(action.deallocate);
    }
    Ok(undo)
}

/// Runs deallocate callbacks in reverse registration order, collecting failures.
pub(crate) fn run_deallocate_actions(
    manager: ManagerId,
    alloc: RawFinalizedAlloc,
    actions: Vec<ActionFn>,
    errors: &mut Vec<MemError>,
) {
    let count = actions.len();
    for (rev, action) in actions.into_iter().rev().enumerate() {
        if let Err(source) = action() {
            errors.push(MemError::DeallocateAction { manager, alloc, index: count - 1 - rev, source });
        }
    }
}

/// An allocation being written: per segment a zero-filled working view and the target
/// address the code will run at.
///
/// Contract: consume it with [`finalize`](Self::finalize) or [`abandon`](Self::abandon).
/// Dropping it abandons it (its memory is released, nothing leaks). It keeps its manager's
/// memory alive.
///
/// Finalizing twice, or abandoning after finalizing, does not compile:
/// ```compile_fail,E0382
/// # use jit_mem::*;
/// # fn f(mem: &dyn MemoryManager, req: &AllocRequest) -> Result<(), MemError> {
/// let alloc = mem.allocate(req)?;
/// let done = alloc.finalize_blocking(Vec::new())?;
/// alloc.abandon(Box::new(|_| {})); // error: use of moved value `alloc`
/// # Ok(()) }
/// ```
pub struct InFlightAlloc {
    owner: Arc<dyn Backend>,
    parts: Option<Parts>,
}

impl InFlightAlloc {
    pub(crate) fn new(owner: Arc<dyn Backend>, parts: Parts) -> InFlightAlloc {
        InFlightAlloc { owner, parts: Some(parts) }
    }

    fn segs(&self) -> &[Placed] {
        self.parts.as_ref().map(|p| p.segments.as_slice()).unwrap_or_default()
    }

    /// The manager that made this allocation.
    pub fn manager(&self) -> ManagerId {
        self.owner.id()
    }

    /// Number of segments (as in the request).
    pub fn len(&self) -> usize {
        self.segs().len()
    }

    /// Whether the request had no segments.
    pub fn is_empty(&self) -> bool {
        self.segs().is_empty()
    }

    /// Where segment `index` was placed.
    pub fn segment(&self, index: usize) -> Option<SegmentInfo> {
        self.segs().get(index).map(|s| s.info)
    }

    /// All segments, in request order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentInfo> + '_ {
        self.segs().iter().map(|s| s.info)
    }

    /// The target address of segment `index`.
    pub fn target(&self, index: usize) -> Option<TargetAddr> {
        self.segment(index).map(|s| s.target)
    }

    /// The working bytes of segment `index`.
    pub fn working(&self, index: usize) -> Option<&[u8]> {
        let seg = self.segs().get(index)?;
        // SAFETY: `working` points at `size` writable bytes that this allocation owns
        // exclusively and that stay mapped while `self.owner` lives; `&self` forbids
        // concurrent mutation through this allocation.
        Some(unsafe { std::slice::from_raw_parts(seg.working, seg.info.size as usize) })
    }

    /// The working bytes of segment `index`, to write.
    pub fn working_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        let seg = self.segs().get(index)?;
        // SAFETY: as in `working`; `&mut self` makes this the only live view.
        Some(unsafe { std::slice::from_raw_parts_mut(seg.working, seg.info.size as usize) })
    }

    /// Every segment's working bytes at once (they never overlap).
    pub fn working_views(&mut self) -> Vec<WorkingSegment<'_>> {
        self.segs()
            .iter()
            .map(|seg| WorkingSegment {
                info: seg.info,
                // SAFETY: as in `working_mut`; distinct segments occupy disjoint ranges, so
                // the slices do not alias one another.
                bytes: unsafe { std::slice::from_raw_parts_mut(seg.working, seg.info.size as usize) },
            })
            .collect()
    }

    /// Makes the allocation runnable: applies final protections (or publishes the
    /// executable view), flushes the instruction cache, runs the finalize actions, releases
    /// finalize-only segments, then calls `on_done` with the finalized handle.
    ///
    /// `on_done` may run before this returns (the dual-mapped and page managers) or later, on
    /// the thread that finalizes or abandons the last in-flight neighbour sharing a page (the
    /// mprotect slab manager).
    pub fn finalize(mut self, actions: Vec<FinalizeAction>, on_done: OnFinalized) {
        match self.parts.take() {
            Some(parts) => self.owner.finalize(self.owner.clone(), parts, actions, on_done),
            // Unreachable (finalize consumes the allocation), but the callback still hears.
            None => on_done(Err(MemError::Os {
                manager: self.owner.id(),
                op: "finalize",
                addr: TargetAddr(0),
                len: 0,
                source: std::io::Error::other("allocation already finalized or abandoned"),
            })),
        }
    }

    /// [`finalize`](Self::finalize), waiting for the result.
    ///
    /// With the mprotect slab manager this waits until every in-flight allocation sharing a
    /// page with this one is finalized or abandoned: never call it while the same thread holds
    /// such a neighbour.
    pub fn finalize_blocking(self, actions: Vec<FinalizeAction>) -> Result<FinalizedAlloc, MemError> {
        let manager = self.manager();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.finalize(
            actions,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Err(MemError::Os {
                manager,
                op: "finalize (completion dropped)",
                addr: TargetAddr(0),
                len: 0,
                source: std::io::Error::other("finalize completion was dropped without a result"),
            })
        })
    }

    /// Releases the allocation without finalizing it.
    pub fn abandon(mut self, on_done: OnDone) {
        let result = match self.parts.take() {
            Some(parts) => self.owner.abandon(parts),
            None => Ok(()),
        };
        on_done(result);
    }
}

impl Drop for InFlightAlloc {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            tracing::debug!(manager = %self.owner.id(), "in-flight allocation dropped; abandoning it");
            if let Err(e) = self.owner.abandon(parts) {
                tracing::warn!(error = %e, "abandoning a dropped in-flight allocation failed");
            }
        }
    }
}

impl fmt::Debug for InFlightAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightAlloc")
            .field("manager", &self.manager())
            .field("segments", &self.segments().collect::<Vec<_>>())
            .finish()
    }
}

/// A finalized allocation's name without its ownership: for bookkeeping tables that cannot
/// hold a [`FinalizedAlloc`]. Turn it back into a handle with [`FinalizedAlloc::from_raw`];
/// a stale, foreign or duplicate raw handle is an error, never undefined behaviour.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RawFinalizedAlloc {
    /// The manager that made the allocation.
    pub manager: ManagerId,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl RawFinalizedAlloc {
    pub(crate) fn key(self) -> Key {
        Key { slot: self.slot, generation: self.generation }
    }

    /// The raw handle as two words, for tables that store plain integers.
    pub fn to_bits(self) -> (ManagerId, u64) {
        (self.manager, (u64::from(self.generation) << 32) | u64::from(self.slot))
    }

    /// The inverse of [`to_bits`](Self::to_bits).
    pub fn from_bits(manager: ManagerId, bits: u64) -> RawFinalizedAlloc {
        RawFinalizedAlloc { manager, slot: bits as u32, generation: (bits >> 32) as u32 }
    }
}

impl fmt::Display for RawFinalizedAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allocation {}.{} of {}", self.slot, self.generation, self.manager)
    }
}

/// A runnable allocation. Move-only: it can be deallocated once, and only through the
/// manager that made it.
///
/// Contract: give it back with [`MemoryManager::deallocate`] (batched, reports errors).
/// Dropping it deallocates it too (its deallocate actions run; errors are logged), so memory
/// never leaks; [`into_raw`](Self::into_raw) keeps the memory without a handle.
///
/// Using it after deallocation does not compile:
/// ```compile_fail,E0382
/// # use jit_mem::*;
/// # fn f(mem: &dyn MemoryManager, done: FinalizedAlloc) -> Result<(), MemError> {
/// mem.deallocate_blocking(vec![done])?;
/// mem.deallocate_blocking(vec![done])?; // error: use of moved value `done`
/// # Ok(()) }
/// ```
pub struct FinalizedAlloc {
    key: Key,
    owner: Option<Arc<dyn Backend>>,
}

impl FinalizedAlloc {
    pub(crate) fn new(key: Key, owner: Arc<dyn Backend>) -> FinalizedAlloc {
        FinalizedAlloc { key, owner: Some(owner) }
    }

    /// The manager that owns this allocation.
    pub fn manager(&self) -> Option<ManagerId> {
        self.owner.as_ref().map(|o| o.id())
    }

    /// The raw name of this allocation.
    pub fn raw(&self) -> Option<RawFinalizedAlloc> {
        let manager = self.manager()?;
        Some(RawFinalizedAlloc { manager, slot: self.key.slot, generation: self.key.generation })
    }

    /// Gives up the handle but keeps the memory: it stays allocated until the raw handle is
    /// turned back into a handle and deallocated, or the manager is dropped.
    pub fn into_raw(mut self) -> RawFinalizedAlloc {
        let owner = self.owner.take();
        let manager = owner.as_ref().map(|o| o.id()).unwrap_or(ManagerId::NONE);
        if let Some(owner) = owner {
            owner.disown(self.key);
        }
        RawFinalizedAlloc { manager, slot: self.key.slot, generation: self.key.generation }
    }

    /// Turns a raw handle back into a handle. Errors if `manager` did not make it, if it was
    /// already deallocated, or if a handle for it is alive.
    pub fn from_raw(manager: &dyn MemoryManager, raw: RawFinalizedAlloc) -> Result<FinalizedAlloc, MemError> {
        manager.adopt_raw(raw)
    }

    /// Gives up the handle for a callback that deallocates the allocation: to tie its life to
    /// another allocation of the same manager, as one of that one's deallocate actions (jit-link
    /// does this for a graph's second allocation, of stubs and copies for far references).
    ///
    /// Unlike a handle moved into the action, the callback holds the manager weakly, so no
    /// reference cycle runs through the other allocation's record: if the manager goes first,
    /// this allocation's memory went with it and the callback does nothing. An allocation
    /// made apart ([`crate::PageAllocator::allocate_apart`]) is the only thing that keeps its
    /// manager, and refers to no other: the callback holds that one strongly. Dropping the
    /// callback uncalled deallocates too (errors are logged), so nothing leaks.
    pub fn into_deallocate_action(mut self) -> ActionFn {
        let owner = self.take().map(|(key, owner)| {
            let held =
                if owner.lives_for_its_allocation() { Held::Strong(owner) } else { Held::Weak(Arc::downgrade(&owner)) };
            (key, held)
        });
        let release = TiedRelease { owner };
        Box::new(move || release.run().map_err(|e| Box::new(e) as ActionError))
    }

    /// Takes the key and owner out, leaving a husk whose drop does nothing.
    pub(crate) fn take(&mut self) -> Option<(Key, Arc<dyn Backend>)> {
        self.owner.take().map(|o| (self.key, o))
    }
}

impl Drop for FinalizedAlloc {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            if let Err(e) = owner.release(self.key) {
                tracing::warn!(error = %e, "releasing a dropped finalized allocation failed");
            }
        }
    }
}

impl fmt::Debug for FinalizedAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw() {
            Some(raw) => write!(f, "FinalizedAlloc({raw})"),
            None => f.write_str("FinalizedAlloc(released)"),
        }
    }
}

/// How [`TiedRelease`] holds its allocation's manager.
enum Held {
    Weak(Weak<dyn Backend>),
    Strong(Arc<dyn Backend>),
}

/// The allocation behind [`FinalizedAlloc::into_deallocate_action`]: released when run or
/// dropped, if its manager still lives.
struct TiedRelease {
    owner: Option<(Key, Held)>,
}

impl TiedRelease {
    /// The allocation's key and its manager, if that still lives (once: later calls find none).
    fn take(&mut self) -> Option<(Key, Arc<dyn Backend>)> {
        match self.owner.take()? {
            (key, Held::Weak(weak)) => weak.upgrade().map(|owner| (key, owner)),
            (key, Held::Strong(owner)) => Some((key, owner)),
        }
    }

    fn run(mut self) -> Result<(), MemError> {
        match self.take() {
            Some((key, owner)) => owner.release(key),
            None => Ok(()),
        }
    }
}

impl Drop for TiedRelease {
    fn drop(&mut self) {
        if let Some((key, owner)) = self.take() {
            if let Err(e) = owner.release(key) {
                tracing::warn!(error = %e, "releasing an allocation tied to another one failed");
            }
        }
    }
}

/// Deallocation shared by every manager: checks ownership, releases each handle, reports
/// every failure.
pub(crate) fn deallocate_all(me: &dyn Backend, allocs: Vec<FinalizedAlloc>) -> Result<(), MemError> {
    let manager = me.id();
    let mut errors = Vec::new();
    for mut alloc in allocs {
        let raw = alloc.raw();
        let Some((key, owner)) = alloc.take() else {
            continue;
        };
        if owner.id() != manager {
            // Released by the manager that owns it, so the memory does not leak; the caller
            // still hears that it used the wrong manager.
            if let Err(e) = owner.release(key) {
                errors.push(e);
            }
            if let Some(alloc) = raw {
                errors.push(MemError::ForeignAllocation { manager, owner: owner.id(), alloc });
            }
            continue;
        }
        if let Err(e) = me.release(key) {
            errors.push(e);
        }
    }
    MemError::collect(errors)
}
