//! The dependency graph: which emitted symbols are Ready, and who fails when a symbol fails.
//!
//! A symbol is *Ready* when it and every symbol it can reach through dependencies are emitted.
//! Symbols are emitted in *groups* that share one dependency list; each group is a node here.
//! Lives under the session lock; touches only its own nodes and the [`SymbolNode`] part of each
//! symbol (through [`NodeStore`]).
//!
//! ## Why this is linear
//!
//! LLVM's ORC tracks, for each emitted node, the set of not-yet-emitted symbols it waits on and
//! copies those sets along edges, which goes quadratic on long chains and cycles. Here each
//! group keeps two counters: `pending` (dependencies not yet emitted) and `unready`
//! (dependencies not yet Ready). Plain counting settles every acyclic case: a group is Ready when
//! `unready` reaches zero. A group with `pending == 0` but `unready > 0` is *locally complete*
//! and is Ready exactly when it reaches no group with `pending > 0` and no pending symbol. To
//! avoid re-searching, every locally complete group keeps a *witness*: a pointer to a node it
//! can reach that is still pending (a *root*). Witnesses form a forest and are followed with
//! path compression, so "am I still blocked?" costs near O(1). Only when a root becomes locally
//! complete do we search, with Tarjan's SCC algorithm, from that root: either it finds a new
//! root (and the whole tree under the old root is re-attached by one pointer write), or the
//! region it explored is closed, entirely emitted, and every SCC in it becomes Ready at once.
//! Every symbol becomes locally complete once, and a search that re-attaches stops at the first
//! blocked neighbour it sees, so chains, wide DAGs and large cycles all cost O(symbols + edges).

use std::sync::Arc;

use slotmap::new_key_type;
use smallvec::SmallVec;

use crate::arena::Arena;
use crate::error::RootCause;

new_key_type! {
    /// A symbol's entry in the session's symbol arena.
    pub(crate) struct SymId;
    /// An emitted, not yet Ready group of symbols.
    pub(crate) struct GroupId;
}

/// Where a symbol stands in the dependency graph.
#[derive(Clone, Debug)]
pub(crate) enum NodeStatus {
    /// Not emitted yet (never searched, materializing or resolved).
    Pending,
    /// Emitted as part of this group, which still waits on something.
    Emitted(GroupId),
    Ready,
    Failed(Arc<RootCause>),
}

/// The graph's part of a symbol.
#[derive(Debug)]
pub(crate) struct SymbolNode {
    pub status: NodeStatus,
    /// Groups that depend on this symbol and were not Ready when they said so. Most symbols
    /// have at most one, kept inline: no allocation per symbol.
    pub dependants: SmallVec<[GroupId; 1]>,
}

impl SymbolNode {
    pub fn new() -> Self {
        SymbolNode { status: NodeStatus::Pending, dependants: SmallVec::new() }
    }
}

/// Access to the symbols' graph nodes; `None` for a symbol that no longer exists.
pub(crate) trait NodeStore {
    fn node(&mut self, s: SymId) -> Option<&mut SymbolNode>;
}

/// A group to emit: these symbols, which depend on those.
pub(crate) struct EmitGroup {
    pub symbols: SmallVec<[SymId; 1]>,
    pub deps: Deps,
}

/// A group's dependencies: usually few, so kept inline.
pub(crate) type Deps = SmallVec<[SymId; 4]>;

/// What an operation changed: symbols that became Ready, and symbols that failed (each with
/// its cause), in no particular order.
#[derive(Default)]
pub(crate) struct Outcome {
    pub ready: Vec<SymId>,
    pub failed: Vec<SymId>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Witness {
    None,
    Group(GroupId),
    Symbol(SymId),
}

#[derive(Default, Clone, Copy)]
struct DfsMark {
    epoch: u32,
    index: u32,
    low: u32,
    on_stack: bool,
}

struct GroupNode {
    symbols: SmallVec<[SymId; 1]>,
    /// Dependencies not known to be Ready (pruned lazily as they become Ready).
    deps: Deps,
    pending: u32,
    unready: u32,
    witness: Witness,
    dfs: DfsMark,
}

#[derive(Default)]
pub(crate) struct DepGraph {
    groups: Arena<GroupId, GroupNode>,
    epoch: u32,
    // Scratch space reused across operations.
    to_check: Vec<GroupId>,
    to_ready: Vec<GroupId>,
    call_stack: Vec<(GroupId, usize)>,
    scc_stack: Vec<GroupId>,
}

/// The result of following witnesses: a live root, or nothing (the node must be searched).
enum Blocker {
    Root(Witness),
    Unblocked,
}

impl DepGraph {
    /// Number of emitted groups still waiting (not Ready): the graph's live size.
    pub fn waiting_groups(&self) -> usize {
        self.groups.len()
    }

