//! The continuation-passing linker: prune, allocate, report addresses, look up externals
//! asynchronously, fix up in the continuation, finalize, report.
//!
//! No step waits for another link: the only suspension point is the context's lookup, which
//! answers through a [`LookupContinuation`] whenever (and on whatever thread) it likes. So N
//! objects that reference each other link on one thread: each link stops at its lookup and
//! resumes when the context answers.

use std::collections::HashMap;
use std::sync::Arc;

use jit_mem::{
    ActionFn, FinalizeAction, FinalizedAlloc, InFlightAlloc, MemError, MemoryManager, PageAllocator, TargetAddr,
};
use parking_lot::Mutex;

use crate::far;
use crate::layout::{self, Plan, PlannedAlloc};
use crate::tls::TlsImage;
use crate::tls::runtime::TlsModule;
use crate::x86_64::{FixupEnv, GOT_SECTION, apply_fixups};
use crate::{
    BoxError, ExternalDefinition, InitFini, LinkError, LinkGraph, Linkage, PassConfig, Phase, SymbolId, SymbolName,
};

/// How a name is wanted by a lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LookupFlags {
    /// The link fails without it.
    Required,
    /// Absent is fine: the references resolve to zero.
    WeaklyReferenced,
}

/// The external symbols one graph needs.
#[derive(Clone, Debug)]
pub struct LookupRequest {
    /// The graph's name (for the context's errors).
    pub object: String,
    /// Each external name once, with how it is wanted.
    pub symbols: Vec<(SymbolName, LookupFlags)>,
}

/// The answer to a lookup: the addresses found (a required name missing from the map fails
/// the link with an error naming it and the object that needs it), or why the lookup failed.
pub type LookupResult = Result<HashMap<SymbolName, TargetAddr>, BoxError>;

/// What a successful link hands to [`LinkContext::notify_finalized`].
#[derive(Debug)]
pub struct LinkedObject {
    /// The graph's name.
    pub name: String,
    /// The finalized memory: dropping (or deallocating) it runs the deallocate actions
    /// (deregistering `.eh_frame`, unregistering the TLS module) and frees it.
    pub alloc: FinalizedAlloc,
    /// Initializers and finalizers to run, in order (the linker runs none itself).
    pub init_fini: InitFini,
    /// The graph's own `__dso_handle`, if it defined one: pass it to `__cxa_finalize` before
    /// freeing `alloc`.
    pub dso_handle: Option<TargetAddr>,
    /// The graph's TLS module id, if it has thread-local data.
    pub tls_module: Option<u64>,
}

/// The linker's view of its client: where memory comes from, how externals are found,
/// who hears the outcome. The object linking layer implements it over the session and a
/// materialization responsibility; tests implement it over `dlsym`.
///
/// Contract: for one link, the methods are called one at a time in this order:
/// [`memory_manager`](Self::memory_manager), [`should_add_default_passes`](Self::should_add_default_passes),
/// [`modify_pass_config`](Self::modify_pass_config), [`notify_resolved`](Self::notify_resolved),
/// [`lookup`](Self::lookup) (skipped when the graph has no externals),
/// [`describe_external`](Self::describe_external) (zero or more times, in the lookup's
/// continuation), then exactly one of
/// [`notify_finalized`](Self::notify_finalized) or [`notify_failed`](Self::notify_failed)
/// (which may come at any point before, once). They may be called on different threads
/// (whichever thread resumes the link), never concurrently for one link.
pub trait LinkContext: Send + Sync {
    /// The memory manager to allocate the graph's segments from.
    fn memory_manager(&self) -> Arc<dyn MemoryManager>;

    /// Whether to start from [`PassConfig::with_default_passes`] (otherwise from nothing).
    fn should_add_default_passes(&self, _graph: &LinkGraph) -> bool {
        true
    }

    /// Adds, removes or reorders passes (plugins hook in here).
    fn modify_pass_config(&self, _graph: &LinkGraph, _config: &mut PassConfig) -> Result<(), LinkError> {
        Ok(())
    }

    /// Every defined symbol has its final address (read them from `graph`); externals do not
    /// yet. An error fails the link.
    fn notify_resolved(&self, _graph: &LinkGraph) -> Result<(), LinkError> {
        Ok(())
    }

