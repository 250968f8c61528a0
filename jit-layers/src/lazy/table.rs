//! The stub table of one manager: every stub by id (the number its lazy entry pushes), what it
//! stands for and which tracker owns it; the pool of stubs not handed out yet; the batches'
//! memory.
//!
//! Contract: the manager keeps the table behind one mutex, and nothing here calls into the
//! session (the session may call us under its own lock: lock order session, then table). Every
//! slot is read or written only under that mutex and only while the table holds its batch's
//! finalized allocation, so no slot access ever touches memory in flight or freed.
//!
//! A stub's life: `Free` (in the pool, or in a batch still being finalized) -> `Live` (defined
//! in a dylib, its slot at its lazy entry, the body, or a redirection) -> `Dead` (its tracker
//! was removed: its slot points at its lazy entry again, so a stale call lands in the resolver,
//! which reports it and aborts). Dead stubs are never handed out again: code or data may still
//! hold their addresses, and reusing one would turn a stale call into a silent call of an
//! unrelated function. That costs 24 bytes per removed stub until the session ends.

use std::sync::Arc;

use jit_core::{
    DylibId, Error, ExecutorAddr, FxHashMap, JitDylib, ResourceKey, Result, SymbolDef, SymbolFlags, SymbolName,
};
use jit_mem::FinalizedAlloc;

use super::reexports::{LazyStats, LazyStub, StubStatus};
use super::stubs::{LAZY_ENTRY_OFFSET, MAX_ID, SLOT_SIZE, STUB_SIZE, Slot};

/// What a live stub stands for.
struct Binding {
    stub: SymbolName,
    flags: SymbolFlags,
    dylib: JitDylib,
    body_dylib: JitDylib,
    body: SymbolName,
    key: ResourceKey,
    /// Some call has entered the resolver through this stub.
    called: bool,
}

enum StubState {
    Free,
    Live(Box<Binding>),
    Dead { stub: SymbolName, dylib: Arc<str> },
}

struct StubRecord {
    batch: u32,
    addr: u64,
    slot: Slot,
    state: StubState,
}

impl StubRecord {
    fn lazy_entry(&self) -> u64 {
        self.addr + LAZY_ENTRY_OFFSET
    }
}

enum BatchState {
    /// Allocated, being written or finalized: its slots must not be touched.
    InFlight,
    Finalized(FinalizedAlloc),
    /// Finalize failed; the memory is gone.
    Failed,
    /// Freed at the end of the session.
    Released,
}

struct BatchRecord {
    state: BatchState,
    first: u32,
    count: u32,
    /// How many of its stubs are `Live`.
    live: u32,
}

/// A call entering the resolver: what to look up.
pub(super) struct Call {
    pub(super) stub: SymbolName,
    /// The stub's address.
    pub(super) addr: u64,
    pub(super) dylib: JitDylib,
    pub(super) body_dylib: JitDylib,
    pub(super) body: SymbolName,
    /// The first call through this stub (the listener hears of it).
    pub(super) first: bool,
}

/// A live stub: its id, whether its calls still enter the resolver, and its body.
pub(super) type FoundStub = (u64, bool, (DylibId, SymbolName));

/// Why a call cannot go on.
pub(super) enum Refusal {
    /// The stub's tracker was removed.
    Dead { stub: SymbolName, dylib: Arc<str> },
    /// No stub has this id.
    Unknown,
}

#[derive(Default)]
pub(super) struct StubTable {
    records: Vec<StubRecord>,
    batches: Vec<BatchRecord>,
    /// Ids of `Free` stubs of finalized batches.
    pool: Vec<u32>,
    by_key: FxHashMap<ResourceKey, Vec<u32>>,
    by_name: FxHashMap<(DylibId, SymbolName), u32>,
}

impl StubTable {
    /// Takes up to `n` stubs from the pool, lowest addresses of a batch first (the pool is
    /// a stack of each batch's free ids in descending order), so a unit's stubs are neighbours.
    pub(super) fn take_free(&mut self, n: usize) -> Vec<u32> {
        let keep = self.pool.len().saturating_sub(n);
        let mut taken = self.pool.split_off(keep);
        taken.reverse();
        taken
    }

