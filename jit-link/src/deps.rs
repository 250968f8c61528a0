//! Which external symbols each defined symbol needs: the edges' transitive closure, for
//! precise emission-group dependencies.
//!
//! Strongly connected components of the block graph (iterative Tarjan, so deep graphs do
//! not overflow the stack) are visited successors-first; each component's set is the union
//! of its members' direct externals and its successors' sets, shared (not copied) when it
//! equals one of them. Externals are numbered in name order, so a set is a sorted list of
//! small integers until it is handed out as names. Time is linear in blocks + edges (each
//! block's targets sorted, to drop repeats) plus the size of the distinct sets built.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use slotmap::SecondaryMap;

use crate::{BlockId, LinkGraph, Scope, SymbolDef, SymbolId, SymbolName};

/// One defined symbol and the external names its block reaches.
#[derive(Clone, Debug)]
pub struct SymbolDependencies {
    /// The defined symbol.
    pub symbol: SymbolId,
    /// Its name.
    pub name: SymbolName,
    /// The external symbols reachable from its block through edges (through any block of
    /// the graph: anonymous data, GOT entries, stubs, other definitions), sorted.
    pub depends_on: Arc<[SymbolName]>,
}

/// For every defined, named, non-local symbol of `graph`, the external names it depends on.
/// Call it once the graph has its final edges (in `notify_resolved` or later: GOT entries
/// and stubs are then in place, and reaching through them is reaching their targets).
pub fn external_dependencies(graph: &LinkGraph) -> Vec<SymbolDependencies> {
    // Externals numbered in name order (one number per distinct name).
    let mut externals: Vec<(SymbolId, &SymbolName)> = graph
        .symbols()
        .filter_map(|(id, s)| match (s.def(), s.name()) {
            (SymbolDef::External { .. }, Some(name)) => Some((id, name)),
            _ => None,
        })
        .collect();
    externals.sort_unstable_by(|a, b| a.1.cmp(b.1));
    let mut number_of: SecondaryMap<SymbolId, u32> = SecondaryMap::new();
    let mut names: Vec<SymbolName> = Vec::new();
    for &(id, name) in &externals {
        if names.last() != Some(name) {
            names.push(name.clone());
        }
        number_of.insert(id, names.len() as u32 - 1);
    }

    let ids: Vec<BlockId> = graph.block_ids();
    let mut index_of: SecondaryMap<BlockId, usize> = SecondaryMap::new();
    for (i, &b) in ids.iter().enumerate() {
        index_of.insert(b, i);
    }
    let n = ids.len();
    // Successors and direct externals per block, block i's in `[start[i], start[i + 1])`.
    let (mut succ, mut succ_start) = (Vec::new(), Vec::with_capacity(n + 1));
    let (mut direct, mut direct_start) = (Vec::new(), Vec::with_capacity(n + 1));
    for &b in &ids {
        succ_start.push(succ.len());
        direct_start.push(direct.len());
        let Some(block) = graph.block(b) else { continue };
        for e in block.edges() {
            let Some(t) = graph.symbol(e.target) else { continue };
            match t.def() {
                SymbolDef::Defined { block: tb, .. } => succ.extend(index_of.get(tb).copied()),
                SymbolDef::External { .. } => direct.extend(number_of.get(e.target).copied()),
                SymbolDef::Absolute(_) => {}
            }
        }
        // A block refers to the same targets many times over (calls, GOT loads): once is enough.
        sort_dedup_tail(&mut succ, succ_start[succ_start.len() - 1]);
        sort_dedup_tail(&mut direct, direct_start[direct_start.len() - 1]);
    }
    succ_start.push(succ.len());
    direct_start.push(direct.len());
    let succ_of = |v: usize| &succ[succ_start[v]..succ_start[v + 1]];
    let direct_of = |v: usize| &direct[direct_start[v]..direct_start[v + 1]];

    const UNVISITED: usize = usize::MAX;
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut comp_of = vec![UNVISITED; n];
    let mut comp_sets: Vec<Arc<[u32]>> = Vec::new();
    let empty: Arc<[u32]> = Arc::from(Vec::new());
    let mut counter = 0usize;
    let mut call: Vec<(usize, usize)> = Vec::new();
    let (mut members, mut set, mut inherited) = (Vec::new(), Vec::new(), Vec::new());
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        call.push((root, 0));
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut next)) = call.last_mut() {
            if let Some(&w) = succ_of(v).get(*next) {
                *next += 1;
                if index[w] == UNVISITED {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] != index[v] {
                continue;
            }
            // v roots a component: pop it and compute its set.
            let comp = comp_sets.len();
            members.clear();
            while let Some(w) = stack.pop() {
                on_stack[w] = false;
                comp_of[w] = comp;
                members.push(w);
                if w == v {
                    break;
                }
            }
            set.clear();
            inherited.clear();
            for &m in &members {
                set.extend_from_slice(direct_of(m));
                for &s in succ_of(m) {
                    let c = comp_of[s];
                    if c != comp && c != UNVISITED {
                        inherited.push(c);
                    }
                }
            }
            inherited.sort_unstable();
            inherited.dedup();
            inherited.retain(|&c| !comp_sets[c].is_empty());
            let shared = if set.is_empty() && inherited.is_empty() {
                empty.clone()
            } else if set.is_empty() && inherited.len() == 1 {
                comp_sets[inherited[0]].clone()
            } else {
                for &c in &inherited {
                    set.extend_from_slice(&comp_sets[c]);
                }
                set.sort_unstable();
                set.dedup();
                // The union contains every inherited set: one as long is equal to it.
                match inherited.iter().find(|&&c| comp_sets[c].len() == set.len()) {
                    Some(&c) => comp_sets[c].clone(),
                    None => Arc::from(&set[..]),
                }
            };
            comp_sets.push(shared);
        }
    }

    // Each distinct set becomes names once, shared by every symbol that has it.
    let mut as_names: FxHashMap<*const u32, Arc<[SymbolName]>> = FxHashMap::default();
    let mut out = Vec::new();
    for (id, sym) in graph.symbols() {
        let (Some(name), SymbolDef::Defined { block, .. }) = (sym.name(), sym.def()) else {
            continue;
        };
        if sym.scope() == Scope::Local {
            continue;
        }
        let set = index_of.get(block).and_then(|&i| comp_sets.get(comp_of[i])).unwrap_or(&empty);
        let depends_on = as_names
            .entry(Arc::as_ptr(set).cast::<u32>())
            .or_insert_with(|| set.iter().map(|&k| names[k as usize].clone()).collect())
            .clone();
        out.push(SymbolDependencies { symbol: id, name: name.clone(), depends_on });
    }
    out
}