    /// Finds the addresses of `request`'s names and calls `continuation.resolve(...)`, now or
    /// later, on any thread. Must not block waiting for another link. Dropping the
    /// continuation without resolving it fails the link.
    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation);

    /// What the external `name`, found by [`lookup`](Self::lookup) at `addr`, is: asked (in
    /// the lookup's continuation, on its thread) only for an external that non-PIC code
    /// refers to directly (`R_X86_64_PC32`, `R_X86_64_32`, `R_X86_64_32S`) from out of the
    /// reference's reach, to choose a stand-in in reach (see [`ExternalDefinition`]). Must not
    /// block on another link. The default knows nothing, which makes such references errors;
    /// a context whose externals live in this process can answer with
    /// [`crate::process::describe_definition`].
    fn describe_external(&self, _name: &SymbolName, _addr: TargetAddr) -> ExternalDefinition {
        ExternalDefinition::Unknown
    }

    /// The link succeeded: the memory is finalized and runnable.
    fn notify_finalized(&self, linked: LinkedObject);

    /// The link failed; everything it allocated is released.
    fn notify_failed(&self, error: LinkError);
}

/// The rest of a link, waiting for its externals. Resolve it exactly once; dropping it
/// unresolved fails the link with [`LinkError::LookupAbandoned`].
pub struct LookupContinuation {
    linker: Option<Box<Linker>>,
}

impl std::fmt::Debug for LookupContinuation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.linker.as_ref().map(|l| l.graph.name().to_string());
        f.debug_struct("LookupContinuation").field("object", &name).finish()
    }
}

impl LookupContinuation {
    /// Resumes the link with the lookup's answer: fixups, finalize, report.
    pub fn resolve(mut self, result: LookupResult) {
        if let Some(linker) = self.linker.take() {
            linker.resume(result);
        }
    }
}

impl Drop for LookupContinuation {
    fn drop(&mut self) {
        if let Some(linker) = self.linker.take() {
            let object = linker.graph.name().to_string();
            linker.fail(LinkError::LookupAbandoned { object });
        }
    }
}

/// One link in progress.
struct Linker {
    graph: LinkGraph,
    ctx: Arc<dyn LinkContext>,
    passes: PassConfig,
    plan: Option<Plan>,
    alloc: Option<InFlightAlloc>,
    /// The manager `alloc` came from; far references' stand-ins come from it too.
    memory: Option<Arc<dyn MemoryManager>>,
    /// The allocation of stand-ins for far references, if the graph needs one.
    far: Option<PlannedAlloc>,
    /// The allocation of large data apart from the manager, if the graph has that much.
    apart: Option<PlannedAlloc>,
    externals: Vec<(SymbolId, SymbolName, Linkage)>,
    tls_module: Option<u64>,
}

/// Links `graph` into memory from `ctx`'s manager, reporting to `ctx` (see [`LinkContext`]
/// for the order of calls). Returns once the link is finished or suspended in a lookup.
pub fn link(graph: LinkGraph, ctx: Arc<dyn LinkContext>) {
    let linker = Box::new(Linker {
        graph,
        ctx,
        passes: PassConfig::empty(),
        plan: None,
        alloc: None,
        memory: None,
        far: None,
        apart: None,
        externals: Vec::new(),
        tls_module: None,
    });
    linker.start();
}

impl Linker {
    fn fail(self: Box<Self>, error: LinkError) {
        tracing::debug!(object = self.graph.name(), %error, "link failed");
        let Linker { graph, ctx, alloc, far, apart, .. } = *self;
        // Release memory and TLS reservations before the context hears, so a context that
        // counts live allocations sees none.
        drop(alloc);
        drop(far);
        drop(apart);
        drop(graph);
        ctx.notify_failed(error);
    }

