//! What the object linking layer keeps of each linked object: its memory (owned by the
//! resource tracker it was added with) and its initializers and finalizers, which run in the
//! order a static link would give them.

use std::ffi::c_void;

use jit_core::{DylibId, ExecutorAddr, FxHashMap, JitDylib, ResourceKey, Result, SymbolName};

use crate::entry::EntryGate;
use jit_link::{InitFiniEntry, LinkedObject};
use jit_mem::{FinalizedAlloc, TargetAddr};
use parking_lot::Mutex;

use crate::object_layer::InitArgs;

/// One linked object.
pub(crate) struct LinkedRecord {
    object: String,
    /// The order each object of the graph was added in ("link order" for initializers), by
    /// `InitFiniEntry::member`; a graph whose objects share one place has one.
    orders: Vec<u64>,
    dylib: DylibId,
    alloc: Option<FinalizedAlloc>,
    inits: Vec<InitFiniEntry>,
    finis: Vec<InitFiniEntry>,
    dso_handle: Option<TargetAddr>,
    initialized: bool,
}

impl LinkedRecord {
    pub(crate) fn new(object: &str, orders: Vec<u64>, dylib: DylibId, linked: LinkedObject) -> Self {
        LinkedRecord {
            object: object.to_string(),
            orders,
            dylib,
            alloc: Some(linked.alloc),
            inits: linked.init_fini.inits,
            finis: linked.init_fini.finis,
            dso_handle: linked.dso_handle,
            initialized: false,
        }
    }

    /// The record's place in link order: its first object's.
    fn order(&self) -> u64 {
        self.order_of(0)
    }

    /// The place in link order of the object `member` of the graph (the first object's when
    /// the objects share one).
    fn order_of(&self, member: u32) -> u64 {
        self.orders.get(member as usize).or(self.orders.first()).copied().unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    /// Records by tracker.
    by_key: FxHashMap<ResourceKey, Vec<LinkedRecord>>,
    /// Side-effects-only symbols of objects with initializers, not yet looked up, per dylib
    /// whose initializers they stand for, each with the dylib defining it (`None`: that one).
    init_symbols: FxHashMap<DylibId, Vec<(Option<JitDylib>, SymbolName)>>,
    /// Dylibs whose linked objects' initializers count as another dylib's (a compile-on-demand
    /// layer's implementation dylib, for the dylib its modules were added to).
    owners: FxHashMap<DylibId, DylibId>,
}

/// The layer's per-object records.
#[derive(Default)]
pub(crate) struct Initializers {
    state: Mutex<State>,
}

impl Initializers {
    pub(crate) fn add_init_symbol(&self, dylib: DylibId, defined_in: Option<JitDylib>, name: SymbolName) {
        self.state.lock().init_symbols.entry(dylib).or_default().push((defined_in, name));
    }

    /// The init symbols of `dylib` not yet looked up (taken: looking them up links them).
    pub(crate) fn init_symbols(&self, dylib: DylibId) -> Vec<(Option<JitDylib>, SymbolName)> {
        self.state.lock().init_symbols.remove(&dylib).unwrap_or_default()
    }

    pub(crate) fn set_owner(&self, dylib: DylibId, owner: DylibId) {
        self.state.lock().owners.insert(dylib, owner);
    }

    /// The dylib whose initializers those of objects linked into `dylib` are.
    pub(crate) fn owner_of(&self, dylib: DylibId) -> DylibId {
        self.state.lock().owners.get(&dylib).copied().unwrap_or(dylib)
    }

    /// Keeps `record` under `key`. Called under the session lock (from `with_resource_key`),
    /// so it only files the record.
    pub(crate) fn record(&self, key: ResourceKey, record: LinkedRecord) {
        self.state.lock().by_key.entry(key).or_default().push(record);
    }

    /// Runs the initializers of `dylib`'s linked objects that have not run yet: all objects'
    /// entries in link order, then stably by ascending priority.
    pub(crate) fn run_pending(&self, dylib: DylibId, args: InitArgs, gate: &EntryGate) {
        let mut calls: Vec<(u32, u64, usize, TargetAddr)> = Vec::new();
        {
            let mut st = self.state.lock();
            for record in st.by_key.values_mut().flatten().filter(|r| r.dylib == dylib && !r.initialized) {
                record.initialized = true;
                let order = |e: &InitFiniEntry| record.order_of(e.member);
                calls.extend(record.inits.iter().enumerate().map(|(i, e)| (e.priority, order(e), i, e.addr)));
            }
        }
        calls.sort_by_key(|&(priority, order, i, _)| (priority, order, i));
        for (_, _, _, addr) in calls {
            // SAFETY: `addr` is an initializer of a linked, finalized object of this dylib (its
            // memory lives until its tracker is removed); initializers take glibc's
            // (argc, argv, envp), which a function declared without parameters ignores.
            unsafe {
                gate.call(ExecutorAddr(addr.0), args.argc as u64, args.argv as u64, args.envp as u64);
            }
        }
    }

