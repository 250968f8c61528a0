//! The object as a whole: header checks, then sections, symbols and relocations in turn.

use rustc_hash::FxHashMap as HashMap;

use object::LittleEndian;
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, SectionTable, SymbolTable};

use crate::{BlockId, LinkError, LinkGraph, SectionId, SymbolId};

pub(super) type Elf = FileHeader64<LittleEndian>;

/// Builds a link graph from the bytes of an ELF x86-64 relocatable object. `name` names the
/// object in errors (and becomes the graph's name).
///
/// Every allocated section becomes one block (sections of one name share a graph section);
/// debug and other non-allocated sections are skipped; relocations become edges. Malformed
/// input is an error, never a panic.
pub fn graph_from_elf_object(name: &str, data: &[u8]) -> Result<LinkGraph, LinkError> {
    let _span = tracing::debug_span!("elf_front_end", object = name).entered();
    let mut builder = Builder::new(name, data, Contents::Copied)?;
    builder.sections()?;
    builder.symbols()?;
    builder.relocations()?;
    Ok(builder.graph)
}

/// The graph [`graph_from_elf_object`] builds, less what only linking needs: every block is
/// zero-filled (of its section's size) and there are no edges. Its sections and symbols are
/// the same, names, scopes, linkages and flags included, so it tells what the object defines
/// (a materialization unit's interface) for a fraction of the cost: no section contents are
/// copied and no relocations are read, which LLVM's `getObjectFileInterface` skips too.
/// A malformed relocation is found only when the object is linked.
pub fn interface_graph_from_elf_object(name: &str, data: &[u8]) -> Result<LinkGraph, LinkError> {
    let _span = tracing::debug_span!("elf_interface", object = name).entered();
    let mut builder = Builder::new(name, data, Contents::Sized)?;
    builder.sections()?;
    builder.symbols()?;
    Ok(builder.graph)
}

/// [`graph_from_elf_object`] for several objects linked into one graph, as `ld -r` would
/// combine them (see [`LinkGraph::absorb`]): for objects whose `__start_X` / `__stop_X` must
/// enclose section `X` of them all. `name` names the graph; errors name the object. One
/// object's graph is its own, as [`graph_from_elf_object`] builds it.
pub fn graph_from_elf_objects(name: &str, objects: &[(&str, &[u8])]) -> Result<LinkGraph, LinkError> {
    combined(name, objects, graph_from_elf_object)
}

/// [`interface_graph_from_elf_object`] for the objects [`graph_from_elf_objects`] combines.
pub fn interface_graph_from_elf_objects(name: &str, objects: &[(&str, &[u8])]) -> Result<LinkGraph, LinkError> {
    combined(name, objects, interface_graph_from_elf_object)
}

fn combined(
    name: &str,
    objects: &[(&str, &[u8])],
    build: fn(&str, &[u8]) -> Result<LinkGraph, LinkError>,
) -> Result<LinkGraph, LinkError> {
    if let [(object, data)] = objects {
        return build(object, data);
    }
    let mut graph = LinkGraph::new(name);
    for (object, data) in objects {
        graph.absorb(build(object, data)?)?;
    }
    Ok(graph)
}

/// What a block made for an ELF section holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Contents {
    /// A copy of the section's bytes.
    Copied,
    /// Zero fill of the section's size (the bytes are still bounds-checked against the file).
    Sized,
}

