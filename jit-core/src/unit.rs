//! Materialization units: what a dylib is given to produce symbols on demand, and the two
//! every session needs (absolute symbols, and aliases / re-exports).

use rustc_hash::{FxHashMap, FxHashSet};

use crate::dylib::JitDylib;
use crate::error::Error;
use crate::lookup::{MatchFlags, RequiredState, SearchOrder, SymbolLookupFlags, SymbolLookupSet};
use crate::responsibility::{EmissionGroup, MaterializationResponsibility};
use crate::symbol::{Interface, SymbolDef, SymbolFlags, SymbolMap, SymbolName};

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
    fn symbols(&self) -> &Interface;

    /// Produces the symbols `mr` is responsible for (perhaps fewer than `symbols()`).
    fn materialize(self: Box<Self>, mr: MaterializationResponsibility);

    /// Drops the definition of `name`, which lost to another definition in `dylib`.
    fn discard(&mut self, dylib: &JitDylib, name: &SymbolName);
}

/// Symbols whose addresses are already known.
pub struct AbsoluteSymbolsUnit {
    interface: Interface,
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

    fn symbols(&self) -> &Interface {
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
    interface: Interface,
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
        ReExportsUnit { source, source_flags, aliases, interface }
    }
}

impl MaterializationUnit for ReExportsUnit {
    fn name(&self) -> &str {
        "re-exports"
    }

    fn symbols(&self) -> &Interface {
        &self.interface
    }

    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let target = mr.dylib();
        let source = self.source.clone().unwrap_or_else(|| target.clone());
        let requested: FxHashSet<SymbolName> = mr.requested_symbols().into_iter().collect();
        let mut aliases: FxHashMap<SymbolName, AliasTarget> =
            self.aliases.into_iter().filter(|(a, _)| mr.contains(a)).collect();

        // Aliases that lead back to themselves through this unit's own aliases can never
        // resolve: fail them (all members of each cycle) instead of waiting forever.
        if source == target {
            let mut cyclic: Vec<SymbolName> = Vec::new();
            for start in requested.iter().filter(|a| aliases.contains_key(*a)) {
                let mut chain = vec![start.clone()];
                let mut cur = &aliases[start].aliasee;
                while let Some(t) = aliases.get(cur) {
                    if let Some(pos) = chain.iter().position(|c| c == cur) {
                        cyclic.extend(chain.drain(pos..));
                        break;
                    }
                    chain.push(cur.clone());
                    cur = &t.aliasee;
                }
            }
            if !cyclic.is_empty() {
                cyclic.sort();
                cyclic.dedup();
                aliases.retain(|a, _| !cyclic.contains(a));
                match mr.delegate(&cyclic) {
                    Ok(part) => part.fail(Error::CyclicAliases { aliases: cyclic }),
                    Err(e) => return mr.fail(e),
                }
            }
        }

