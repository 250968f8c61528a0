//! The TLS passes: `tls_index` entries for TLSGD/TLSLD, TLS descriptors for GOTPC32_TLSDESC,
//! exported `tls_index`es for the graph's thread-local symbols, and the TLS image captured
//! after fixups.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use jit_mem::{FinalizeAction, Prot};
use parking_lot::Mutex;

use super::runtime::{self, INDIRECT_MODULE, TlsModule};
use crate::{Edge, EdgeKind, LinkError, LinkGraph, Scope, SectionKind, SymbolDef, SymbolId};
use jit_mem::TargetAddr;

/// The section holding `tls_index` entries and descriptors.
pub const TLS_INFO_SECTION: &str = "$__TLSINFO";
/// The name JIT'd code calls; bound to [`runtime::tls_get_addr`].
pub const TLS_RUNTIME_SYMBOL: &str = "__tls_get_addr";

/// A graph's TLS module: reserved at layout, installed at finalize.
pub(crate) struct TlsImage {
    pub(crate) module: Option<TlsModule>,
    pub(crate) size: u64,
    pub(crate) align: u64,
}

fn is_tls_data(graph: &LinkGraph, sym: SymbolId) -> bool {
    match graph.symbol(sym).map(|s| s.def()) {
        Some(SymbolDef::Defined { block, .. }) => graph
            .block(block)
            .and_then(|b| graph.section(b.section()))
            .is_some_and(|s| s.kind() == SectionKind::ThreadLocal),
        _ => false,
    }
}

/// Lowers TLSGD/TLSLD requests to `Delta32` edges to `tls_index` entries, and
/// GOTPC32_TLSDESC ones to TLS descriptors {resolver, &`tls_index`} (`super::descriptor`),
/// makes each exported thread-local symbol name a `tls_index` of its variable, and binds
/// `__tls_get_addr` to orcjit's runtime. A post-prune pass; run it before the GOT/PLT
/// builder (so calls to `__tls_get_addr` get stubs).
///
/// The address of an exported thread-local symbol is thus that of its `tls_index`; a graph
/// that refers to another graph's variable builds an indirect index pointing at it.
pub fn lower_tls(graph: &mut LinkGraph) -> Result<(), LinkError> {
    if let Some(sym) = graph.find_symbol(TLS_RUNTIME_SYMBOL) {
        if graph.symbol(sym).is_some_and(|s| s.is_external()) {
            graph.make_absolute(sym, runtime::tls_get_addr_address())?;
            graph.set_scope(sym, Scope::Local)?;
        }
    }
    let mut info: Option<crate::SectionId> = graph.section_by_name(TLS_INFO_SECTION);
    let mut section = |graph: &mut LinkGraph| -> crate::SectionId {
        *info.get_or_insert_with(|| graph.add_section(TLS_INFO_SECTION, Prot::R))
    };

    // Exported thread-local definitions: the name moves to a `tls_index`; edges of this graph
    // keep pointing at the variable through an anonymous alias.
    let exported: Vec<SymbolId> = graph
        .symbols()
        .filter(|(_, s)| s.is_defined() && s.scope() != Scope::Local && s.name().is_some())
        .map(|(id, _)| id)
        .filter(|&id| is_tls_data(graph, id))
        .collect();
    let mut alias_of: HashMap<SymbolId, SymbolId> = HashMap::default();
    for sym in exported {
        let Some(s) = graph.symbol(sym) else { continue };
        let (SymbolDef::Defined { block, offset }, size) = (s.def(), s.size()) else {
            continue;
        };
        let alias = graph.add_anonymous_symbol(block, offset, size, false, false)?;
        graph.set_thread_local(alias, true);
        alias_of.insert(sym, alias);
        let sec = section(graph);
        let (index, _) = two_words(graph, sec, [Word::Module, Word::Edge(EdgeKind::DtpOffset64, alias)])?;
        graph.make_defined(sym, index, 0)?;
        graph.set_thread_local(sym, true);
    }
    if !alias_of.is_empty() {
        for id in graph.block_ids() {
            if let Some(b) = graph.block_mut(id) {
                for e in b.edges_mut() {
                    if let Some(&alias) = alias_of.get(&e.target) {
                        e.target = alias;
                    }
                }
            }
        }
    }

    let module_base = graph.find_symbol(TLS_MODULE_BASE).filter(|&s| graph.symbol(s).is_some_and(|s| s.is_external()));
    let mut entries = Entries::default();
    for id in graph.block_ids() {
        let count = graph.block(id).map(|b| b.edges().len()).unwrap_or(0);
        for i in 0..count {
            let Some(edge) = graph.block(id).and_then(|b| b.edges().get(i).copied()) else {
                continue;
            };
            let entry = match edge.kind {
                EdgeKind::RequestTlsIndexAndTransformToDelta32 => {
                    entries.index_of(graph, &mut section, edge.target, "R_X86_64_TLSGD", id, edge.offset)?
                }
                EdgeKind::RequestTlsModuleIndexAndTransformToDelta32 => entries.module_index(graph, &mut section)?,
                EdgeKind::RequestTlsDescriptorAndTransformToDelta32 => {
                    let base = Some(edge.target) == module_base;
                    entries.descriptor_of(graph, &mut section, edge.target, base, id, edge.offset)?
                }
                _ => continue,
            };
            if let Some(e) = graph.block_mut(id).and_then(|b| b.edges_mut().get_mut(i)) {
                e.kind = EdgeKind::Delta32;
                e.target = entry;
            }
        }
    }
    // The static linker defines `_TLS_MODULE_BASE_` at the start of the TLS segment; here its
    // descriptor stands for it, and nothing is left to look up.
    if let Some(base) = module_base {
        graph.make_absolute(base, TargetAddr(0))?;
        graph.set_scope(base, Scope::Local)?;
    }
    Ok(())
}