    /// Emits `groups`. Every symbol in them must be `Pending`; afterwards each is `Emitted`,
    /// `Ready` (listed in `out.ready`) or `Failed` (listed in `out.failed`, because a
    /// dependency had failed). Symbols of other groups may become Ready as a consequence.
    /// `missing` is the cause recorded when a dependency no longer exists.
    pub fn emit(
        &mut self,
        store: &mut impl NodeStore,
        groups: &mut SmallVec<[EmitGroup; 2]>,
        missing: &dyn Fn(SymId) -> Arc<RootCause>,
        out: &mut Outcome,
    ) {
        if let [group] = &groups[..] {
            if self.emit_ready_at_once(store, group, out) {
                return;
            }
        }
        // 1. Mark every symbol emitted. Groups that waited on these symbols counted them as
        //    pending when they registered: they all count one less now.
        let mut new_ids: SmallVec<[GroupId; 4]> = SmallVec::with_capacity(groups.len());
        for EmitGroup { symbols, deps } in groups.drain(..) {
            let count = symbols.len();
            let gid = self.groups.insert(GroupNode {
                symbols,
                deps,
                pending: 0,
                unready: 0,
                witness: Witness::None,
                dfs: DfsMark::default(),
            });
            for k in 0..count {
                let s = self.groups[gid].symbols[k];
                let Some(node) = store.node(s) else { continue };
                debug_assert!(matches!(node.status, NodeStatus::Pending), "emitting a non-pending symbol");
                node.status = NodeStatus::Emitted(gid);
                for &w in &node.dependants {
                    if let Some(wn) = self.groups.get_mut(w) {
                        wn.pending -= 1;
                        if wn.pending == 0 {
                            self.to_check.push(w);
                        }
                    }
                }
            }
            new_ids.push(gid);
        }

        // 2. Record the new groups' edges.
        let mut failures: SmallVec<[(GroupId, Arc<RootCause>); 1]> = SmallVec::new();
        for &gid in &new_ids {
            let mut deps = std::mem::take(&mut self.groups[gid].deps);
            deps.sort_unstable();
            deps.dedup();
            let (mut pending, mut unready) = (0u32, 0u32);
            let mut failed = None;
            deps.retain(|d| {
                let d = *d;
                let Some(node) = store.node(d) else {
                    failed.get_or_insert_with(|| missing(d));
                    return false;
                };
                match &node.status {
                    NodeStatus::Pending => {
                        pending += 1;
                        unready += 1;
                        node.dependants.push(gid);
                        true
                    }
                    NodeStatus::Emitted(h) if *h == gid => false,
                    NodeStatus::Emitted(_) => {
                        unready += 1;
                        node.dependants.push(gid);
                        true
                    }
                    NodeStatus::Ready => false,
                    NodeStatus::Failed(cause) => {
                        failed.get_or_insert_with(|| cause.clone());
                        false
                    }
                }
            });
            let g = &mut self.groups[gid];
            g.deps = deps;
            g.pending = pending;
            g.unready = unready;
            if let Some(cause) = failed {
                failures.push((gid, cause));
            }
        }
        for (gid, cause) in failures {
            self.fail_groups(store, vec![gid], &cause, out);
        }

        // 3. Settle the new groups, then the groups that became locally complete.
        for &gid in &new_ids {
            if let Some(g) = self.groups.get(gid) {
                if g.unready == 0 {
                    self.to_ready.push(gid);
                } else if g.pending == 0 {
                    self.to_check.push(gid);
                }
            }
        }
        self.settle(store, out);
    }

