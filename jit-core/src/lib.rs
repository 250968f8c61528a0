//! jit-core: the execution session, symbols, JIT dylibs, materialization, asynchronous lookup,
//! the dependency graph and task dispatch.
//!
//! Knows nothing of machine code or LLVM: a host with its own code generator can use jit-core
//! with jit-link and jit-mem alone. Start with [`ExecutionSession`]; the concurrency rules it
//! keeps are in the workspace's DESIGN.md.

mod arena;
mod dispatch;
mod dylib;
mod error;
pub mod events;
mod generator;
mod graph;
mod loaded_symbols;
mod lookup;
mod name_slab;
mod process_tls;
mod responsibility;
mod session;
mod state;
mod symbol;
mod tracker;
mod unit;

#[cfg(test)]
mod testutil;

/// `iter` collected into a `SmallVec` by pushing. For the one or two items the hot paths'
/// lists usually hold this is several times cheaper than `collect` (callgrind: about 130
/// instructions against 20 for one symbol name), whose `SmallVec::extend` goes through its
/// general reserve path even when the items fit inline.
pub(crate) fn collect_small<A: smallvec::Array>(iter: impl IntoIterator<Item = A::Item>) -> smallvec::SmallVec<A> {
    let iter = iter.into_iter();
    let mut out = smallvec::SmallVec::new();
    let (at_least, _) = iter.size_hint();
    if at_least > A::size() {
        out.reserve_exact(at_least);
    }
    for item in iter {
        out.push(item);
    }
    out
}

pub use dispatch::{InPlaceDispatcher, Priority, Task, TaskDispatcher, TaskKind, ThreadPoolDispatcher};
pub use dylib::{JitDylib, WeakJitDylib};
pub use error::{Error, QualifiedSymbol, Result, RootCause};
pub use generator::{
    DefinitionGenerator, DynamicLibraryGenerator, GeneratorDone, OnDemandGenerator, ProcessSymbolsGenerator,
};
pub use loaded_symbols::LoaderBusy;
pub use lookup::{
    DylibId, FoundSymbol, LookupKind, LookupResult, MatchFlags, RequiredState, SearchOrder, SymbolLookupFlags,
    SymbolLookupSet, SymbolState,
};
pub use responsibility::{EmissionGroup, MaterializationResponsibility, live_responsibilities};
pub use rustc_hash::{FxHashMap, FxHashSet};
pub use session::{ExecutionSession, LookupOptions};
pub use state::Census;
pub use symbol::{
    ExecutorAddr, Interface, SymbolDef, SymbolFlags, SymbolFlagsMap, SymbolMap, SymbolName, SymbolNameSet,
    SymbolStringPool,
};
pub use tracker::{ResourceKey, ResourceManager, ResourceTracker};
pub use unit::{
    AbsoluteSymbolsUnit, AliasTarget, MaterializationUnit, ReExportsUnit, absolute_symbols, aliases, reexports,
};