/// The name local-dynamic code with TLS descriptors asks a descriptor of: its module's block.
const TLS_MODULE_BASE: &str = "_TLS_MODULE_BASE_";

/// The `tls_index` entries and descriptors made for a graph, one per target.
#[derive(Default)]
struct Entries {
    /// Per variable, its `tls_index` {module, offset} (general-dynamic, and descriptors).
    indices: HashMap<SymbolId, SymbolId>,
    /// The graph's module's `tls_index` {module, 0} (local-dynamic).
    module: Option<SymbolId>,
    /// Per variable (or `_TLS_MODULE_BASE_`), its descriptor {resolver, &tls_index}.
    descriptors: HashMap<SymbolId, SymbolId>,
}

impl Entries {
    /// The `tls_index` of `target`, made on first use: of this graph's module for its own
    /// variables, an indirect one (holding the address of the defining graph's) for another's.
    /// `what` (a relocation) at `block`+`offset` names the use in the error for a target that
    /// is not thread-local.
    fn index_of(
        &mut self,
        graph: &mut LinkGraph,
        section: &mut impl FnMut(&mut LinkGraph) -> crate::SectionId,
        target: SymbolId,
        what: &str,
        block: crate::BlockId,
        offset: u64,
    ) -> Result<SymbolId, LinkError> {
        if let Some(&e) = self.indices.get(&target) {
            return Ok(e);
        }
        let sec = section(graph);
        let words = if is_tls_data(graph, target) {
            [Word::Module, Word::Edge(EdgeKind::DtpOffset64, target)]
        } else if graph.symbol(target).is_some_and(|s| s.is_external()) {
            [Word::Value(INDIRECT_MODULE), Word::Edge(EdgeKind::Pointer64, target)]
        } else {
            return Err(LinkError::Tls {
                object: graph.name().to_string(),
                what: format!(
                    "{what} at {} names '{}', which is not thread-local data",
                    graph.describe_location(block, offset),
                    graph.describe_symbol(target)
                ),
            });
        };
        let (_, e) = two_words(graph, sec, words)?;
        self.indices.insert(target, e);
        Ok(e)
    }