    /// Records a batch of `count` stubs at `stubs` with slots at `slots`; returns the batch's
    /// index and its first id.
    pub(super) fn add_batch(&mut self, stubs: u64, slots: u64, count: u32) -> Result<(u32, u32)> {
        let first =
            u32::try_from(self.records.len()).ok().filter(|f| f.checked_add(count).is_some_and(|e| e <= MAX_ID));
        let Some(first) = first else {
            return Err(Error::msg(format!("lazy stubs: more than {MAX_ID} stubs in one manager")));
        };
        let batch = self.batches.len() as u32;
        self.batches.push(BatchRecord { state: BatchState::InFlight, first, count, live: 0 });
        for i in 0..u64::from(count) {
            self.records.push(StubRecord {
                batch,
                addr: stubs + i * STUB_SIZE,
                slot: Slot(slots + i * SLOT_SIZE),
                state: StubState::Free,
            });
        }
        Ok((batch, first))
    }

    /// Makes `ids` stand for `stubs` (pairwise) in `dylib`, owned by `key`; returns their
    /// definitions.
    pub(super) fn bind(
        &mut self,
        ids: &[u32],
        stubs: &[LazyStub],
        dylib: &JitDylib,
        key: ResourceKey,
    ) -> Vec<(SymbolName, SymbolDef)> {
        let mut defs = Vec::with_capacity(ids.len());
        for (&id, s) in ids.iter().zip(stubs) {
            let record = &mut self.records[id as usize];
            record.state = StubState::Live(Box::new(Binding {
                stub: s.stub.clone(),
                flags: s.flags,
                dylib: dylib.clone(),
                body_dylib: s.body_dylib.clone(),
                body: s.body.clone(),
                key,
                called: false,
            }));
            defs.push((s.stub.clone(), SymbolDef::new(ExecutorAddr(record.addr), s.flags)));
            self.batches[record.batch as usize].live += 1;
            self.by_name.insert((dylib.id(), s.stub.clone()), id);
        }
        self.by_key.entry(key).or_default().extend_from_slice(ids);
        defs
    }

    /// Gives back stubs taken but never bound: to the pool if their batch is finalized (those of
    /// a batch in flight join the pool when it is).
    pub(super) fn untake(&mut self, ids: &[u32]) {
        for &id in ids {
            let record = &self.records[id as usize];
            if matches!(record.state, StubState::Free)
                && matches!(self.batches[record.batch as usize].state, BatchState::Finalized(_))
            {
                self.pool.push(id);
            }
        }
    }

    /// The batch is runnable: its free stubs join the pool.
    pub(super) fn batch_finalized(&mut self, batch: u32, alloc: FinalizedAlloc) {
        let b = &mut self.batches[batch as usize];
        b.state = BatchState::Finalized(alloc);
        let (first, count) = (b.first, b.count);
        for id in (first..first + count).rev() {
            if matches!(self.records[id as usize].state, StubState::Free) {
                self.pool.push(id);
            }
        }
    }

    /// The batch could not be finalized: its stubs never run. Bound ones die (so a lookup of
    /// them is not answered with dead memory), free ones stay out of the pool.
    pub(super) fn batch_failed(&mut self, batch: u32) {
        let b = &mut self.batches[batch as usize];
        b.state = BatchState::Failed;
        let (first, count) = (b.first, b.count);
        for id in first..first + count {
            self.kill_one(id);
        }
    }

    /// The stubs owned by `key` die: their slots point at their lazy entries again.
    pub(super) fn remove(&mut self, key: ResourceKey) {
        for id in self.by_key.remove(&key).unwrap_or_default() {
            self.kill_one(id);
        }
    }

    /// `ids` die (their symbols could not be defined after all).
    pub(super) fn kill(&mut self, ids: &[u32]) {
        for &id in ids {
            self.kill_one(id);
        }
    }

