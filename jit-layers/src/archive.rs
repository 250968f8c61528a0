//! Static libraries (`.a`): a member is linked only once a lookup needs a symbol it defines,
//! as a static linker pulls archive members (LLVM's `StaticLibraryDefinitionGenerator`). Two
//! members defining one name do not clash unless both are needed; a member nothing needs is
//! never parsed past the archive's index, and may refer to symbols that exist nowhere.

use std::ops::Range;
use std::sync::Arc;

use jit_core::{
    DefinitionGenerator, Error, FxHashMap, GeneratorDone, JitDylib, LookupKind, OnDemandGenerator, Result,
    SymbolLookupFlags, SymbolName,
};
use object::read::archive::ArchiveFile;
use parking_lot::Mutex;

use crate::ObjectLinkingLayer;

/// A parsed static library: its members and which member defines each symbol.
pub struct StaticLibrary {
    name: String,
    bytes: Arc<[u8]>,
    /// Each member's name (`lib.a(member.o)`) and bytes within `bytes`.
    members: Vec<(String, Range<usize>)>,
    /// Symbol name to member: the first member that defines it, in the archive's index order
    /// (the order a static linker searches).
    index: FxHashMap<Box<str>, usize>,
}

impl StaticLibrary {
    /// Whether `bytes` start like a Unix archive (regular or thin).
    pub fn is_archive(bytes: &[u8]) -> bool {
        bytes.starts_with(b"!<arch>\n") || bytes.starts_with(b"!<thin>\n")
    }

    /// Parses archive `bytes`; `name` (its path) names it in errors. The symbol index is the
    /// archive's own (`ar s`, `ranlib`); without one, each member's defined symbols.
    pub fn parse(name: &str, bytes: impl Into<Arc<[u8]>>) -> Result<StaticLibrary> {
        let bytes: Arc<[u8]> = bytes.into();
        let bad = |what: String| Error::msg(format!("{name}: {what}"));
        let archive = ArchiveFile::parse(&*bytes).map_err(|e| bad(format!("not a static library: {e}")))?;
        if archive.is_thin() {
            return Err(bad("thin archives (members kept in their own files) are not supported".into()));
        }
        let mut members = Vec::new();
        let mut by_offset = FxHashMap::default();
        for member in archive.members() {
            let member = member.map_err(|e| bad(format!("malformed member: {e}")))?;
            let (start, size) = member.file_range();
            let range = usize::try_from(start).ok().zip(usize::try_from(size).ok()).map(|(s, n)| s..s + n);
            let Some(range) = range.filter(|r| r.end <= bytes.len()) else {
                return Err(bad("a member runs past the end of the file".into()));
            };
            by_offset.insert(start, members.len());
            members.push((format!("{name}({})", String::from_utf8_lossy(member.name())), range));
        }
        let mut index: FxHashMap<Box<str>, usize> = FxHashMap::default();
        match archive.symbols().map_err(|e| bad(format!("malformed symbol index: {e}")))? {
            Some(symbols) => {
                for symbol in symbols {
                    let symbol = symbol.map_err(|e| bad(format!("malformed symbol index: {e}")))?;
                    let member = archive.member(symbol.offset()).map_err(|e| bad(format!("symbol index: {e}")))?;
                    let Some(&m) = by_offset.get(&member.file_range().0) else { continue };
                    let Ok(sym) = std::str::from_utf8(symbol.name()) else { continue };
                    index.entry(sym.into()).or_insert(m);
                }
            }
            None => {
                // No index: what each member that parses as an object defines.
                for (m, (member, range)) in members.iter().enumerate() {
                    let Ok(graph) = jit_link::interface_graph_from_elf_object(member, &bytes[range.clone()]) else {
                        continue;
                    };
                    for (_, s) in graph.symbols() {
                        if s.is_defined() && s.scope() != jit_link::Scope::Local {
                            if let Some(sym) = s.name() {
                                index.entry(sym.as_str().into()).or_insert(m);
                            }
                        }
                    }
                }
            }
        }
        Ok(StaticLibrary { name: name.to_string(), bytes, members, index })
    }

    /// The library's path, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each member's name and bytes.
    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members.iter().map(|(name, range)| (name.as_str(), &self.bytes[range.clone()]))
    }
}

/// Adds a static library's members to the dylib it is attached to when a lookup needs a
/// symbol they define (attach it before generators of shared libraries and the process,
/// as a static linker searches a library named before them first).
pub struct StaticLibraryGenerator {
    library: StaticLibrary,
    layer: ObjectLinkingLayer,
    /// Members added so far.
    added: Mutex<Vec<bool>>,
}

impl StaticLibraryGenerator {
    pub fn new(layer: &ObjectLinkingLayer, library: StaticLibrary) -> StaticLibraryGenerator {
        let added = Mutex::new(vec![false; library.members.len()]);
        StaticLibraryGenerator { library, layer: layer.clone(), added }
    }
}

impl DefinitionGenerator for StaticLibraryGenerator {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        _kind: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    ) {
        let wanted: Vec<usize> = {
            let mut added = self.added.lock();
            let mut wanted = Vec::new();
            for (name, _) in names {
                if let Some(&m) = self.library.index.get(name.as_str()) {
                    if !std::mem::replace(&mut added[m], true) {
                        wanted.push(m);
                    }
                }
            }
            wanted
        };
        for m in wanted {
            let (member, range) = &self.library.members[m];
            let bytes: Arc<[u8]> = Arc::from(&self.library.bytes[range.clone()]);
            if let Err(e) = self.layer.add(dylib, member, bytes) {
                return done.finish(Err(Error::msg(format!("{member}: {e}"))));
            }
        }
        done.finish(Ok(()));
    }
}

/// The C compiler's runtime library (`libgcc.a`, or compiler-rt's builtins without GCC),
/// for the end of a dylib's search order, as a native link searches it after every library:
/// what compiled code calls but no shared library exports under a name `dlsym` finds. Clang
/// emits calls to `__cpu_indicator_init` and reads of `__cpu_model` and `__cpu_features2` for
/// `__builtin_cpu_supports`, `__builtin_cpu_is` and function multiversioning; `libgcc_s` has
/// the first two only under an old symbol version, the third not at all.
///
/// The library is read on the first lookup that reaches the generator for a name that starts
/// with `__` (as everything it defines does), and never before.
pub fn compiler_runtime_generator(layer: &ObjectLinkingLayer) -> OnDemandGenerator {
    let layer = layer.clone();
    OnDemandGenerator::new(
        |name| name.starts_with("__"),
        move || {
            let path = crate::toolchain::compiler_runtime_library()
                .ok_or_else(|| Error::msg("no libgcc.a or compiler-rt builtins library on this machine"))?;
            let name = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| Error::msg(format!("cannot read '{name}': {e}")))?;
            let library = StaticLibrary::parse(&name, bytes)?;
            Ok(Box::new(StaticLibraryGenerator::new(&layer, library)) as Box<dyn DefinitionGenerator>)
        },
    )
}
