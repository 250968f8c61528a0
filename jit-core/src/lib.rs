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
mod process_tls;
mod responsibility;
mod session;
mod state;
mod symbol;
mod tracker;
mod unit;

#[cfg(test)]
mod testutil;

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
