//! Symbols: named or anonymous points in blocks, externals to look up, and absolutes.

use jit_mem::TargetAddr;

use crate::{BlockId, SymbolName};

/// Whether another definition may take a symbol's place.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Linkage {
    /// The one definition. On an external: a required reference.
    Strong,
    /// May lose to another definition (ELF `STB_WEAK`, COMDAT members, common symbols).
    /// On an external: a weak reference, which is zero when absent.
    Weak,
}

/// Who may see a symbol.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    /// Exported from the graph and from the dylib.
    Default,
    /// Exported from the graph to other graphs of its dylib, not beyond (`STV_HIDDEN`).
    Hidden,
    /// Visible only inside the graph.
    Local,
}

/// Where a symbol's address comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SymbolDef {
    /// At `offset` in `block`.
    Defined { block: BlockId, offset: u64 },
    /// Defined elsewhere; looked up through the context. `addr` is set once resolved.
    External { addr: Option<TargetAddr> },
    /// At a fixed address.
    Absolute(TargetAddr),
}

/// A symbol of a link graph.
#[derive(Clone, Debug)]
pub struct Symbol {
    pub(crate) name: Option<SymbolName>,
    pub(crate) def: SymbolDef,
    pub(crate) size: u64,
    pub(crate) linkage: Linkage,
    pub(crate) scope: Scope,
    pub(crate) callable: bool,
    pub(crate) live: bool,
    pub(crate) thread_local: bool,
}

impl Symbol {
    /// Its name, if it has one.
    pub fn name(&self) -> Option<&SymbolName> {
        self.name.as_ref()
    }

    /// Where its address comes from.
    pub fn def(&self) -> SymbolDef {
        self.def
    }

    /// The block it is defined in, if defined.
    pub fn block(&self) -> Option<BlockId> {
        match self.def {
            SymbolDef::Defined { block, .. } => Some(block),
            _ => None,
        }
    }

    /// Its offset in its block (zero unless defined).
    pub fn offset(&self) -> u64 {
        match self.def {
            SymbolDef::Defined { offset, .. } => offset,
            _ => 0,
        }
    }

    /// Whether it is defined in a block of the graph.
    pub fn is_defined(&self) -> bool {
        matches!(self.def, SymbolDef::Defined { .. })
    }

    /// Whether it is looked up through the context.
    pub fn is_external(&self) -> bool {
        matches!(self.def, SymbolDef::External { .. })
    }

    /// Whether it has a fixed address.
    pub fn is_absolute(&self) -> bool {
        matches!(self.def, SymbolDef::Absolute(_))
    }

    /// Its size in bytes (from the symbol table; zero if unknown).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its linkage.
    pub fn linkage(&self) -> Linkage {
        self.linkage
    }

    /// Its scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether it names code.
    pub fn is_callable(&self) -> bool {
        self.callable
    }

    /// Whether dead-stripping must keep it (a root).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Whether it names thread-local storage.
    pub fn is_thread_local(&self) -> bool {
        self.thread_local
    }

    /// Sets its linkage.
    pub fn set_linkage(&mut self, linkage: Linkage) {
        self.linkage = linkage;
    }

    /// Sets whether dead-stripping must keep it.
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// Sets whether it names code.
    pub fn set_callable(&mut self, callable: bool) {
        self.callable = callable;
    }

    /// Sets its size.
    pub fn set_size(&mut self, size: u64) {
        self.size = size;
    }
}