    /// The common case: one group whose dependencies are all Ready already (or its own
    /// symbols). Its symbols go straight to Ready without a node. Returns false, changing
    /// nothing, when the group must take the general path.
    fn emit_ready_at_once(&mut self, store: &mut impl NodeStore, group: &EmitGroup, out: &mut Outcome) -> bool {
        let ready_or_own = |store: &mut _, d: SymId| {
            group.symbols.contains(&d)
                || matches!(NodeStore::node(store, d).map(|n| &n.status), Some(NodeStatus::Ready))
        };
        if !group.deps.iter().all(|&d| ready_or_own(store, d)) {
            return false;
        }
        for &s in &group.symbols {
            let Some(node) = store.node(s) else { continue };
            debug_assert!(matches!(node.status, NodeStatus::Pending), "emitting a non-pending symbol");
            node.status = NodeStatus::Ready;
            out.ready.push(s);
            // Every dependant registered while this symbol was pending counted it both as not
            // emitted and as not Ready.
            for w in std::mem::take(&mut node.dependants) {
                if let Some(wn) = self.groups.get_mut(w) {
                    wn.pending -= 1;
                    wn.unready -= 1;
                    if wn.unready == 0 {
                        self.to_ready.push(w);
                    } else if wn.pending == 0 {
                        self.to_check.push(w);
                    }
                }
            }
        }
        self.settle(store, out);
        true
    }

    /// Fails `symbols` (Pending or Emitted) and, transitively, everything that depends on them.
    /// Already Ready or Failed symbols are left alone.
    pub fn fail(&mut self, store: &mut impl NodeStore, symbols: &[SymId], cause: &Arc<RootCause>, out: &mut Outcome) {
        let mut groups = Vec::new();
        for &s in symbols {
            let Some(node) = store.node(s) else { continue };
            match node.status {
                NodeStatus::Pending => {
                    node.status = NodeStatus::Failed(cause.clone());
                    out.failed.push(s);
                    groups.extend(node.dependants.drain(..));
                }
                NodeStatus::Emitted(g) => groups.push(g),
                NodeStatus::Ready | NodeStatus::Failed(_) => {}
            }
        }
        self.fail_groups(store, groups, cause, out);
        // Failing removes groups that others may have used as witnesses; those are detected as
        // stale when followed. Nothing becomes Ready by a failure.
    }

    fn fail_groups(
        &mut self,
        store: &mut impl NodeStore,
        mut work: Vec<GroupId>,
        cause: &Arc<RootCause>,
        out: &mut Outcome,
    ) {
        while let Some(g) = work.pop() {
            let Some(node) = self.groups.remove(g) else { continue };
            for &s in &node.symbols {
                let Some(sn) = store.node(s) else { continue };
                sn.status = NodeStatus::Failed(cause.clone());
                out.failed.push(s);
                work.extend(sn.dependants.drain(..));
            }
        }
    }

    /// Drains `to_ready` and `to_check` until nothing changes.
    fn settle(&mut self, store: &mut impl NodeStore, out: &mut Outcome) {
        loop {
            if let Some(g) = self.to_ready.pop() {
                self.make_ready(store, g, out);
            } else if let Some(g) = self.to_check.pop() {
                self.check(store, g);
            } else {
                break;
            }
        }
    }

    fn make_ready(&mut self, store: &mut impl NodeStore, g: GroupId, out: &mut Outcome) {
        let Some(node) = self.groups.remove(g) else { return };
        for &s in &node.symbols {
            let Some(sn) = store.node(s) else { continue };
            sn.status = NodeStatus::Ready;
            out.ready.push(s);
            for w in std::mem::take(&mut sn.dependants) {
                if let Some(wn) = self.groups.get_mut(w) {
                    wn.unready -= 1;
                    if wn.unready == 0 {
                        self.to_ready.push(w);
                    } else if wn.pending == 0 {
                        self.to_check.push(w);
                    }
                }
            }
        }
    }

    /// A locally complete group may have lost its witness: find a new one, or find that it
    /// (and what it reaches) is Ready.
    fn check(&mut self, store: &mut impl NodeStore, g: GroupId) {
        let Some(node) = self.groups.get(g) else { return };
        if node.unready == 0 {
            self.to_ready.push(g);
            return;
        }
        if node.pending > 0 {
            return;
        }
        // A group without a witness (the usual case: it waited on a pending symbol until now)
        // has nothing to follow.
        if node.witness != Witness::None {
            if let Blocker::Root(_) = self.find(store, g) {
                return;
            }
        }
        // A dependency that is a root itself is a witness without a search (the usual case:
        // what this group waits on was emitted just now and waits on something pending).
        let quick = self.groups[g].deps.iter().find_map(|&d| match store.node(d).map(|n| &n.status) {
            Some(NodeStatus::Pending) => Some(Witness::Symbol(d)),
            Some(&NodeStatus::Emitted(h)) if h != g && self.groups.get(h).is_some_and(|hn| hn.pending > 0) => {
                Some(Witness::Group(h))
            }
            _ => None,
        });
        if let Some(root) = quick {
            self.groups[g].witness = root;
            return;
        }
        self.search(store, g);
    }

