//! What a lookup asks for and what it gets back: search orders, lookup sets, required states
//! and results. The machinery that answers lookups lives in `state` and `session`.

use smallvec::SmallVec;

use crate::symbol::{SymbolDef, SymbolMap, SymbolName};

/// Identifies a dylib within its session. Copyable; validated against the session on use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DylibId {
    pub(crate) session: u32,
    pub(crate) index: u32,
}

impl DylibId {
    /// The id as a name's Ready mark (`SymbolName::ready_in`): its index plus one, so never 0
    /// (the mark of no dylib) but for the `u32::MAX`th dylib of a session, which is never
    /// marked. Marks are written and read only for names of the session's own pool, so the
    /// session need not be in it.
    pub(crate) fn ready_mark(self) -> u32 {
        self.index.wrapping_add(1)
    }
}

/// Which definitions of a dylib a search may see.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum MatchFlags {
    /// Only exported (default-visibility) symbols: how one dylib sees another.
    ExportedOnly,
    /// Every symbol, hidden ones included: how a dylib sees itself.
    #[default]
    All,
}

/// Whether a name must be found.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum SymbolLookupFlags {
    /// Missing means the lookup fails with `SymbolsNotFound`.
    #[default]
    Required,
    /// Missing means absent from the result (an ELF weak undefined reference).
    WeaklyReferenced,
}

/// Who is asking, as definition generators see it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum LookupKind {
    /// A linker resolving references (static linking semantics).
    #[default]
    Static,
    /// A program calling `dlsym`.
    DlSym,
}

/// The state a lookup waits for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum RequiredState {
    /// The symbol has an address (what a linker needs to apply fixups).
    Resolved,
    /// The symbol and everything it reaches are emitted (what a caller needs to run code).
    Ready,
}

/// The states a symbol moves through, in order. Failure is recorded beside the state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum SymbolState {
    NeverSearched,
    Materializing,
    Resolved,
    Emitted,
    Ready,
}

/// The dylibs a lookup searches, in order, each with its match flags. First match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchOrder(pub(crate) SmallVec<[(DylibId, MatchFlags); 2]>);

impl SearchOrder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `dylib` (searched after those already in the order).
    pub fn then(mut self, dylib: &crate::JitDylib, flags: MatchFlags) -> Self {
        self.push(dylib.id(), flags);
        self
    }

    pub fn push(&mut self, dylib: DylibId, flags: MatchFlags) {
        self.0.push((dylib, flags));
    }

    pub fn iter(&self) -> impl Iterator<Item = (DylibId, MatchFlags)> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&crate::JitDylib> for SearchOrder {
    fn from(dylib: &crate::JitDylib) -> Self {
        SearchOrder::new().then(dylib, MatchFlags::All)
    }
}

/// The names a lookup wants, each required or weakly referenced. Order is kept; duplicates
/// are allowed and answered once.
#[derive(Clone, Debug, Default)]
pub struct SymbolLookupSet(pub(crate) Vec<(SymbolName, SymbolLookupFlags)>);

impl SymbolLookupSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a required name.
    pub fn with(mut self, name: SymbolName) -> Self {
        self.0.push((name, SymbolLookupFlags::Required));
        self
    }

    /// Adds a weakly referenced name.
    pub fn with_weak(mut self, name: SymbolName) -> Self {
        self.0.push((name, SymbolLookupFlags::WeaklyReferenced));
        self
    }

    pub fn push(&mut self, name: SymbolName, flags: SymbolLookupFlags) {
        self.0.push((name, flags));
    }

    pub fn iter(&self) -> impl Iterator<Item = &(SymbolName, SymbolLookupFlags)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<SymbolName> for SymbolLookupSet {
    fn from_iter<I: IntoIterator<Item = SymbolName>>(iter: I) -> Self {
        SymbolLookupSet(iter.into_iter().map(|n| (n, SymbolLookupFlags::Required)).collect())
    }
}

impl<const N: usize> From<[SymbolName; N]> for SymbolLookupSet {
    fn from(names: [SymbolName; N]) -> Self {
        names.into_iter().collect()
    }
}

/// One symbol a lookup found: its definition and the dylib that defines it (which a linker
/// records as the dependency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundSymbol {
    pub name: SymbolName,
    pub def: SymbolDef,
    pub dylib: DylibId,
}

/// Everything a lookup found, in the order asked (weak references that were absent, and
/// side-effects-only symbols, are left out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LookupResult(pub Vec<FoundSymbol>);

impl LookupResult {
    pub fn iter(&self) -> impl Iterator<Item = &FoundSymbol> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_map(self) -> SymbolMap {
        self.0.into_iter().map(|f| (f.name, f.def)).collect()
    }
}
