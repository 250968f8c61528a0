//! Static initializers and finalizers: `.init_array[.N]`, `.fini_array[.N]`, `.ctors[.N]`,
//! `.dtors[.N]` and `.preinit_array`, collected in the order a static linker and the C
//! runtime would run them, for the caller (the object linking layer) to run.

use jit_mem::TargetAddr;

use crate::{LinkError, LinkGraph};

/// The priority of entries of unnumbered sections (`.init_array`): they run after every
/// numbered one, as GNU ld's `SORT_BY_INIT_PRIORITY` places them.
pub const DEFAULT_PRIORITY: u32 = 65535;

/// One function to call, with its priority (lower runs earlier for initializers, later for
/// finalizers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InitFiniEntry {
    /// The priority: `N` of `.init_array.N`, [`DEFAULT_PRIORITY`] for `.init_array`.
    pub priority: u32,
    /// The function's address.
    pub addr: TargetAddr,
    /// The object of a combined graph its table came from ([`LinkGraph::member_of`]); 0 in
    /// a graph of one object.
    pub member: u32,
}

/// A graph's initializers and finalizers.
///
/// `inits` are in the order to call them (by ascending priority, then in the order of the
/// objects, then in the order of each object); `finis` in the order to call them (by
/// descending priority, then objects backwards, each array backwards, as glibc's `_dl_fini`
/// walks `.fini_array`). To merge the graphs of one dylib the way a static link would order
/// them: concatenate `inits` in link order (of each entry's object) and `finis` in *reverse*
/// link order, then sort inits stably by ascending priority and finis stably by descending
/// priority. Run finalizers after the `atexit`/`__cxa_atexit` handlers registered since the
/// initializers ran (the C runtime registers `_dl_fini` first, so it runs last).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitFini {
    /// Initializers, in calling order.
    pub inits: Vec<InitFiniEntry>,
    /// Finalizers, in calling order.
    pub finis: Vec<InitFiniEntry>,
}

