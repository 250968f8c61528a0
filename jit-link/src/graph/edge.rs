//! Edges: a fixup at an offset of a block, pointing at a symbol.

use crate::SymbolId;
use crate::x86_64::EdgeKind;

/// A reference from a block to a symbol: at `offset` in the block, a fixup of `kind`
/// computed from the target's address and `addend`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Edge {
    /// How the fixup is computed and written.
    pub kind: EdgeKind,
    /// Where in the block the fixup is written.
    pub offset: u64,
    /// The symbol referenced.
    pub target: SymbolId,
    /// Added to the target's address.
    pub addend: i64,
}

impl Edge {
    /// An edge.
    pub fn new(kind: EdgeKind, offset: u64, target: SymbolId, addend: i64) -> Edge {
        Edge { kind, offset, target, addend }
    }
}