    /// The finalizer calls of every initialized object of `dylib`, marking them finalized:
    /// objects in reverse link order; each object's fini entries, then its `atexit` handlers
    /// and static destructors (`__cxa_finalize` with its `__dso_handle`).
    fn take_finalizers(&self, dylib: DylibId, with_handlers: bool) -> Vec<Call> {
        let mut st = self.state.lock();
        let mut records: Vec<&mut LinkedRecord> =
            st.by_key.values_mut().flatten().filter(|r| r.dylib == dylib && r.initialized).collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.order()));
        let mut finis: Vec<(u32, u64, usize, Call)> = Vec::new();
        let mut handlers = Vec::new();
        for record in records {
            record.initialized = false;
            let order = |e: &InitFiniEntry| record.order_of(e.member);
            finis.extend(record.finis.iter().enumerate().map(|(i, e)| (e.priority, order(e), i, Call::Fini(e.addr))));
            if with_handlers {
                handlers.extend(record.dso_handle.map(Call::Finalize));
            }
        }
        // Descending priority, then in reverse link order (of each entry's object).
        finis.sort_by_key(|&(priority, order, i, _)| (std::cmp::Reverse(priority), std::cmp::Reverse(order), i));
        finis.into_iter().map(|(_, _, _, c)| c).chain(handlers).collect()
    }

    /// Runs the finalizers of `dylib` (see [`take_finalizers`](Self::take_finalizers)).
    pub(crate) fn run_finalizers(&self, dylib: DylibId, gate: &EntryGate) {
        for call in self.take_finalizers(dylib, true) {
            call.run(gate);
        }
    }

    /// Runs only the `.fini_array`/`.dtors` entries of `dylib`: at process exit, libc runs the
    /// `atexit` handlers and static destructors itself.
    pub(crate) fn run_fini_arrays(&self, dylib: DylibId, gate: &EntryGate) {
        for call in self.take_finalizers(dylib, false) {
            call.run(gate);
        }
    }

    /// Releases everything recorded against `key`: finalizers of initialized objects run, then
    /// the memory is freed (deregistering its `.eh_frame` and TLS).
    pub(crate) fn release(&self, key: ResourceKey, gate: &EntryGate) -> Result<()> {
        let Some(mut records) = self.state.lock().by_key.remove(&key) else { return Ok(()) };
        records.sort_by_key(|r| std::cmp::Reverse(r.order()));
        for record in &mut records {
            if record.initialized {
                for e in &record.finis {
                    Call::Fini(e.addr).run(gate);
                }
                if let Some(dso) = record.dso_handle {
                    Call::Finalize(dso).run(gate);
                }
            }
            tracing::debug!(target: "orcjit", object = %record.object, "freeing linked object");
            drop(record.alloc.take());
        }
        Ok(())
    }

    pub(crate) fn transfer(&self, dst: ResourceKey, src: ResourceKey) {
        let mut st = self.state.lock();
        if let Some(moved) = st.by_key.remove(&src) {
            st.by_key.entry(dst).or_default().extend(moved);
        }
    }
}

enum Call {
    Fini(TargetAddr),
    Finalize(TargetAddr),
}

unsafe extern "C" {
    /// glibc: runs the `atexit`/`__cxa_atexit` handlers registered with `dso` (all, for NULL).
    fn __cxa_finalize(dso: *mut c_void);
}

impl Call {
    fn run(self, gate: &EntryGate) {
        match self {
            Call::Fini(addr) => {
                // SAFETY: a finalizer of a linked object whose memory is still mapped (it is
                // freed only after its finalizers ran); finalizers take no arguments.
                unsafe { gate.call(ExecutorAddr(addr.0), 0, 0, 0) };
            }
            Call::Finalize(dso) => {
                // Handlers JIT'd code registered through orcjit's `__cxa_atexit`, then any it
                // registered with libc directly.
                crate::at_exit::finalize(dso.0 as usize);
                // SAFETY: `dso` is the object's own `__dso_handle`; __cxa_finalize runs (once)
                // the handlers registered with it, whose code is still mapped.
                unsafe { __cxa_finalize(dso.0 as usize as *mut c_void) };
            }
        }
    }
}