impl InitFini {
    /// Whether there is nothing to call.
    pub fn is_empty(&self) -> bool {
        self.inits.is_empty() && self.finis.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Init { reversed: bool },
    Fini { reversed: bool },
}

/// What a section name means: which table, and its priority.
fn classify(name: &str) -> Option<(Table, u32)> {
    let numbered = |prefix: &str| -> Option<Option<u32>> {
        if name == prefix {
            return Some(None);
        }
        let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
        rest.parse::<u32>().ok().map(Some)
    };
    if name == ".preinit_array" {
        return Some((Table::Init { reversed: false }, 0));
    }
    if let Some(p) = numbered(".init_array") {
        return Some((Table::Init { reversed: false }, p.unwrap_or(DEFAULT_PRIORITY)));
    }
    if let Some(p) = numbered(".fini_array") {
        return Some((Table::Fini { reversed: true }, p.unwrap_or(DEFAULT_PRIORITY)));
    }
    // `.ctors` run backwards and `.ctors.N` holds priority 65535 - N (GCC's encoding).
    if let Some(p) = numbered(".ctors") {
        return Some((
            Table::Init { reversed: true },
            p.map(|n| DEFAULT_PRIORITY.saturating_sub(n)).unwrap_or(DEFAULT_PRIORITY),
        ));
    }
    if let Some(p) = numbered(".dtors") {
        return Some((
            Table::Fini { reversed: false },
            p.map(|n| DEFAULT_PRIORITY.saturating_sub(n)).unwrap_or(DEFAULT_PRIORITY),
        ));
    }
    None
}

/// Whether a section of this name holds initializers or finalizers (and so is a root of
/// dead-stripping).
pub fn is_init_fini_section(name: &str) -> bool {
    classify(name).is_some()
}

/// Marks every block of an init/fini section live. A pre-prune pass.
pub fn mark_init_fini_live(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let sections: Vec<_> =
        graph.sections().into_iter().filter(|(_, s)| is_init_fini_section(s.name())).map(|(id, _)| id).collect();
    for section in sections {
        for block in graph.blocks_in_section(section) {
            graph.add_anonymous_symbol(block, 0, 0, false, true)?;
        }
    }
    Ok(())
}

/// Reads the fixed-up pointers of every init/fini section into [`LinkGraph::init_fini`].
/// A post-fixup pass.
pub fn collect_init_fini(graph: &mut LinkGraph) -> Result<(), LinkError> {
    // Arrays in object order; the runtime walks `.fini_array` and `.ctors` backwards.
    let (mut forward_inits, mut ctors, mut fini_array, mut dtors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (section, s) in graph.sections() {
        let Some((table, priority)) = classify(s.name()) else {
            continue;
        };
        for block in graph.blocks_in_section(section) {
            let Some(b) = graph.block(block) else {
                continue;
            };
            let member = graph.member_of(block);
            let bytes = b.bytes();
            if bytes.len() % 8 != 0 {
                return Err(LinkError::Malformed {
                    object: graph.name().to_string(),
                    what: format!("{} is {} bytes, not a whole number of pointers", s.name(), bytes.len()),
                });
            }
            let entries = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                // 0 and -1 are the terminators and placeholders of `.ctors`/`.dtors`.
                .filter(|&v| v != 0 && v != u64::MAX)
                .map(|v| InitFiniEntry { priority, addr: TargetAddr(v), member });
            match table {
                Table::Init { reversed: false } => forward_inits.extend(entries),
                Table::Init { reversed: true } => ctors.extend(entries),
                Table::Fini { reversed: true } => fini_array.extend(entries),
                Table::Fini { reversed: false } => dtors.extend(entries),
            }
        }
    }
    let mut inits = forward_inits;
    inits.extend(ctors.into_iter().rev());
    let mut finis: Vec<InitFiniEntry> = fini_array.into_iter().rev().collect();
    finis.extend(dtors);
    inits.sort_by_key(|e| (e.priority, e.member));
    finis.sort_by_key(|e| (std::cmp::Reverse(e.priority), std::cmp::Reverse(e.member)));
    let out = graph.init_fini_mut();
    out.inits.extend(inits);
    out.finis.extend(finis);
    Ok(())
}

#[cfg(test)]
mod tests {
    use jit_mem::Prot;

    use super::*;

    fn table(g: &mut LinkGraph, name: &str, values: &[u64]) {
        let s = g.add_section(name, Prot::RW);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        g.add_content_block(s, bytes, 8, 0).unwrap();
    }

    #[test]
    fn initializers_and_finalizers_come_out_in_c_runtime_order() {
        let mut g = LinkGraph::new("i.o");
        table(&mut g, ".init_array", &[1, 2]);
        table(&mut g, ".init_array.200", &[3]);
        table(&mut g, ".init_array.101", &[4, 5]);
        table(&mut g, ".ctors", &[6, 7]);
        table(&mut g, ".fini_array", &[8, 9]);
        table(&mut g, ".fini_array.101", &[10]);
        table(&mut g, ".data", &[11]);
        collect_init_fini(&mut g).unwrap();
        let inits: Vec<u64> = g.init_fini().inits.iter().map(|e| e.addr.0).collect();
        let finis: Vec<u64> = g.init_fini().finis.iter().map(|e| e.addr.0).collect();
        assert_eq!(inits, [4, 5, 3, 1, 2, 7, 6]);
        assert_eq!(finis, [9, 8, 10]);
        assert!(is_init_fini_section(".init_array.65535") && !is_init_fini_section(".init_arrayx"));
    }

    /// Objects combined into one graph keep their order: each entry says which it came from,
    /// and one object's entries come before the next one's of the same priority.
    #[test]
    fn the_objects_of_a_combined_graph_run_in_their_order() {
        let object = |name: &str, tables: &[(&str, &[u64])]| {
            let mut g = LinkGraph::new(name);
            for (section, values) in tables {
                table(&mut g, section, values);
            }
            g
        };
        let mut g = LinkGraph::new("a.o + b.o + c.o");
        g.absorb(object("a.o", &[(".init_array", &[1]), (".fini_array", &[11])])).unwrap();
        g.absorb(object("b.o", &[(".ctors", &[3, 2]), (".init_array.101", &[20])])).unwrap();
        g.absorb(object("c.o", &[(".init_array", &[4, 5]), (".fini_array", &[14, 15])])).unwrap();
        collect_init_fini(&mut g).unwrap();
        let inits: Vec<(u64, u32)> = g.init_fini().inits.iter().map(|e| (e.addr.0, e.member)).collect();
        let finis: Vec<(u64, u32)> = g.init_fini().finis.iter().map(|e| (e.addr.0, e.member)).collect();
        assert_eq!(inits, [(20, 1), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]);
        assert_eq!(finis, [(15, 2), (14, 2), (11, 0)]);
    }
}
