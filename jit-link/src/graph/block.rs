//! Blocks: the unit of layout and dead-stripping; bytes (or zero fill) with edges.

use jit_mem::TargetAddr;

use crate::{Edge, SectionId};

/// The bytes of a block.
#[derive(Clone, Debug)]
pub enum BlockContent {
    /// Initialized bytes.
    Bytes(Vec<u8>),
    /// This many zero bytes (`.bss`, `.tbss`, common symbols).
    ZeroFill(u64),
}

/// A contiguous piece of a section, placed as a unit.
#[derive(Clone, Debug)]
pub struct Block {
    pub(crate) section: SectionId,
    pub(crate) content: BlockContent,
    pub(crate) align: u64,
    pub(crate) align_offset: u64,
    pub(crate) edges: Vec<Edge>,
    pub(crate) addr: TargetAddr,
    /// Creation order within the graph: blocks of a section are laid out in this order.
    pub(crate) ordinal: u64,
}

impl Block {
    /// The section the block belongs to.
    pub fn section(&self) -> SectionId {
        self.section
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        match &self.content {
            BlockContent::Bytes(b) => b.len() as u64,
            BlockContent::ZeroFill(n) => *n,
        }
    }

    /// Whether it is zero fill.
    pub fn is_zero_fill(&self) -> bool {
        matches!(self.content, BlockContent::ZeroFill(_))
    }

    /// Its content.
    pub fn content(&self) -> &BlockContent {
        &self.content
    }

    /// Its initialized bytes (empty for zero fill).
    pub fn bytes(&self) -> &[u8] {
        match &self.content {
            BlockContent::Bytes(b) => b,
            BlockContent::ZeroFill(_) => &[],
        }
    }

    /// Its bytes to rewrite (a zero-fill block becomes a content block of zeros first).
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        if let BlockContent::ZeroFill(n) = self.content {
            self.content = BlockContent::Bytes(vec![0; n as usize]);
        }
        match &mut self.content {
            BlockContent::Bytes(b) => b,
            BlockContent::ZeroFill(_) => unreachable!("converted to bytes above"),
        }
    }

    /// Replaces its content.
    pub fn set_content(&mut self, content: BlockContent) {
        self.content = content;
    }

    /// Its alignment (a power of two).
    pub fn align(&self) -> u64 {
        self.align
    }

    /// Its address modulo its alignment.
    pub fn align_offset(&self) -> u64 {
        self.align_offset
    }

    /// Sets alignment and offset; `align` must be a power of two and `align_offset < align`.
    pub fn set_align(&mut self, align: u64, align_offset: u64) -> bool {
        if !align.is_power_of_two() || align_offset >= align {
            return false;
        }
        self.align = align;
        self.align_offset = align_offset;
        true
    }

    /// Its address: where it runs once allocated (for a thread-local block, its offset in the
    /// graph's TLS image). Zero before allocation.
    pub fn addr(&self) -> TargetAddr {
        self.addr
    }

    /// Its edges.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Its edges, to add, remove or rewrite.
    pub fn edges_mut(&mut self) -> &mut Vec<Edge> {
        &mut self.edges
    }

    /// Adds an edge.
    pub fn add_edge(&mut self, edge: Edge) {
        self.edges.push(edge);
    }
}
