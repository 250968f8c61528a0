//! jit-core's error type. Every variant names the symbols and dylibs involved.
//!
//! Errors are delivered to every waiter of a failed symbol, so they are `Clone` (shared parts
//! sit behind `Arc`).

use std::fmt;
use std::sync::Arc;

use crate::symbol::SymbolName;

/// A symbol qualified by the dylib that defines it, for messages.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QualifiedSymbol {
    pub dylib: Arc<str>,
    pub symbol: SymbolName,
}

impl fmt::Display for QualifiedSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' in '{}'", self.symbol, self.dylib)
    }
}
impl fmt::Debug for QualifiedSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a set of symbols failed: the symbols whose own materialization failed first, and how.
#[derive(Debug)]
pub struct RootCause {
    /// The symbols whose materializer failed (or that were removed), sorted.
    pub origin: Vec<QualifiedSymbol>,
    pub error: Error,
}

impl fmt::Display for RootCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", list(&self.origin, 4), self.error)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `definers` says which definitions clash, where known: the unit that defines the
    /// symbol again, and the one whose definition is there (while it is not materialized).
    #[error("duplicate definition of '{symbol}' in dylib '{dylib}'{}", definers.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    DuplicateDefinition { symbol: SymbolName, dylib: Arc<str>, definers: Option<Arc<str>> },

    #[error("symbols not found: {}", names(symbols))]
    SymbolsNotFound { symbols: Vec<SymbolName> },

    #[error("failed to materialize {}; root cause: {cause}", list(symbols, 8))]
    FailedToMaterialize { symbols: Vec<QualifiedSymbol>, cause: Arc<RootCause> },

    #[error(
        "materialization of {} reported definitions for symbols it is not responsible for: {}",
        list(responsible, 4),
        names(unexpected)
    )]
    UnexpectedSymbolDefinitions { responsible: Vec<QualifiedSymbol>, unexpected: Vec<SymbolName> },

    #[error("materialization was not given addresses for {}", list(missing, 8))]
    MissingSymbolDefinitions { missing: Vec<QualifiedSymbol> },

    #[error("{} depends on {}, which is not defined there", list(dependants, 4), dependency)]
    UnknownDependency { dependants: Vec<QualifiedSymbol>, dependency: QualifiedSymbol },

    #[error("the resource tracker responsible for {} has been removed", list(symbols, 8))]
    ResourceTrackerDefunct { symbols: Vec<QualifiedSymbol> },

    #[error("symbol {0} was removed while it was being looked up")]
    SymbolRemoved(QualifiedSymbol),

    #[error("{0} has no address (materialization-side-effects-only); look it up as weakly referenced")]
    SideEffectsOnlySymbol(QualifiedSymbol),

    #[error("dylib '{0}' already exists in this session")]
    DylibExists(Arc<str>),

    #[error("materialization responsibility for {} was dropped without emitting or failing", list(symbols, 8))]
    ResponsibilityDropped { symbols: Vec<QualifiedSymbol> },

    #[error("cyclic aliases: {}", names(aliases))]
    CyclicAliases { aliases: Vec<SymbolName> },

    #[error("cannot load library '{path}': {reason}")]
    LibraryLoad { path: Arc<str>, reason: Arc<str> },

    #[error("the execution session has ended")]
    SessionEnded,

    /// A materializer or generator failure, in its own words.
    #[error("{0}")]
    Message(Arc<str>),

    #[error(transparent)]
    Other(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A failure described by a message, for materializers and generators.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Message(Arc::from(message.into()))
    }

    /// Wraps any error (e.g. a compiler's or linker's).
    pub fn other(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Other(Arc::new(err))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn names(symbols: &[SymbolName]) -> String {
    let shown: Vec<String> = symbols.iter().take(16).map(|s| format!("'{s}'")).collect();
    let more = symbols.len().saturating_sub(16);
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

fn list(symbols: &[QualifiedSymbol], max: usize) -> String {
    let shown: Vec<String> = symbols.iter().take(max).map(|s| s.to_string()).collect();
    let more = symbols.len().saturating_sub(max);
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}