    /// Follows witnesses from `g` (compressing the path) to a live root, if there is one.
    fn find(&mut self, store: &mut impl NodeStore, g: GroupId) -> Blocker {
        // First to the end, then along the same witnesses again pointing each at what was
        // found: no list of the path, which can be as long as a cycle of a million groups.
        let mut passed = false;
        let mut cur = Witness::Group(g);
        let result = loop {
            match cur {
                Witness::None => break Blocker::Unblocked,
                Witness::Group(h) => {
                    let Some(hn) = self.groups.get(h) else {
                        break Blocker::Unblocked;
                    };
                    if hn.pending > 0 {
                        break Blocker::Root(Witness::Group(h));
                    }
                    passed = true;
                    cur = hn.witness;
                }
                Witness::Symbol(s) => match store.node(s).map(|n| &n.status) {
                    Some(NodeStatus::Pending) => break Blocker::Root(Witness::Symbol(s)),
                    Some(NodeStatus::Emitted(h)) => cur = Witness::Group(*h),
                    _ => break Blocker::Unblocked,
                },
            }
        };
        if passed {
            let compressed = match result {
                Blocker::Root(root) => root,
                Blocker::Unblocked => Witness::None,
            };
            let mut cur = Witness::Group(g);
            loop {
                match cur {
                    Witness::Group(h) => match self.groups.get_mut(h) {
                        Some(hn) if hn.pending == 0 => cur = std::mem::replace(&mut hn.witness, compressed),
                        _ => break,
                    },
                    Witness::Symbol(s) => match store.node(s).map(|n| &n.status) {
                        Some(&NodeStatus::Emitted(h)) => cur = Witness::Group(h),
                        _ => break,
                    },
                    Witness::None => break,
                }
            }
        }
        result
    }

    /// Tarjan's SCC search from `start` over locally complete, unwitnessed groups. Stops at the
    /// first blocker (every group visited so far is blocked by it); otherwise every SCC it
    /// completes is closed and entirely emitted, hence Ready.
    fn search(&mut self, store: &mut impl NodeStore, start: GroupId) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Marks from 2^32 searches ago could alias: clear them once per wrap.
            for (_, n) in self.groups.iter_mut() {
                n.dfs = DfsMark::default();
            }
            self.epoch = 1;
        }
        let epoch = self.epoch;
        let mut next_index = 0u32;
        self.call_stack.clear();
        self.scc_stack.clear();
        // `settle` searches only with nothing left to make Ready: what is pushed there now is
        // this search's.
        debug_assert!(self.to_ready.is_empty());

        let mut blocker = self.visit(store, start, epoch, &mut next_index);
        while blocker.is_none() {
            let Some(&(g, i)) = self.call_stack.last() else { break };
            let next = self.groups[g].deps.get(i).copied();
            if let Some(d) = next {
                self.call_stack.last_mut().expect("non-empty").1 += 1;
                let Some(&NodeStatus::Emitted(h)) = store.node(d).map(|n| &n.status) else {
                    continue; // Ready (pruned in the look-ahead) or unchanged: nothing to explore.
                };
                if h == g {
                    continue;
                }
                let hm = self.groups[h].dfs;
                if hm.epoch != epoch {
                    blocker = self.visit(store, h, epoch, &mut next_index);
                } else if hm.on_stack {
                    let gm = &mut self.groups[g].dfs;
                    gm.low = gm.low.min(hm.index);
                }
            } else {
                self.call_stack.pop();
                let gm = self.groups[g].dfs;
                if gm.low == gm.index {
                    loop {
                        let m = self.scc_stack.pop().expect("g is on the SCC stack");
                        self.groups[m].dfs.on_stack = false;
                        // A completed SCC is closed and entirely emitted: Ready, whether or not
                        // the search stops early.
                        self.to_ready.push(m);
                        if m == g {
                            break;
                        }
                    }
                }
                if let Some(&(parent, _)) = self.call_stack.last() {
                    let pm = &mut self.groups[parent].dfs;
                    pm.low = pm.low.min(gm.low);
                }
            }
        }

