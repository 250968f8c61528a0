//! Sections: named groups of blocks that share a protection and a memory lifetime.

use jit_mem::{Prot, SegmentLifetime};

/// What kind of memory a section's blocks go to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SectionKind {
    /// Placed in a segment of the graph's allocation.
    Regular,
    /// Thread-local data (`.tdata`, `.tbss`): not placed in the allocation; its blocks form
    /// the graph's TLS image, and their addresses are offsets inside that image.
    ThreadLocal,
}

/// A section of a link graph.
#[derive(Clone, Debug)]
pub struct Section {
    pub(crate) name: String,
    pub(crate) prot: Prot,
    pub(crate) lifetime: SegmentLifetime,
    pub(crate) kind: SectionKind,
    /// Creation order: blocks are laid out by section order, then block order.
    pub(crate) ordinal: u32,
    /// Large data (see [`Section::is_large`]).
    pub(crate) large: bool,
}

impl Section {
    /// The section's name (`.text`, `$__GOT`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protection of its memory once finalized.
    pub fn prot(&self) -> Prot {
        self.prot
    }

    /// How long its memory lives.
    pub fn lifetime(&self) -> SegmentLifetime {
        self.lifetime
    }

    /// Where its blocks go.
    pub fn kind(&self) -> SectionKind {
        self.kind
    }

    /// Whether this is x86-64 large data (`SHF_X86_64_LARGE`: `.ldata`, `.lbss`, `.lrodata`
    /// of the medium and large code models), which code reaches only through 64-bit
    /// addresses or the GOT: it may lie anywhere, even far from the rest of the graph.
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// Marks the section as large data, or not (see [`Section::is_large`]).
    pub fn set_large(&mut self, large: bool) {
        self.large = large;
    }

    /// Sets how long its memory lives (`FinalizeOnly` for data only finalize actions read).
    pub fn set_lifetime(&mut self, lifetime: SegmentLifetime) {
        self.lifetime = lifetime;
    }
}