    /// The TLS descriptor {resolver, &`tls_index`} of `target` (of the graph's module if
    /// `module_base`: `_TLS_MODULE_BASE_`), made on first use; `block`+`offset` is its use.
    fn descriptor_of(
        &mut self,
        graph: &mut LinkGraph,
        section: &mut impl FnMut(&mut LinkGraph) -> crate::SectionId,
        target: SymbolId,
        module_base: bool,
        block: crate::BlockId,
        offset: u64,
    ) -> Result<SymbolId, LinkError> {
        if let Some(&d) = self.descriptors.get(&target) {
            return Ok(d);
        }
        let index = if module_base {
            self.module_index(graph, section)?
        } else {
            self.index_of(graph, section, target, "R_X86_64_GOTPC32_TLSDESC", block, offset)?
        };
        let resolver = super::descriptor::resolver_address()
            .map_err(|what| LinkError::Tls { object: graph.name().to_string(), what })?;
        let sec = section(graph);
        let (_, me) = two_words(graph, sec, [Word::Value(resolver), Word::Edge(EdgeKind::Pointer64, index)])?;
        self.descriptors.insert(target, me);
        Ok(me)
    }

    /// The graph's module's `tls_index` {module, 0}, made on first use.
    fn module_index(
        &mut self,
        graph: &mut LinkGraph,
        section: &mut impl FnMut(&mut LinkGraph) -> crate::SectionId,
    ) -> Result<SymbolId, LinkError> {
        if let Some(e) = self.module {
            return Ok(e);
        }
        let sec = section(graph);
        let (_, me) = two_words(graph, sec, [Word::Module, Word::Value(0)])?;
        self.module = Some(me);
        Ok(me)
    }
}

/// A word of a [`two_words`] entry.
enum Word {
    /// A constant.
    Value(u64),
    /// The graph's TLS module id.
    Module,
    /// An edge's value.
    Edge(EdgeKind, SymbolId),
}

/// A two-word entry (a `tls_index`, or a TLS descriptor) in `section`, and the symbol at its
/// start.
fn two_words(
    graph: &mut LinkGraph,
    section: crate::SectionId,
    words: [Word; 2],
) -> Result<(crate::BlockId, SymbolId), LinkError> {
    let mut content = vec![0; 16];
    for (i, word) in words.iter().enumerate() {
        if let Word::Value(v) = word {
            content[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    let block = graph.add_content_block(section, content, 8, 0)?;
    let me = graph.add_anonymous_symbol(block, 0, 16, false, false)?;
    for (i, word) in words.into_iter().enumerate() {
        let offset = 8 * i as u64;
        match word {
            Word::Value(_) => {}
            Word::Module => graph.add_edge(block, Edge::new(EdgeKind::TlsModuleId, offset, me, 0))?,
            Word::Edge(kind, target) => graph.add_edge(block, Edge::new(kind, offset, target, 0))?,
        }
    }
    Ok((block, me))
}

/// Captures the fixed-up TLS image and queues its installation as a finalize action (and
/// its removal at deallocation). A post-fixup pass.
pub fn capture_tls_template(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let Some(tls) = graph.tls.as_mut() else {
        return Ok(());
    };
    let Some(module) = tls.module.take() else {
        return Ok(());
    };
    let (size, align) = (tls.size, tls.align);
    let mut image = vec![0u8; size as usize];
    for (section, s) in graph.sections() {
        if s.kind() != SectionKind::ThreadLocal {
            continue;
        }
        for block in graph.blocks_in_section(section) {
            let Some(b) = graph.block(block) else { continue };
            let start = b.addr().0 as usize;
            let bytes = b.bytes();
            if let Some(dst) = image.get_mut(start..start + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
    }
    let object = graph.name().to_string();
    let installed: Arc<Mutex<Option<runtime::InstalledTlsModule>>> = Arc::new(Mutex::new(None));
    let keep = installed.clone();
    let pending = Mutex::new(Some((module, image)));
    graph.add_finalize_action(FinalizeAction::new(
        move || {
            let Some((module, image)) = pending.lock().take() else {
                return Ok(());
            };
            let handle = module.install(image, align).map_err(|e| format!("{object}: {e}"))?;
            *keep.lock() = Some(handle);
            Ok(())
        },
        move || {
            installed.lock().take();
            Ok(())
        },
    ));
    Ok(())
}