        if let Some(root) = blocker {
            // The groups still on the SCC stack are the ones the blocker keeps from Ready.
            for v in self.scc_stack.drain(..) {
                let vn = &mut self.groups[v];
                vn.dfs.on_stack = false;
                vn.witness = root;
            }
        }
    }

    /// Enters `g` into the search and looks ahead over its dependencies: prunes Ready ones and
    /// returns a root if any dependency is (or reaches) one.
    fn visit(&mut self, store: &mut impl NodeStore, g: GroupId, epoch: u32, next_index: &mut u32) -> Option<Witness> {
        let index = *next_index;
        *next_index += 1;
        self.groups[g].dfs = DfsMark { epoch, index, low: index, on_stack: true };
        self.scc_stack.push(g);
        self.call_stack.push((g, 0));

        let mut deps = std::mem::take(&mut self.groups[g].deps);
        let mut found = None;
        let mut i = 0;
        while i < deps.len() {
            let d = deps[i];
            let h = match store.node(d).map(|n| &n.status) {
                None | Some(NodeStatus::Ready) | Some(NodeStatus::Failed(_)) => {
                    deps.swap_remove(i);
                    continue;
                }
                Some(NodeStatus::Pending) => {
                    found = Some(Witness::Symbol(d));
                    break;
                }
                Some(&NodeStatus::Emitted(h)) => h,
            };
            let hn = &self.groups[h];
            if h != g && hn.dfs.epoch != epoch {
                // As `find`, without following a witness that is not there.
                let blocker = if hn.pending > 0 {
                    Blocker::Root(Witness::Group(h))
                } else if hn.witness == Witness::None {
                    Blocker::Unblocked
                } else {
                    self.find(store, h)
                };
                if let Blocker::Root(root) = blocker {
                    found = Some(root);
                    break;
                }
            }
            i += 1;
        }
        self.groups[g].deps = deps;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, QualifiedSymbol};
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use slotmap::SlotMap;

    struct Store(SlotMap<SymId, SymbolNode>);
    impl NodeStore for Store {
        fn node(&mut self, s: SymId) -> Option<&mut SymbolNode> {
            self.0.get_mut(s)
        }
    }

    fn cause() -> Arc<RootCause> {
        Arc::new(RootCause { origin: Vec::<QualifiedSymbol>::new(), error: Error::msg("boom") })
    }

    /// Emits one single-symbol group per symbol, in `order`, where symbol i depends on
    /// `deps[i]`; after each emission compares the Ready set with the definition.
    fn run(deps: &[Vec<usize>], order: &[usize]) -> usize {
        let n = deps.len();
        let mut store = Store(SlotMap::with_key());
        let ids: Vec<SymId> = (0..n).map(|_| store.0.insert(SymbolNode::new())).collect();
        let mut graph = DepGraph::default();
        let mut emitted = vec![false; n];
        let mut ready = vec![false; n];
        for &i in order {
            let mut out = Outcome::default();
            let group =
                EmitGroup { symbols: SmallVec::from_elem(ids[i], 1), deps: deps[i].iter().map(|&d| ids[d]).collect() };
            graph.emit(&mut store, &mut smallvec::smallvec![group], &|_| cause(), &mut out);
            emitted[i] = true;
            for s in out.ready {
                let k = ids.iter().position(|&x| x == s).unwrap();
                assert!(!ready[k], "symbol {k} reported Ready twice");
                ready[k] = true;
            }
            // Oracle: Ready iff every symbol reachable from it is emitted.
            for (k, &is_ready) in ready.iter().enumerate() {
                let mut seen = vec![false; n];
                let mut stack = vec![k];
                let mut all = true;
                while let Some(x) = stack.pop() {
                    if seen[x] {
                        continue;
                    }
                    seen[x] = true;
                    all &= emitted[x];
                    stack.extend(deps[x].iter().copied());
                }
                assert_eq!(is_ready, all, "symbol {k} after emitting {i} (order {order:?}, deps {deps:?})");
            }
        }
        graph.waiting_groups()
    }

    #[test]
    fn chain_in_both_orders() {
        let deps: Vec<Vec<usize>> = (0..50).map(|i| if i > 0 { vec![i - 1] } else { vec![] }).collect();
        let fwd: Vec<usize> = (0..50).collect();
        let rev: Vec<usize> = (0..50).rev().collect();
        assert_eq!(run(&deps, &fwd), 0);
        assert_eq!(run(&deps, &rev), 0);
    }

    #[test]
    fn one_big_cycle_in_both_orders() {
        let deps: Vec<Vec<usize>> = (0..40).map(|i| vec![(i + 1) % 40]).collect();
        assert_eq!(run(&deps, &(0..40).collect::<Vec<_>>()), 0);
        assert_eq!(run(&deps, &(0..40).rev().collect::<Vec<_>>()), 0);
    }

    #[test]
    fn cycles_hanging_off_a_pending_chain() {
        // 0 <-> 1 <-> 2 form a cycle that also depends on 3, which depends on 4.
        let deps = vec![vec![1], vec![2], vec![0, 3], vec![4], vec![]];
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 3, 1, 4], [0, 4, 1, 3, 2]] {
            assert_eq!(run(&deps, &order), 0);
        }
    }

    #[test]
    fn random_graphs_match_the_reachability_oracle() {
        for seed in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.random_range(1..24);
            let deps: Vec<Vec<usize>> = (0..n)
                .map(|_| {
                    let k = rng.random_range(0..4);
                    (0..k).map(|_| rng.random_range(0..n)).collect()
                })
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            assert_eq!(run(&deps, &order), 0, "seed {seed}");
        }
    }

    #[test]
    fn failure_reaches_every_transitive_dependant_and_nothing_else() {
        // 0 -> 1 -> 2 (pending, will fail); 3 -> 0; 4 independent; 5 -> 4.
        let mut store = Store(SlotMap::with_key());
        let ids: Vec<SymId> = (0..6).map(|_| store.0.insert(SymbolNode::new())).collect();
        let mut graph = DepGraph::default();
        let mut out = Outcome::default();
        let g = |s: usize, d: &[usize]| EmitGroup {
            symbols: SmallVec::from_elem(ids[s], 1),
            deps: d.iter().map(|&x| ids[x]).collect(),
        };
        graph.emit(&mut store, &mut smallvec::smallvec![g(0, &[1]), g(3, &[0]), g(5, &[4])], &|_| cause(), &mut out);
        graph.emit(&mut store, &mut smallvec::smallvec![g(1, &[2])], &|_| cause(), &mut out);
        assert!(out.ready.is_empty());
        graph.fail(&mut store, &[ids[2]], &cause(), &mut out);
        let mut failed: Vec<usize> = out.failed.iter().map(|s| ids.iter().position(|x| x == s).unwrap()).collect();
        failed.sort();
        assert_eq!(failed, vec![0, 1, 2, 3]);
        graph.emit(&mut store, &mut smallvec::smallvec![g(4, &[])], &|_| cause(), &mut out);
        let mut ready: Vec<usize> = out.ready.iter().map(|s| ids.iter().position(|x| x == s).unwrap()).collect();
        ready.sort();
        assert_eq!(ready, vec![4, 5]);
        assert_eq!(graph.waiting_groups(), 0);
        // Emitting with a dependency on a failed symbol fails the new group at once.
        let late = store.0.insert(SymbolNode::new());
        let mut out = Outcome::default();
        graph.emit(
            &mut store,
            &mut smallvec::smallvec![EmitGroup { symbols: SmallVec::from_elem(late, 1), deps: vec![ids[3]].into() }],
            &|_| cause(),
            &mut out,
        );
        assert_eq!(out.failed, vec![late]);
    }

    #[test]
    fn groups_with_several_symbols_and_internal_edges() {
        let mut store = Store(SlotMap::with_key());
        let ids: Vec<SymId> = (0..4).map(|_| store.0.insert(SymbolNode::new())).collect();
        let mut graph = DepGraph::default();
        let mut out = Outcome::default();
        // {0,1} depends on 2 and on itself; {2,3} depends on 0: a cycle across two groups
        // emitted in one call.
        graph.emit(
            &mut store,
            &mut smallvec::smallvec![
                EmitGroup { symbols: SmallVec::from_slice(&[ids[0], ids[1]]), deps: vec![ids[2], ids[1]].into() },
                EmitGroup { symbols: SmallVec::from_slice(&[ids[2], ids[3]]), deps: vec![ids[0]].into() },
            ],
            &|_| cause(),
            &mut out,
        );
        assert_eq!(out.ready.len(), 4);
        assert_eq!(graph.waiting_groups(), 0);
    }
}