/// State while one object is read.
pub(super) struct Builder<'d> {
    pub(super) data: &'d [u8],
    pub(super) endian: LittleEndian,
    pub(super) sections: SectionTable<'d, Elf>,
    pub(super) symtab: SymbolTable<'d, Elf>,
    pub(super) graph: LinkGraph,
    /// Per ELF section index: the block made for it.
    pub(super) section_blocks: Vec<Option<BlockId>>,
    /// Per ELF section index: its name, for errors.
    pub(super) section_names: Vec<String>,
    /// Per ELF section index: whether it is a member of a COMDAT group.
    pub(super) in_comdat: Vec<bool>,
    /// Per ELF symbol index: the graph symbol made for it.
    pub(super) symbols: Vec<Option<SymbolId>>,
    /// Graph sections by (name, prot, kind), so same-named ELF sections share one.
    /// The graph's section for each (name, protection, kind, large) of the object's.
    pub(super) graph_sections: HashMap<(String, jit_mem::Prot, crate::SectionKind, bool), SectionId>,
    /// Per ELF section index: the anonymous symbol at its start (for `STT_SECTION`).
    pub(super) section_symbols: HashMap<usize, SymbolId>,
    pub(super) common: Option<SectionId>,
    pub(super) contents: Contents,
}

impl<'d> Builder<'d> {
    fn new(name: &str, data: &'d [u8], contents: Contents) -> Result<Builder<'d>, LinkError> {
        let malformed = |what: String| LinkError::Malformed { object: name.to_string(), what };
        if super::is_llvm_bitcode(data) {
            return Err(LinkError::Unsupported {
                object: name.to_string(),
                what: "LLVM bitcode (an -flto build's), not an ELF object: it must be compiled first, as \
                       `orcjit run` does (`orcjit link` hands a program with bitcode inputs to it)"
                    .into(),
            });
        }
        let header = Elf::parse(data).map_err(|e| malformed(format!("not a 64-bit ELF file: {e}")))?;
        let endian = header.endian().map_err(|e| malformed(e.to_string()))?;
        if header.e_machine(endian) != elf::EM_X86_64 {
            return Err(LinkError::Unsupported {
                object: name.to_string(),
                what: format!("machine {:#x} (only x86-64 is supported)", header.e_machine(endian).0),
            });
        }
        if header.e_type(endian) != elf::ET_REL {
            return Err(LinkError::Unsupported {
                object: name.to_string(),
                what: format!("ELF type {} (only relocatable objects, ET_REL, are linked)", header.e_type(endian).0),
            });
        }
        let sections = header.sections(endian, data).map_err(|e| malformed(format!("section headers: {e}")))?;
        let symtab =
            sections.symbols(endian, data, elf::SHT_SYMTAB).map_err(|e| malformed(format!("symbol table: {e}")))?;
        // GCC's `-flto` objects hold GIMPLE in `.gnu.lto_*` sections and no machine code; the
        // symbol marks them. Linked as they are, they define nothing, and the program's `main`
        // was merely "not found".
        if symtab.iter().any(|sym| symtab.symbol_name(endian, sym).is_ok_and(|n| n == b"__gnu_lto_slim")) {
            return Err(LinkError::Unsupported {
                object: name.to_string(),
                what: "GCC LTO bytecode (a slim object of gcc -flto: GIMPLE, no machine code, which only \
                       GCC's linker plugin compiles); build it without -flto, or with -ffat-lto-objects"
                    .to_string(),
            });
        }
        let count = sections.len();
        let mut section_names = Vec::with_capacity(count);
        for (_, sh) in sections.enumerate() {
            let name = sections
                .section_name(endian, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .map_err(|e| malformed(format!("section name: {e}")))?;
            section_names.push(name);
        }
        Ok(Builder {
            data,
            endian,
            sections,
            symbols: vec![None; symtab.len()],
            symtab,
            graph: LinkGraph::new(name),
            section_blocks: vec![None; count],
            section_names,
            in_comdat: vec![false; count],
            graph_sections: HashMap::default(),
            section_symbols: HashMap::default(),
            common: None,
            contents,
        })
    }

    pub(super) fn object(&self) -> String {
        self.graph.name().to_string()
    }

    pub(super) fn malformed(&self, what: impl Into<String>) -> LinkError {
        LinkError::Malformed { object: self.object(), what: what.into() }
    }

    pub(super) fn section_name(&self, index: usize) -> String {
        self.section_names.get(index).cloned().unwrap_or_else(|| format!("section #{index}"))
    }
}
