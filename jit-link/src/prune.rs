//! Dead-stripping: keeps what the live symbols reach through edges, removes the rest.

use slotmap::SecondaryMap;

use crate::{BlockId, LinkError, LinkGraph, SymbolId};

/// Removes every block no live symbol reaches, every symbol of those blocks, and every
/// external or absolute symbol no remaining edge names (so it is not looked up). Runs
/// between the pre-prune and post-prune phases; linear in blocks + edges.
pub fn dead_strip(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let mut live_blocks: SecondaryMap<BlockId, ()> = SecondaryMap::new();
    let mut live_symbols: SecondaryMap<SymbolId, ()> = SecondaryMap::new();
    let mut work: Vec<BlockId> = Vec::new();
    let mut reach =
        |sym: SymbolId, graph: &LinkGraph, live_blocks: &mut SecondaryMap<BlockId, ()>, work: &mut Vec<BlockId>| {
            live_symbols.insert(sym, ());
            if let Some(block) = graph.symbol(sym).and_then(|s| s.block()) {
                if live_blocks.insert(block, ()).is_none() {
                    work.push(block);
                }
            }
        };
    let roots: Vec<SymbolId> = graph.symbols().filter(|(_, s)| s.is_live()).map(|(id, _)| id).collect();
    for sym in roots {
        reach(sym, graph, &mut live_blocks, &mut work);
    }
    while let Some(block) = work.pop() {
        let targets: Vec<SymbolId> =
            graph.block(block).map(|b| b.edges().iter().map(|e| e.target).collect()).unwrap_or_default();
        for t in targets {
            reach(t, graph, &mut live_blocks, &mut work);
        }
    }
    let dead_blocks: Vec<BlockId> = graph.block_ids().into_iter().filter(|b| !live_blocks.contains_key(*b)).collect();
    let removed = dead_blocks.len();
    graph.remove_blocks(&dead_blocks);
    let dead_symbols: Vec<SymbolId> = graph
        .symbols()
        .filter(|(id, s)| !s.is_defined() && !live_symbols.contains_key(*id))
        .map(|(id, _)| id)
        .collect();
    for s in dead_symbols {
        graph.remove_symbol(s);
    }
    tracing::debug!(object = graph.name(), removed_blocks = removed, "dead-stripped");
    Ok(())
}