/// Sorts `v[start..]` and drops its repeats.
fn sort_dedup_tail<T: Ord + Copy>(v: &mut Vec<T>, start: usize) {
    let tail = &mut v[start..];
    tail.sort_unstable();
    let mut kept = 0;
    for i in 0..tail.len() {
        if i == 0 || tail[i] != tail[kept - 1] {
            tail[kept] = tail[i];
            kept += 1;
        }
    }
    v.truncate(start + kept);
}

#[cfg(test)]
mod tests {
    use jit_mem::Prot;

    use super::*;
    use crate::{Edge, EdgeKind, Linkage};

    fn names(deps: &[SymbolDependencies], of: &str) -> Vec<String> {
        let d = deps.iter().find(|d| d.name.as_str() == of).unwrap();
        d.depends_on.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn dependencies_follow_edges_through_anonymous_blocks_and_cycles() {
        let mut g = LinkGraph::new("d.o");
        let text = g.add_section(".text", Prot::RX);
        let data = g.add_section(".data", Prot::RW);
        let def = |g: &mut LinkGraph, name: &str| {
            let b = g.add_content_block(text, vec![0; 16], 1, 0).unwrap();
            let s =
                g.add_defined_symbol(b, 0, Some(name.into()), 16, Linkage::Strong, Scope::Default, true, true).unwrap();
            (b, s)
        };
        let (fb, _) = def(&mut g, "f");
        let (gb, _) = def(&mut g, "g");
        let (h1b, h1) = def(&mut g, "h1");
        let (h2b, h2) = def(&mut g, "h2");
        let (_, _) = def(&mut g, "leaf");
        let anon_block = g.add_content_block(data, vec![0; 8], 8, 0).unwrap();
        let anon = g.add_anonymous_symbol(anon_block, 0, 8, false, false).unwrap();
        let a = g.add_external_symbol("A".into(), Linkage::Strong);
        let b = g.add_external_symbol("B".into(), Linkage::Weak);
        let c = g.add_external_symbol("C".into(), Linkage::Strong);
        let f = g.find_symbol("f").unwrap();
        g.add_edge(fb, Edge::new(EdgeKind::Delta32, 0, anon, 0)).unwrap();
        g.add_edge(anon_block, Edge::new(EdgeKind::Pointer64, 0, a, 0)).unwrap();
        g.add_edge(gb, Edge::new(EdgeKind::BranchPCRel32, 0, f, -4)).unwrap();
        g.add_edge(gb, Edge::new(EdgeKind::BranchPCRel32, 4, b, -4)).unwrap();
        g.add_edge(h1b, Edge::new(EdgeKind::BranchPCRel32, 0, h2, -4)).unwrap();
        g.add_edge(h2b, Edge::new(EdgeKind::BranchPCRel32, 0, h1, -4)).unwrap();
        g.add_edge(h2b, Edge::new(EdgeKind::BranchPCRel32, 4, c, -4)).unwrap();
        let deps = external_dependencies(&g);
        assert_eq!(deps.len(), 5, "one entry per defined named symbol");
        assert_eq!(names(&deps, "f"), ["A"]);
        assert_eq!(names(&deps, "g"), ["A", "B"]);
        assert_eq!(names(&deps, "h1"), ["C"]);
        assert_eq!(names(&deps, "h2"), ["C"]);
        assert!(names(&deps, "leaf").is_empty());
    }

    #[test]
    fn repeated_references_count_once_and_an_equal_union_shares_its_set() {
        let mut g = LinkGraph::new("r.o");
        let text = g.add_section(".text", Prot::RX);
        let mut def = |name: &str| {
            let b = g.add_content_block(text, vec![0; 32], 1, 0).unwrap();
            g.add_defined_symbol(b, 0, Some(name.into()), 32, Linkage::Strong, Scope::Default, true, true).unwrap();
            b
        };
        let (fb, gb) = (def("f"), def("g"));
        let a = g.add_external_symbol("A".into(), Linkage::Strong);
        let b = g.add_external_symbol("B".into(), Linkage::Strong);
        let gs = g.find_symbol("g").unwrap();
        for (at, target) in [(0, a), (4, gs), (8, a), (12, gs)] {
            g.add_edge(fb, Edge::new(EdgeKind::BranchPCRel32, at, target, -4)).unwrap();
        }
        for (at, target) in [(0, b), (4, a), (8, b)] {
            g.add_edge(gb, Edge::new(EdgeKind::BranchPCRel32, at, target, -4)).unwrap();
        }
        let deps = external_dependencies(&g);
        assert_eq!(names(&deps, "f"), ["A", "B"]);
        assert_eq!(names(&deps, "g"), ["A", "B"]);
        let set = |of: &str| deps.iter().find(|d| d.name.as_str() == of).unwrap().depends_on.clone();
        assert!(Arc::ptr_eq(&set("f"), &set("g")), "f adds nothing to g's set, so it shares it");
    }

    #[test]
    fn a_long_chain_is_handled_iteratively_and_shares_its_sets() {
        let mut g = LinkGraph::new("chain.o");
        let text = g.add_section(".text", Prot::RX);
        let ext = g.add_external_symbol("end".into(), Linkage::Strong);
        let mut next = ext;
        let n = 200_000;
        for i in 0..n {
            let b = g.add_content_block(text, vec![0; 4], 1, 0).unwrap();
            g.add_edge(b, Edge::new(EdgeKind::BranchPCRel32, 0, next, -4)).unwrap();
            next = g
                .add_defined_symbol(b, 0, Some(format!("f{i}").into()), 4, Linkage::Strong, Scope::Default, true, true)
                .unwrap();
        }
        let deps = external_dependencies(&g);
        assert_eq!(deps.len(), n);
        let first = &deps[0].depends_on;
        assert!(deps.iter().all(|d| d.depends_on.len() == 1 && Arc::ptr_eq(&d.depends_on, first)), "one shared set");
    }
}