    fn kill_one(&mut self, id: u32) {
        let record = &mut self.records[id as usize];
        let StubState::Live(binding) = std::mem::replace(&mut record.state, StubState::Free) else {
            return;
        };
        let (lazy_entry, slot) = (record.lazy_entry(), record.slot);
        record.state = StubState::Dead { stub: binding.stub.clone(), dylib: Arc::from(binding.dylib.name()) };
        let name_key = (binding.dylib.id(), binding.stub);
        if self.by_name.get(&name_key) == Some(&id) {
            self.by_name.remove(&name_key);
        }
        let batch = &mut self.batches[self.records[id as usize].batch as usize];
        batch.live -= 1;
        if matches!(batch.state, BatchState::Finalized(_)) {
            // SAFETY: the batch is finalized and its allocation is held by this table, under
            // whose lock we are.
            unsafe { slot.store(lazy_entry) };
        }
    }

    /// Everything owned by `src` now belongs to `dst`.
    pub(super) fn transfer(&mut self, dst: ResourceKey, src: ResourceKey) {
        let Some(ids) = self.by_key.remove(&src) else { return };
        for &id in &ids {
            if let StubState::Live(binding) = &mut self.records[id as usize].state {
                binding.key = dst;
            }
        }
        self.by_key.entry(dst).or_default().extend(ids);
    }

    /// Takes out the memory of every finalized batch none of whose stubs is live (at the end
    /// of the session, when every tracker is gone); the caller frees it outside the lock.
    pub(super) fn release_unused(&mut self) -> Vec<FinalizedAlloc> {
        let mut freed = Vec::new();
        for b in self.batches.iter_mut().filter(|b| b.live == 0 && matches!(b.state, BatchState::Finalized(_))) {
            if let BatchState::Finalized(alloc) = std::mem::replace(&mut b.state, BatchState::Released) {
                freed.push(alloc);
            }
        }
        if !freed.is_empty() {
            let (records, batches) = (&self.records, &self.batches);
            self.pool.retain(|&id| !matches!(batches[records[id as usize].batch as usize].state, BatchState::Released));
        }
        freed
    }

    /// A call entered the resolver through stub `id`.
    pub(super) fn enter(&mut self, id: u64) -> Result<Call, Refusal> {
        let record = usize::try_from(id).ok().and_then(|i| self.records.get_mut(i));
        let Some(record) = record else { return Err(Refusal::Unknown) };
        let addr = record.addr;
        match &mut record.state {
            StubState::Live(b) => {
                let first = !b.called;
                b.called = true;
                Ok(Call {
                    stub: b.stub.clone(),
                    addr,
                    dylib: b.dylib.clone(),
                    body_dylib: b.body_dylib.clone(),
                    body: b.body.clone(),
                    first,
                })
            }
            StubState::Dead { stub, dylib } => Err(Refusal::Dead { stub: stub.clone(), dylib: dylib.clone() }),
            StubState::Free => Err(Refusal::Unknown),
        }
    }

    /// Points stub `id` at its body (unless it was redirected meanwhile); returns where the
    /// call goes.
    pub(super) fn publish(&mut self, id: u64, body: u64) -> Result<u64, Refusal> {
        let Some(record) = usize::try_from(id).ok().and_then(|i| self.records.get(i)) else {
            return Err(Refusal::Unknown);
        };
        match &record.state {
            StubState::Live(_) => {}
            StubState::Dead { stub, dylib } => {
                return Err(Refusal::Dead { stub: stub.clone(), dylib: dylib.clone() });
            }
            StubState::Free => return Err(Refusal::Unknown),
        }
        if !matches!(self.batches[record.batch as usize].state, BatchState::Finalized(_)) {
            // Unreachable: a stub runs only once its batch is finalized.
            return Err(Refusal::Unknown);
        }
        // SAFETY: the batch is finalized and held by this table, under whose lock we are.
        Ok(unsafe { record.slot.replace_if(record.lazy_entry(), body) })
    }

