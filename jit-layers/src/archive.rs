//! Static libraries (`.a`): a member is linked only once a lookup needs a symbol it defines,
//! as a static linker pulls archive members (LLVM's `StaticLibraryDefinitionGenerator`). Two
//! members defining one name do not clash unless both are needed; a member nothing needs is
//! never parsed past the archive's index, and may refer to symbols that exist nowhere.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use jit_core::{
    DefinitionGenerator, Error, FxHashMap, GeneratorDone, JitDylib, LookupKind, OnDemandGenerator, Result,
    SymbolLookupFlags, SymbolName,
};
use object::read::archive::ArchiveFile;
use parking_lot::Mutex;

use crate::{ObjectBytes, ObjectLinkingLayer};

/// A parsed static library: its members and which member defines each symbol.
pub struct StaticLibrary {
    name: String,
    bytes: ObjectBytes,
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
    pub fn parse(name: &str, bytes: impl Into<ObjectBytes>) -> Result<StaticLibrary> {
        let bytes: ObjectBytes = bytes.into();
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

    fn member_bytes(&self, m: usize) -> &[u8] {
        &self.bytes[self.members[m].1.clone()]
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
    /// Where bitcode members go (see [`set_bitcode_sink`](Self::set_bitcode_sink)).
    bitcode: OnceLock<BitcodeSink>,
    /// Made when a member taken first defines or needs a thread-local variable (see
    /// [`tls_group`](Self::tls_group)).
    tls_groups: OnceLock<TlsGroups>,
}

/// A library's members grouped by their thread-local ties (see
/// [`StaticLibraryGenerator::tls_group`]).
struct TlsGroups {
    /// Each member's [`jit_link::link_ties`], read for the grouping and kept for taking.
    ties: Vec<Ties>,
    /// Each member's group, an index in `groups`.
    group_of: Vec<usize>,
    groups: Vec<Vec<usize>>,
}

/// Adds a static library's LLVM bitcode member (named, with its bytes) to a dylib as an IR
/// module: what a JIT with an IR layer gives [`StaticLibraryGenerator::set_bitcode_sink`].
pub type BitcodeSink = Arc<dyn Fn(&JitDylib, String, Arc<[u8]>) -> Result<()> + Send + Sync>;

/// Objects to link, each with its [`jit_link::link_ties`].
pub(crate) type TiedObjects = Vec<TiedObject>;
pub(crate) type TiedObject = ((String, ObjectBytes), Ties);
pub(crate) type Ties = (Vec<String>, Vec<String>);

impl StaticLibraryGenerator {
    pub fn new(layer: &ObjectLinkingLayer, library: StaticLibrary) -> StaticLibraryGenerator {
        let added = Mutex::new(vec![false; library.members.len()]);
        StaticLibraryGenerator {
            library,
            layer: layer.clone(),
            added,
            bitcode: OnceLock::new(),
            tls_groups: OnceLock::new(),
        }
    }

    /// Where the library's LLVM bitcode members go (those of an archive of an `-flto` build,
    /// which `llvm-ar` indexes as it indexes objects): once set (later calls change nothing),
    /// a member that is bitcode is added through `sink`, as a static link with LTO compiles
    /// the members it pulls. Without one, such a member fails the lookup that needs it, with
    /// an error that says it is bitcode.
    pub fn set_bitcode_sink(&self, sink: BitcodeSink) {
        let _ = self.bitcode.set(sink);
    }

    /// The members not added yet that define the thread-local variables named by `needs`
    /// (keys of [`jit_link::link_ties`]; others are ignored), with those they need in turn:
    /// marked added, and returned to be linked in one graph with the objects that need them.
    /// Objects whose code reaches a variable with the local-dynamic model must be in its TLS
    /// module, and a static linker pulls the member that defines it for the undefined
    /// reference anyway.
    pub(crate) fn take_tied(&self, needs: &[String]) -> TiedObjects {
        let mut added = self.added.lock();
        let first: Vec<usize> = needs.iter().filter_map(|key| self.unadded_definer(&added, key)).collect();
        self.take_members(&mut added, first)
    }

    /// The object member that defines `name` and is not added yet, with its bytes: what a
    /// static linker would pull for an undefined reference to it (a bitcode member is left to
    /// the generator, which has it compiled when a lookup needs it).
    pub(crate) fn unadded_object_defining(&self, name: &str) -> Option<(usize, &[u8])> {
        let m = *self.library.index.get(name)?;
        let bytes = self.library.member_bytes(m);
        (!self.added.lock()[m] && !jit_link::is_llvm_bitcode(bytes)).then_some((m, bytes))
    }

    /// Takes member `m` to be linked now, with the members it must share a graph with (see
    /// [`take_members`](Self::take_members)), unless it is added already (see
    /// [`unadded_object_defining`](Self::unadded_object_defining)).
    pub(crate) fn take(&self, m: usize) -> TiedObjects {
        self.take_members(&mut self.added.lock(), vec![m])
    }

    /// The members that must be linked in one graph with member `m`: those tied to it,
    /// transitively, by code that reaches another's thread-local variables with the
    /// local-dynamic model (see [`jit_link::link_ties`]; a static linker makes one TLS module
    /// of them all). The codegen units of one Rust crate are tied so when its
    /// `thread_local!`s are used across them. Found over the whole library, the first time a
    /// member with thread-local variables is taken; a library without any is never read so.
    fn tls_group(&self, m: usize) -> &[usize] {
        let found = self.tls_groups.get_or_init(|| {
            let ties: Vec<Ties> =
                (0..self.library.members.len()).map(|m| jit_link::link_ties(self.library.member_bytes(m))).collect();
            // Only thread-local ties group members: a section's bounds span what a link pulls.
            let tls = |keys: &[String]| keys.iter().filter(|k| jit_link::tls_tie_name(k).is_some()).cloned().collect();
            let tls_ties: Vec<Ties> = ties.iter().map(|(defines, needs)| (tls(defines), tls(needs))).collect();
            let groups = jit_link::enclosure_groups(&tls_ties);
            let mut group_of = vec![0; ties.len()];
            for (g, members) in groups.iter().enumerate() {
                for &m in members {
                    group_of[m] = g;
                }
            }
            TlsGroups { ties, group_of, groups }
        });
        &found.groups[found.group_of[m]]
    }

    /// The object member that defines the thread-local variable of tie `key`, if it is not
    /// added (a bitcode member has no TLS module of its own to join).
    fn unadded_definer(&self, added: &[bool], key: &str) -> Option<usize> {
        let name = jit_link::tls_tie_name(key)?;
        let m = self.library.index.get(name).copied().filter(|&m| !added[m])?;
        (!jit_link::is_llvm_bitcode(self.library.member_bytes(m))).then_some(m)
    }

    /// Marks `members` added, with the members they must share a graph with (see
    /// [`tls_group`](Self::tls_group)), and returns them all in that order.
    fn take_members(&self, added: &mut [bool], members: Vec<usize>) -> TiedObjects {
        let mut queue = members;
        let mut taken = Vec::new();
        while let Some(m) = queue.pop() {
            if std::mem::replace(&mut added[m], true) {
                continue;
            }
            let ties = match self.tls_groups.get() {
                Some(found) => found.ties[m].clone(),
                None => jit_link::link_ties(self.library.member_bytes(m)),
            };
            // (A bitcode member has no ties, so it is alone in its group.)
            if ties.0.iter().chain(&ties.1).any(|key| jit_link::tls_tie_name(key).is_some()) {
                queue.extend(self.tls_group(m).iter().copied().filter(|&o| !added[o]));
            }
            taken.push((m, ties));
        }
        taken.into_iter().map(|(m, ties)| self.member_object(m, ties)).collect()
    }

    /// Member `m` as an object to link (named, its bytes shared with the library's), with its
    /// `ties`.
    fn member_object(&self, m: usize, ties: Ties) -> TiedObject {
        let (name, range) = &self.library.members[m];
        let bytes = self.library.bytes.slice(range.clone()).expect("member ranges are checked by parse");
        ((name.clone(), bytes), ties)
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
        let taken = {
            let mut added = self.added.lock();
            let mut wanted: Vec<usize> = names
                .iter()
                .filter_map(|(name, _)| self.library.index.get(name.as_str()).copied())
                .filter(|&m| !added[m])
                .collect();
            // Popped from the end: the first wanted is taken first.
            wanted.reverse();
            self.take_members(&mut added, wanted)
        };
        let taken = match self.bitcode.get() {
            Some(sink) => {
                let (bitcode, objects): (TiedObjects, TiedObjects) =
                    taken.into_iter().partition(|((_, bytes), _)| jit_link::is_llvm_bitcode(bytes));
                for ((member, bytes), _) in bitcode {
                    // (LLVM compiles from a buffer of its own.)
                    if let Err(e) = sink(dylib, member.clone(), Arc::from(&*bytes)) {
                        return done.finish(Err(Error::msg(format!("{member}: {e}"))));
                    }
                }
                objects
            }
            None => taken,
        };
        if taken.is_empty() {
            return done.finish(Ok(()));
        }
        let what = taken.iter().map(|((member, _), _)| member.as_str()).collect::<Vec<_>>().join(" + ");
        let (objects, ties): (Vec<_>, Vec<_>) = taken.into_iter().unzip();
        let result = self.layer.add_objects_grouped(dylib, objects, &ties);
        done.finish(result.map_err(|e| Error::msg(format!("{what}: {e}"))));
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
            // Mapped: a package manager replaces the file by renaming a new one over it, which
            // leaves the mapped pages as they were.
            let bytes = ObjectBytes::map_file(&path).map_err(|e| Error::msg(format!("cannot read '{name}': {e}")))?;
            let library = StaticLibrary::parse(&name, bytes)?;
            Ok(Box::new(StaticLibraryGenerator::new(&layer, library)) as Box<dyn DefinitionGenerator>)
        },
    )
}