        let (mut now, mut later, mut unrequested) = (FxHashMap::default(), FxHashMap::default(), FxHashMap::default());
        for (alias, t) in aliases {
            if !requested.contains(&alias) {
                // Nobody asked for it yet: materializing it now would materialize its aliasee
                // prematurely. Hand it back.
                unrequested.insert(alias, t);
            } else if source == target && mr.contains(&t.aliasee) && requested.contains(&t.aliasee) {
                // An alias of an alias this very responsibility must produce cannot be looked
                // up until that one resolves: hand it back to be materialized on its own.
                later.insert(alias, t);
            } else {
                now.insert(alias, t);
            }
        }
        later.extend(unrequested);
        if !later.is_empty() {
            if let Err(e) = mr.replace(ReExportsUnit::new(self.source, self.source_flags, later)) {
                mr.fail(e);
                return;
            }
        }
        let order = SearchOrder::new().then(&source, self.source_flags);
        let mut wanted = SymbolLookupSet::new();
        for t in now.values() {
            wanted.push(t.aliasee.clone(), SymbolLookupFlags::WeaklyReferenced);
        }
        let session = mr.session();
        session.lookup_detailed(&order, wanted, RequiredState::Resolved, Default::default(), move |result| {
            let found = match result {
                Ok(found) => found,
                Err(e) => return mr.fail(e),
            };
            let by_name: FxHashMap<&SymbolName, SymbolDef> = found.iter().map(|f| (&f.name, f.def)).collect();
            // Aliases whose aliasee does not exist fail on their own; the others go on.
            let missing: Vec<SymbolName> =
                now.keys().filter(|a| !by_name.contains_key(&now[*a].aliasee)).cloned().collect();
            if !missing.is_empty() {
                let mut aliasees: Vec<SymbolName> = missing.iter().map(|a| now[a].aliasee.clone()).collect();
                aliasees.sort();
                match mr.delegate(&missing) {
                    Ok(part) => part.fail(Error::SymbolsNotFound { symbols: aliasees }),
                    Err(e) => return mr.fail(e),
                }
                now.retain(|a, _| !missing.contains(a));
            }
            let defs: Vec<(SymbolName, SymbolDef)> = now
                .iter()
                .map(|(alias, t)| (alias.clone(), SymbolDef::new(by_name[&t.aliasee].addr, t.flags)))
                .collect();
            if let Err(e) = mr.notify_resolved(defs) {
                return mr.fail(e);
            }
            let groups = now
                .iter()
                .map(|(alias, t)| EmissionGroup::new([alias.clone()], [(source.id(), t.aliasee.clone())]))
                .collect::<Vec<_>>();
            let _ = mr.notify_emitted(groups);
        });
    }

    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.aliases.remove(name);
        self.interface.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{ExecutorAddr, SymbolState};

    fn addr(n: u64) -> SymbolDef {
        SymbolDef::new(ExecutorAddr(n), EXPORTED)
    }

    #[test]
    fn an_absolute_symbols_unit_materializes_when_first_looked_up() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        jd.define(absolute_symbols([(x.clone(), addr(0x10))])).unwrap();
        assert_eq!(jd.symbol_state(&x), Some(SymbolState::NeverSearched));
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(0x10));
        assert_eq!(jd.symbol_state(&x), Some(SymbolState::Ready));
    }

    #[test]
    fn aliases_within_a_dylib_follow_chains() {
        for threads in [0, 2] {
            let (es, jd) = setup(threads);
            let (a, b, c) = (es.intern("a"), es.intern("b"), es.intern("c"));
            jd.define_absolute([(a.clone(), addr(5))]).unwrap();
            let target = |n: &SymbolName| AliasTarget { aliasee: n.clone(), flags: EXPORTED };
            // c -> b -> a, both aliases in one unit.
            jd.define(aliases([(b.clone(), target(&a)), (c.clone(), target(&b))])).unwrap();
            assert_eq!(jd.lookup("c").unwrap().addr, ExecutorAddr(5));
            assert_eq!(jd.lookup("b").unwrap().addr, ExecutorAddr(5));
        }
    }

    #[test]
    fn reexports_see_only_what_the_source_flags_allow() {
        let (es, app) = setup(0);
        let lib = es.create_dylib("lib").unwrap();
        let (public, hidden) = (es.intern("public"), es.intern("hidden"));
        lib.define_absolute([(public.clone(), addr(1))]).unwrap();
        lib.define_absolute([(hidden.clone(), SymbolDef::new(ExecutorAddr(2), SymbolFlags::empty()))]).unwrap();
        let (p2, h2) = (es.intern("p2"), es.intern("h2"));
        let t = |n: &SymbolName| AliasTarget { aliasee: n.clone(), flags: EXPORTED };
        app.define(reexports(&lib, [(p2.clone(), t(&public)), (h2.clone(), t(&hidden))], MatchFlags::ExportedOnly))
            .unwrap();
        assert_eq!(app.lookup("p2").unwrap().addr, ExecutorAddr(1));
        let err = app.lookup("h2").unwrap_err();
        assert!(err.to_string().contains("'hidden'"), "the hidden aliasee is named: {err}");
    }

    #[test]
    fn cyclic_aliases_fail_instead_of_hanging() {
        let (es, jd) = setup(0);
        let (a, b) = (es.intern("a"), es.intern("b"));
        let t = |n: &SymbolName| AliasTarget { aliasee: n.clone(), flags: EXPORTED };
        jd.define(aliases([(a.clone(), t(&b)), (b.clone(), t(&a))])).unwrap();
        let err = within_watchdog(move || jd.lookup("a")).unwrap_err();
        assert!(err.to_string().contains("cyclic aliases: 'a', 'b'"), "{err}");
    }
}