    fn start(mut self: Box<Self>) {
        let _span = tracing::debug_span!("link", object = self.graph.name()).entered();
        match self.allocate_and_resolve() {
            Ok(request) => {
                if request.symbols.is_empty() {
                    self.resume(Ok(HashMap::new()));
                } else {
                    let ctx = self.ctx.clone();
                    ctx.lookup(request, LookupContinuation { linker: Some(self) });
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Everything up to the lookup.
    fn allocate_and_resolve(&mut self) -> Result<LookupRequest, LinkError> {
        let graph = &mut self.graph;
        let mut passes = if self.ctx.should_add_default_passes(graph) {
            PassConfig::with_default_passes()
        } else {
            PassConfig::empty()
        };
        self.ctx.modify_pass_config(graph, &mut passes)?;
        passes.run(Phase::PrePrune, graph)?;
        crate::prune::dead_strip(graph)?;
        passes.run(Phase::PostPrune, graph)?;

        let apart = layout::sections_apart(graph);
        let plan = layout::plan_sections(graph, |s| !apart.contains(&s))?;
        let mm = self.ctx.memory_manager();
        let alloc = mm
            .allocate(&plan.request)
            .map_err(|source| LinkError::Memory { object: graph.name().to_string(), source })?;
        layout::assign_addresses(graph, &plan, &alloc);
        if !apart.is_empty() {
            let plan = layout::plan_sections(graph, |s| apart.contains(&s))?;
            let alloc = PageAllocator::allocate_apart(&plan.request)
                .map_err(|source| LinkError::Memory { object: graph.name().to_string(), source })?;
            layout::assign_addresses(graph, &plan, &alloc);
            self.apart = Some(PlannedAlloc { plan, alloc });
        }
        if let Some((_, size, align)) = &plan.tls {
            let module = TlsModule::reserve();
            self.tls_module = Some(module.id());
            graph.tls = Some(TlsImage { module: Some(module), size: *size, align: *align });
        }
        self.alloc = Some(alloc);
        self.plan = Some(plan);
        self.memory = Some(mm);
        passes.run(Phase::PostAllocation, graph)?;
        self.ctx.notify_resolved(graph)?;

        let mut symbols = Vec::new();
        for (id, sym) in graph.symbols() {
            if !sym.is_external() {
                continue;
            }
            let Some(name) = sym.name() else { continue };
            let flags = match sym.linkage() {
                Linkage::Strong => LookupFlags::Required,
                Linkage::Weak => LookupFlags::WeaklyReferenced,
            };
            symbols.push((name.clone(), flags));
            self.externals.push((id, name.clone(), sym.linkage()));
        }
        self.passes = passes;
        Ok(LookupRequest { object: graph.name().to_string(), symbols })
    }

    fn resume(mut self: Box<Self>, result: LookupResult) {
        let _span = tracing::debug_span!("link_resume", object = self.graph.name()).entered();
        match self.fix_up(result) {
            Ok(()) => self.finalize(),
            Err(e) => self.fail(e),
        }
    }

    /// Applies the lookup's answer, runs the fixup phases and writes working memory.
    fn fix_up(&mut self, result: LookupResult) -> Result<(), LinkError> {
        let object = self.graph.name().to_string();
        let found = result.map_err(|source| LinkError::Lookup { object: object.clone(), source })?;
        for (id, name, linkage) in std::mem::take(&mut self.externals) {
            match (found.get(&name), linkage) {
                (Some(&addr), _) => self.graph.set_external_addr(id, addr),
                (None, Linkage::Weak) => self.graph.set_external_addr(id, TargetAddr(0)),
                (None, Linkage::Strong) => {
                    return Err(LinkError::UndefinedSymbol {
                        object,
                        symbol: name,
                        location: first_reference(&self.graph, id, 0),
                    });
                }
            }
        }
        if let Some(mm) = &self.memory {
            self.far = far::resolve_far_references(&mut self.graph, &*self.ctx, &**mm)?;
        }
        let graph = &mut self.graph;
        self.passes.run(Phase::PreFixup, graph)?;
        let got_base = graph
            .section_by_name(GOT_SECTION)
            .and_then(|s| graph.blocks_in_section(s).first().copied())
            .and_then(|b| graph.block(b))
            .map(|b| b.addr());
        let env = FixupEnv { got_base, tls_module: self.tls_module.unwrap_or(0) };
        apply_fixups(graph, env)?;
        self.passes.run(Phase::PostFixup, graph)?;
        let (Some(plan), Some(alloc)) = (self.plan.as_ref(), self.alloc.as_mut()) else {
            return Err(graph.invalid("link resumed without an allocation"));
        };
        layout::copy_to_working(graph, plan, alloc)?;
        for other in [self.far.as_mut(), self.apart.as_mut()].into_iter().flatten() {
            layout::copy_to_working(graph, &other.plan, &mut other.alloc)?;
        }
        Ok(())
    }

    fn finalize(mut self: Box<Self>) {
        let Some(alloc) = self.alloc.take() else {
            let e = self.graph.invalid("link finalized without an allocation");
            return self.fail(e);
        };
        let mut actions = std::mem::take(&mut self.graph.finalize_actions);
        // The graph's other allocations: far references' stand-ins and large data apart.
        let others: Vec<InFlightAlloc> =
            [self.far.take(), self.apart.take()].into_iter().flatten().map(|o| o.alloc).collect();
        let report = Report {
            ctx: self.ctx.clone(),
            name: self.graph.name().to_string(),
            init_fini: std::mem::take(&mut self.graph.init_fini),
            dso_handle: self.graph.dso_handle.and_then(|s| self.graph.symbol_addr(s)),
            tls_module: self.tls_module,
        };
        // The graph is done with; free it before the (possibly deferred) finalize completes.
        drop(self);
        if others.is_empty() {
            alloc.finalize(actions, Box::new(move |result| report.finish(result)));
            return;
        }
        // Several allocations, finalized side by side: the mprotect manager may complete one
        // only once another is finalized (they can share a page), so none waits for another;
        // whichever completes last reports. The others are then freed with the graph's, by its
        // first action (deallocate actions run in reverse: it goes last).
        let releases: Arc<Mutex<Vec<ActionFn>>> = Arc::default();
        let slot = releases.clone();
        actions.insert(
            0,
            FinalizeAction::new(
                || Ok(()),
                move || {
                    let releases = std::mem::take(&mut *slot.lock());
                    releases.into_iter().map(|release| release()).fold(Ok(()), Result::and)
                },
            ),
        );
        let join = Arc::new(Mutex::new(Join {
            report: Some(report),
            graph: None,
            others: others.iter().map(|_| None).collect(),
            releases,
        }));
        for (index, other) in others.into_iter().enumerate() {
            let join = join.clone();
            other.finalize(Vec::new(), Box::new(move |result| Join::arrive(&join, Arrival::Other(index, result))));
        }
        alloc.finalize(actions, Box::new(move |result| Join::arrive(&join, Arrival::Graph(result))));
    }
}

/// What the context hears once the memory is final.
struct Report {
    ctx: Arc<dyn LinkContext>,
    name: String,
    init_fini: InitFini,
    dso_handle: Option<TargetAddr>,
    tls_module: Option<u64>,
}

impl Report {
    fn finish(self, result: Result<FinalizedAlloc, MemError>) {
        let Report { ctx, name, init_fini, dso_handle, tls_module } = self;
        match result {
            Ok(alloc) => ctx.notify_finalized(LinkedObject { name, alloc, init_fini, dso_handle, tls_module }),
            Err(source) => ctx.notify_failed(LinkError::Memory { object: name, source }),
        }
    }
}

/// One finalize's outcome.
enum Arrival {
    Graph(Result<FinalizedAlloc, MemError>),
    Other(usize, Result<FinalizedAlloc, MemError>),
}

/// The finalizes of a graph's allocations, meeting.
struct Join {
    report: Option<Report>,
    graph: Option<Result<FinalizedAlloc, MemError>>,
    others: Vec<Option<Result<FinalizedAlloc, MemError>>>,
    /// Where the other allocations' releases go, for the graph allocation's deallocate action.
    releases: Arc<Mutex<Vec<ActionFn>>>,
}

impl Join {
    /// Records one finalize's outcome; the last to arrive reports (outside the lock). On a
    /// failure the allocations that did finalize are dropped, which frees them.
    fn arrive(join: &Mutex<Join>, arrival: Arrival) {
        let (report, graph, others, releases) = {
            let mut j = join.lock();
            match arrival {
                Arrival::Graph(result) => j.graph = Some(result),
                Arrival::Other(index, result) => j.others[index] = Some(result),
            }
            if j.graph.is_none() || j.others.iter().any(Option::is_none) {
                return;
            }
            (j.report.take(), j.graph.take(), std::mem::take(&mut j.others), j.releases.clone())
        };
        let (Some(report), Some(graph)) = (report, graph) else { return };
        let mut error = None;
        let mut finalized = Vec::with_capacity(others.len());
        for result in others.into_iter().flatten() {
            match result {
                Ok(alloc) => finalized.push(alloc),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let error = match (graph, error) {
            (Ok(graph), None) => {
                *releases.lock() = finalized.into_iter().map(FinalizedAlloc::into_deallocate_action).collect();
                return report.finish(Ok(graph));
            }
            (Ok(graph), Some(e)) => {
                drop(graph);
                e
            }
            (Err(e), _) => e,
        };
        // Freed before the context hears, as on every failure.
        drop(finalized);
        report.finish(Err(error));
    }
}

/// Where a symbol is first referenced, for an undefined-symbol error.
fn first_reference(graph: &LinkGraph, sym: SymbolId, depth: u32) -> String {
    let mut best: Option<(u64, crate::BlockId, u64)> = None;
    for (id, b) in graph.blocks() {
        for e in b.edges() {
            if e.target == sym && best.is_none_or(|(o, _, _)| b.ordinal < o) {
                best = Some((b.ordinal, id, e.offset));
            }
        }
    }
    // GOT entries and stubs are the linker's own: name what uses them instead.
    match best {
        Some((_, block, offset)) => {
            let here = graph.describe_location(block, offset);
            let via_table = graph
                .block(block)
                .and_then(|b| graph.section(b.section()))
                .is_some_and(|s| s.name().starts_with("$__"));
            if via_table {
                let entry = graph.symbols().find(|(_, s)| s.block() == Some(block)).map(|(id, _)| id);
                match entry {
                    Some(entry) if entry != sym && depth < 4 => first_reference(graph, entry, depth + 1),
                    _ => here,
                }
            } else {
                here
            }
        }
        None => "no remaining reference".to_string(),
    }
}