    fn live(&self, dylib: &JitDylib, name: &SymbolName) -> Result<&StubRecord> {
        let missing = || Error::msg(format!("no materialized lazy stub '{name}' in dylib '{}'", dylib.name()));
        let id = *self.by_name.get(&(dylib.id(), name.clone())).ok_or_else(missing)?;
        let record = &self.records[id as usize];
        match (&record.state, &self.batches[record.batch as usize].state) {
            (StubState::Live(_), BatchState::Finalized(_)) => Ok(record),
            _ => Err(missing()),
        }
    }

    /// Points stub `name` of `dylib` at `addr`.
    pub(super) fn redirect(&mut self, dylib: &JitDylib, name: &SymbolName, addr: ExecutorAddr) -> Result<()> {
        let record = self.live(dylib, name)?;
        // SAFETY: `live` checked that the batch is finalized; it is held by this table, under
        // whose lock we are.
        unsafe { record.slot.store(addr.0) };
        Ok(())
    }

    pub(super) fn status(&self, dylib: &JitDylib, name: &SymbolName) -> Option<StubStatus> {
        let record = self.live(dylib, name).ok()?;
        // SAFETY: as in `redirect`.
        let now = unsafe { record.slot.load() };
        let flags = match &record.state {
            StubState::Live(b) => b.flags,
            _ => SymbolFlags::empty(),
        };
        Some(StubStatus {
            stub: ExecutorAddr(record.addr),
            flags,
            target: (now != record.lazy_entry()).then_some(ExecutorAddr(now)),
        })
    }

    /// The id of the live stub at `addr` whose calls still enter the resolver, if any. A
    /// linear search: it serves the rare installation of a signal handler.
    pub(super) fn unresolved_at(&self, addr: u64) -> Option<u64> {
        self.stub_at(addr).filter(|(_, unresolved, _)| *unresolved).map(|(id, _, _)| id)
    }

    /// The live stub `name` of dylib `dylib`: see [`stub_at`](Self::stub_at).
    pub(super) fn stub_named(&self, dylib: DylibId, name: &SymbolName) -> Option<FoundStub> {
        let id = *self.by_name.get(&(dylib, name.clone()))?;
        self.found(id as usize)
    }

    /// The live stub at `addr`: its id, whether its calls still enter the resolver, and the
    /// body it stands for. A linear search, as [`unresolved_at`](Self::unresolved_at).
    pub(super) fn stub_at(&self, addr: u64) -> Option<FoundStub> {
        self.found(self.id_at(addr)?)
    }

    /// The name of the live stub at `addr`. A linear search, as [`stub_at`](Self::stub_at).
    pub(super) fn stub_name_at(&self, addr: u64) -> Option<SymbolName> {
        match &self.records[self.id_at(addr)?].state {
            StubState::Live(binding) => Some(binding.stub.clone()),
            _ => None,
        }
    }

    /// The id of the stub at `addr`, live or not.
    fn id_at(&self, addr: u64) -> Option<usize> {
        self.records.iter().position(|r| r.addr == addr)
    }

    fn found(&self, id: usize) -> Option<FoundStub> {
        let record = self.records.get(id)?;
        let StubState::Live(binding) = &record.state else { return None };
        if !matches!(self.batches[record.batch as usize].state, BatchState::Finalized(_)) {
            return None;
        }
        // SAFETY: as in `redirect`: the table holds a live stub's finalized batch.
        let unresolved = unsafe { record.slot.load() } == record.lazy_entry();
        Some((id as u64, unresolved, (binding.body_dylib.id(), binding.body.clone())))
    }

    pub(super) fn stats(&self) -> LazyStats {
        let mut stats = LazyStats::default();
        for r in &self.records {
            match r.state {
                StubState::Free => {}
                StubState::Live(_) => stats.live_stubs += 1,
                StubState::Dead { .. } => stats.dead_stubs += 1,
            }
        }
        stats.free_stubs = self.pool.len();
        stats.batches = self.batches.iter().filter(|b| matches!(b.state, BatchState::Finalized(_))).count();
        stats
    }
}
