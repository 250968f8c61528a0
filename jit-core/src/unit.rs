//! Materialization units: what a dylib is given to produce symbols on demand, and the two
//! every session needs (absolute symbols, and aliases / re-exports).

use rustc_hash::FxHashMap;

use crate::dylib::JitDylib;
use crate::error::Error;
use crate::lookup::{MatchFlags, RequiredState, SearchOrder, SymbolLookupSet};
use crate::responsibility::{EmissionGroup, MaterializationResponsibility};
use crate::symbol::{SymbolDef, SymbolFlags, SymbolFlagsMap, SymbolMap, SymbolName};

/// A program representation (IR, an object file, an AST, stub bytes) that can produce a set of
/// symbols when one of them is looked up.
///
/// Contract: `symbols` is read once, when the unit is defined. `materialize` is called at most
/// once, on a dispatcher thread and never under the session lock, after `discard` has been
/// called for every name the unit lost (a weak definition overridden by a strong one). A unit
/// that is never materialized is dropped (outside the lock) when its dylib no longer needs it.
pub trait MaterializationUnit: Send + 'static {
    /// A short name for traces and errors ("lapi.o", "lazy stubs for main").
    fn name(&self) -> &str;

    /// The symbols this unit can provide, with their flags.
    fn symbols(&self) -> &SymbolFlagsMap;

    /// Produces the symbols `mr` is responsible for (perhaps fewer than `symbols()`).
    fn materialize(self: Box<Self>, mr: MaterializationResponsibility);

    /// Drops the definition of `name`, which lost to another definition in `dylib`.
    fn discard(&mut self, dylib: &JitDylib, name: &SymbolName);
}

/// Symbols whose addresses are already known.
pub struct AbsoluteSymbolsUnit {
    interface: SymbolFlagsMap,
    defs: SymbolMap,
}

/// A unit defining `defs` at fixed addresses (materialized when first looked up, so a weak
/// absolute definition can still lose to a strong one). `JitDylib::define_absolute` defines
/// symbols that are Ready at once instead.
pub fn absolute_symbols(defs: impl IntoIterator<Item = (SymbolName, SymbolDef)>) -> AbsoluteSymbolsUnit {
    let defs: SymbolMap = defs.into_iter().collect();
    let interface = defs.iter().map(|(n, d)| (n.clone(), d.flags)).collect();
    AbsoluteSymbolsUnit { interface, defs }
}

impl MaterializationUnit for AbsoluteSymbolsUnit {
    fn name(&self) -> &str {
        "absolute symbols"
    }

    fn symbols(&self) -> &SymbolFlagsMap {
        &self.interface
    }

    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let defs: Vec<(SymbolName, SymbolDef)> = self.defs.into_iter().filter(|(n, _)| mr.contains(n)).collect();
        if let Err(e) = mr.notify_resolved(defs) {
            mr.fail(e);
            return;
        }
        // Absolute symbols depend on nothing; an error here has already failed them.
        let _ = mr.notify_emitted(Vec::new());
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
        self.defs.remove(name);
    }
}

/// What an alias stands for: the aliasee's name and the alias's own flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasTarget {
    pub aliasee: SymbolName,
    pub flags: SymbolFlags,
}

/// Aliases for symbols of a source dylib (the defining dylib itself when `source` is `None`).
pub struct ReExportsUnit {
    source: Option<JitDylib>,
    source_flags: MatchFlags,
    aliases: FxHashMap<SymbolName, AliasTarget>,
    interface: SymbolFlagsMap,
}

/// Aliases within one dylib: `alias -> aliasee` both defined in the dylib this unit goes into.
pub fn aliases(map: impl IntoIterator<Item = (SymbolName, AliasTarget)>) -> ReExportsUnit {
    ReExportsUnit::new(None, MatchFlags::All, map.into_iter().collect())
}

/// Re-exports of `source`'s symbols under (possibly) other names; `source_flags` says which of
/// its symbols may be seen.
pub fn reexports(
    source: &JitDylib,
    map: impl IntoIterator<Item = (SymbolName, AliasTarget)>,
    source_flags: MatchFlags,
) -> ReExportsUnit {
    ReExportsUnit::new(Some(source.clone()), source_flags, map.into_iter().collect())
}

impl ReExportsUnit {
    fn new(source: Option<JitDylib>, source_flags: MatchFlags, aliases: FxHashMap<SymbolName, AliasTarget>) -> Self {
        let interface = aliases.iter().map(|(n, t)| (n.clone(), t.flags)).collect();
        ReExportsUnit {
            source,
            source_flags,
            aliases,
            interface,
        }
    }
}

impl MaterializationUnit for ReExportsUnit {
    fn name(&self) -> &str {
        "re-exports"
    }

    fn symbols(&self) -> &SymbolFlagsMap {
        &self.interface
    }

    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let target = mr.dylib();
        let source = self.source.clone().unwrap_or_else(|| target.clone());
        let mut now: FxHashMap<SymbolName, AliasTarget> = FxHashMap::default();
        let mut later: FxHashMap<SymbolName, AliasTarget> = FxHashMap::default();
        for (alias, t) in self.aliases.into_iter().filter(|(a, _)| mr.contains(a)) {
            // An alias of another alias that this very responsibility must produce cannot be
            // looked up until that one resolves: hand it back to be materialized separately.
            if source == target && mr.contains(&t.aliasee) {
                later.insert(alias, t);
            } else {
                now.insert(alias, t);
            }
        }
        if now.is_empty() && !later.is_empty() {
            let mut names: Vec<SymbolName> = later.into_keys().collect();
            names.sort();
            mr.fail(Error::CyclicAliases { aliases: names });
            return;
        }
        if !later.is_empty() {
            let rest = ReExportsUnit::new(self.source, self.source_flags, later);
            if let Err(e) = mr.replace(rest) {
                mr.fail(e);
                return;
            }
        }
        let order = SearchOrder::new().then(&source, self.source_flags);
        let wanted: SymbolLookupSet = now.values().map(|t| t.aliasee.clone()).collect();
        let session = mr.session();
        session.lookup_detailed(
            &order,
            wanted,
            RequiredState::Resolved,
            Default::default(),
            move |result| {
                let found = match result {
                    Ok(found) => found,
                    Err(e) => return mr.fail(e),
                };
                let by_name: FxHashMap<&SymbolName, SymbolDef> = found.iter().map(|f| (&f.name, f.def)).collect();
                let defs: Vec<(SymbolName, SymbolDef)> = now
                    .iter()
                    .filter_map(|(alias, t)| {
                        by_name
                            .get(&t.aliasee)
                            .map(|d| (alias.clone(), SymbolDef::new(d.addr, t.flags)))
                    })
                    .collect();
                if let Err(e) = mr.notify_resolved(defs) {
                    return mr.fail(e);
                }
                let groups = now
                    .iter()
                    .map(|(alias, t)| EmissionGroup {
                        symbols: vec![alias.clone()],
                        depends_on: vec![(source.id(), t.aliasee.clone())],
                    })
                    .collect();
                let _ = mr.notify_emitted(groups);
            },
        );
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.aliases.remove(name);
        self.interface.remove(name);
    }
}
