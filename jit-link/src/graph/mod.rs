//! The LinkGraph: sections, blocks, symbols and edges of one object, in arenas addressed by ids.

mod block;
mod edge;
mod link_graph;
mod section;
mod symbol;

pub use block::{Block, BlockContent};
pub use edge::Edge;
pub use link_graph::LinkGraph;
pub use section::{Section, SectionKind};
pub use symbol::{Linkage, Scope, Symbol, SymbolDef};

slotmap::new_key_type! {
    /// A section of a [`LinkGraph`].
    pub struct SectionId;
    /// A block of a [`LinkGraph`].
    pub struct BlockId;
    /// A symbol of a [`LinkGraph`].
    pub struct SymbolId;
}
