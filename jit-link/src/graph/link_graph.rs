//! The graph itself: arenas of sections, blocks and symbols, and the operations passes use.
//!
//! Ids stay valid until their item is removed; an id of a removed item is answered with
//! `None` or an [`LinkError::InvalidGraph`], never a panic.

use rustc_hash::FxHashMap as HashMap;

use jit_mem::{FinalizeAction, Prot, SegmentLifetime, TargetAddr};
use slotmap::SlotMap;

use crate::init_fini::InitFini;
use crate::tls::TlsImage;
use crate::{
    Block, BlockContent, BlockId, Edge, LinkError, Linkage, Scope, Section, SectionId, SectionKind, Symbol, SymbolDef,
    SymbolId, SymbolName,
};

/// One relocatable object as a graph: what the linker lays out, fixes up and hands to memory.
///
/// Contract: names of non-local symbols are unique in a graph (the graph refuses a second
/// one). A graph is built by a front end (or by hand), rewritten by passes, and consumed by
/// [`crate::link`].
pub struct LinkGraph {
    name: String,
    sections: SlotMap<SectionId, Section>,
    blocks: SlotMap<BlockId, Block>,
    symbols: SlotMap<SymbolId, Symbol>,
    by_name: HashMap<SymbolName, SymbolId>,
    next_section: u32,
    next_block: u64,
    /// For a graph that absorbed others: the ordinal of the first block of each (see
    /// [`member_of`](Self::member_of)).
    member_starts: Vec<u64>,
    pub(crate) finalize_actions: Vec<FinalizeAction>,
    pub(crate) init_fini: InitFini,
    pub(crate) tls: Option<TlsImage>,
    pub(crate) dso_handle: Option<SymbolId>,
}

impl std::fmt::Debug for LinkGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkGraph")
            .field("name", &self.name)
            .field("sections", &self.sections.len())
            .field("blocks", &self.blocks.len())
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl LinkGraph {
    /// An empty graph; `name` (usually the object's file name) appears in every error.
    pub fn new(name: impl Into<String>) -> LinkGraph {
        LinkGraph {
            name: name.into(),
            sections: SlotMap::with_key(),
            blocks: SlotMap::with_key(),
            symbols: SlotMap::with_key(),
            by_name: HashMap::default(),
            next_section: 0,
            next_block: 0,
            member_starts: Vec::new(),
            finalize_actions: Vec::new(),
            init_fini: InitFini::default(),
            tls: None,
            dso_handle: None,
        }
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn invalid(&self, what: impl Into<String>) -> LinkError {
        LinkError::InvalidGraph { object: self.name.clone(), what: what.into() }
    }

    // ---- sections ----

    /// Adds a regular section.
    pub fn add_section(&mut self, name: impl Into<String>, prot: Prot) -> SectionId {
        self.add_section_of_kind(name, prot, SectionKind::Regular)
    }

    /// Adds a section of a given kind.
    pub fn add_section_of_kind(&mut self, name: impl Into<String>, prot: Prot, kind: SectionKind) -> SectionId {
        let ordinal = self.next_section;
        self.next_section += 1;
        self.sections.insert(Section {
            name: name.into(),
            prot,
            lifetime: SegmentLifetime::Standard,
            kind,
            ordinal,
            large: false,
        })
    }

    /// A section.
    pub fn section(&self, id: SectionId) -> Option<&Section> {
        self.sections.get(id)
    }

    /// A section, to change.
    pub fn section_mut(&mut self, id: SectionId) -> Option<&mut Section> {
        self.sections.get_mut(id)
    }

    /// The first section with this name.
    pub fn section_by_name(&self, name: &str) -> Option<SectionId> {
        self.sections.iter().filter(|(_, s)| s.name == name).min_by_key(|(_, s)| s.ordinal).map(|(id, _)| id)
    }

    /// Every section, in creation order.
    pub fn sections(&self) -> Vec<(SectionId, &Section)> {
        let mut all: Vec<_> = self.sections.iter().collect();
        all.sort_by_key(|(_, s)| s.ordinal);
        all
    }

    /// Removes a section and every block in it (see [`remove_block`](Self::remove_block)).
    pub fn remove_section(&mut self, id: SectionId) {
        for block in self.blocks_in_section(id) {
            self.remove_block(block);
        }
        self.sections.remove(id);
    }

    // ---- blocks ----

    fn insert_block(
        &mut self,
        section: SectionId,
        content: BlockContent,
        align: u64,
        align_offset: u64,
    ) -> Result<BlockId, LinkError> {
        if !self.sections.contains_key(section) {
            return Err(self.invalid("block added to a section that does not exist"));
        }
        if !align.is_power_of_two() || align_offset >= align {
            return Err(self.invalid(format!(
                "block alignment {align} (offset {align_offset}) is not a power of two above the offset"
            )));
        }
        let ordinal = self.next_block;
        self.next_block += 1;
        Ok(self.blocks.insert(Block {
            section,
            content,
            align,
            align_offset,
            edges: Vec::new(),
            addr: TargetAddr(0),
            ordinal,
        }))
    }

    /// Adds a block of bytes to `section`, aligned so that `addr % align == align_offset`.
    pub fn add_content_block(
        &mut self,
        section: SectionId,
        bytes: Vec<u8>,
        align: u64,
        align_offset: u64,
    ) -> Result<BlockId, LinkError> {
        self.insert_block(section, BlockContent::Bytes(bytes), align, align_offset)
    }

    /// Adds a block of `size` zero bytes to `section`.
    pub fn add_zero_fill_block(
        &mut self,
        section: SectionId,
        size: u64,
        align: u64,
        align_offset: u64,
    ) -> Result<BlockId, LinkError> {
        self.insert_block(section, BlockContent::ZeroFill(size), align, align_offset)
    }

    /// A block.
    pub fn block(&self, id: BlockId) -> Option<&Block> {
        self.blocks.get(id)
    }

    /// A block, to rewrite its content, alignment or edges.
    pub fn block_mut(&mut self, id: BlockId) -> Option<&mut Block> {
        self.blocks.get_mut(id)
    }

    /// Every block (in no particular order).
    pub fn blocks(&self) -> impl Iterator<Item = (BlockId, &Block)> {
        self.blocks.iter()
    }

    /// The ids of every block, to mutate while walking.
    pub fn block_ids(&self) -> Vec<BlockId> {
        self.blocks.keys().collect()
    }

    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks of a section, in layout order.
    pub fn blocks_in_section(&self, section: SectionId) -> Vec<BlockId> {
        let mut found: Vec<(u64, BlockId)> =
            self.blocks.iter().filter(|(_, b)| b.section == section).map(|(id, b)| (b.ordinal, id)).collect();
        found.sort_unstable();
        found.into_iter().map(|(_, id)| id).collect()
    }

    /// Removes a block and every symbol defined in it. Edges elsewhere that still target
    /// those symbols fail the link with an error at fixup time.
    pub fn remove_block(&mut self, id: BlockId) {
        self.remove_blocks(&[id]);
    }

    /// Removes blocks and every symbol defined in them, in one pass over the symbols.
    pub fn remove_blocks(&mut self, ids: &[BlockId]) {
        let mut doomed: slotmap::SecondaryMap<BlockId, ()> = slotmap::SecondaryMap::new();
        for &id in ids {
            if self.blocks.remove(id).is_some() {
                doomed.insert(id, ());
            }
        }
        if doomed.is_empty() {
            return;
        }
        let symbols: Vec<SymbolId> = self
            .symbols
            .iter()
            .filter(|(_, s)| s.block().is_some_and(|b| doomed.contains_key(b)))
            .map(|(sid, _)| sid)
            .collect();
        for sym in symbols {
            self.remove_symbol(sym);
        }
    }

    /// Adds an edge to a block.
    pub fn add_edge(&mut self, block: BlockId, edge: Edge) -> Result<(), LinkError> {
        if !self.symbols.contains_key(edge.target) {
            return Err(self.invalid("edge to a symbol that does not exist"));
        }
        match self.blocks.get_mut(block) {
            Some(b) => {
                b.edges.push(edge);
                Ok(())
            }
            None => Err(self.invalid("edge added to a block that does not exist")),
        }
    }

    /// Splits `block` at the given ascending offsets (each inside the block, none zero):
    /// returns the pieces in order, the first being `block` itself shortened. Symbols and
    /// edges move to the piece that contains them (a symbol at a cut goes to the later piece).
    /// The pieces keep the original's place in the layout order.
    pub fn split_block(&mut self, block: BlockId, cuts: &[u64]) -> Result<Vec<BlockId>, LinkError> {
        let Some(b) = self.blocks.get(block) else {
            return Err(self.invalid("split of a block that does not exist"));
        };
        let size = b.size();
        let mut prev = 0;
        for &cut in cuts {
            if cut <= prev || cut >= size {
                return Err(self.invalid(format!("split of a {size}-byte block at offset {cut:#x}")));
            }
            prev = cut;
        }
        if cuts.is_empty() {
            return Ok(vec![block]);
        }
        let count = cuts.len() as u64 + 1;
        let ordinal = b.ordinal;
        // Make room in the ordinal sequence right after the original.
        for (_, other) in self.blocks.iter_mut() {
            if other.ordinal > ordinal {
                other.ordinal += count - 1;
            }
        }
        self.next_block += count - 1;
        let Some(original) = self.blocks.get_mut(block) else {
            return Err(self.invalid("split of a block that does not exist"));
        };
        let content = std::mem::replace(&mut original.content, BlockContent::ZeroFill(0));
        let mut edges = std::mem::take(&mut original.edges);
        edges.sort_by_key(|e| e.offset);
        let (section, addr) = (original.section, original.addr);
        let mut bounds: Vec<u64> = Vec::with_capacity(cuts.len() + 2);
        bounds.push(0);
        bounds.extend_from_slice(cuts);
        bounds.push(size);
        let mut edges = edges.into_iter().peekable();
        let mut ids: Vec<(u64, BlockId)> = Vec::with_capacity(bounds.len() - 1);
        for (i, w) in bounds.windows(2).enumerate() {
            let (start, end) = (w[0], w[1]);
            let piece_content = match &content {
                BlockContent::Bytes(bytes) => BlockContent::Bytes(bytes[start as usize..end as usize].to_vec()),
                BlockContent::ZeroFill(_) => BlockContent::ZeroFill(end - start),
            };
            let mut piece_edges = Vec::new();
            while let Some(e) = edges.next_if(|e| e.offset < end || end == size) {
                piece_edges.push(Edge { offset: e.offset - start, ..e });
            }
            if i == 0 {
                if let Some(first) = self.blocks.get_mut(block) {
                    first.content = piece_content;
                    first.edges = piece_edges;
                }
                ids.push((start, block));
            } else {
                let id = self.blocks.insert(Block {
                    section,
                    content: piece_content,
                    align: 1,
                    align_offset: 0,
                    edges: piece_edges,
                    addr: addr.offset(start),
                    ordinal: ordinal + i as u64,
                });
                ids.push((start, id));
            }
        }
        for (_, sym) in self.symbols.iter_mut() {
            if let SymbolDef::Defined { block: sb, offset } = sym.def {
                if sb != block {
                    continue;
                }
                let (start, piece) =
                    ids.iter().rev().find(|(start, _)| offset >= *start).copied().unwrap_or((0, block));
                sym.def = SymbolDef::Defined { block: piece, offset: offset - start };
            }
        }
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    // ---- symbols ----

    fn claim_name(&mut self, name: &Option<SymbolName>, scope: Scope) -> Result<(), LinkError> {
        if let (Some(name), true) = (name, scope != Scope::Local) {
            if self.by_name.contains_key(name) {
                return Err(LinkError::DuplicateSymbol { object: self.name.clone(), symbol: name.clone() });
            }
        }
        Ok(())
    }

    fn insert_symbol(&mut self, symbol: Symbol) -> Result<SymbolId, LinkError> {
        self.claim_name(&symbol.name, symbol.scope)?;
        let index = symbol.scope != Scope::Local;
        let name = symbol.name.clone();
        let id = self.symbols.insert(symbol);
        if let (Some(name), true) = (name, index) {
            self.by_name.insert(name, id);
        }
        Ok(id)
    }

    /// Defines a symbol at `offset` in `block` (`offset` may equal the block's size).
    #[allow(clippy::too_many_arguments)]
    pub fn add_defined_symbol(
        &mut self,
        block: BlockId,
        offset: u64,
        name: Option<SymbolName>,
        size: u64,
        linkage: Linkage,
        scope: Scope,
        callable: bool,
        live: bool,
    ) -> Result<SymbolId, LinkError> {
        let Some(b) = self.blocks.get(block) else {
            return Err(self.invalid("symbol defined in a block that does not exist"));
        };
        if offset > b.size() {
            return Err(self.invalid(format!(
                "symbol {} at offset {offset:#x} of a {}-byte block",
                name.as_ref().map(|n| n.as_str()).unwrap_or("<anonymous>"),
                b.size()
            )));
        }
        self.insert_symbol(Symbol {
            name,
            def: SymbolDef::Defined { block, offset },
            size,
            linkage,
            scope,
            callable,
            live,
            thread_local: false,
        })
    }

    /// An anonymous local symbol at `offset` in `block`, for edges to point at.
    pub fn add_anonymous_symbol(
        &mut self,
        block: BlockId,
        offset: u64,
        size: u64,
        callable: bool,
        live: bool,
    ) -> Result<SymbolId, LinkError> {
        self.add_defined_symbol(block, offset, None, size, Linkage::Strong, Scope::Local, callable, live)
    }

    /// The external symbol `name`, added if the graph has no symbol of that name (if it has
    /// one, defined or not, that one is returned). `Linkage::Weak` makes a weak reference.
    pub fn add_external_symbol(&mut self, name: SymbolName, linkage: Linkage) -> SymbolId {
        if let Some(&id) = self.by_name.get(&name) {
            return id;
        }
        let id = self.symbols.insert(Symbol {
            name: Some(name.clone()),
            def: SymbolDef::External { addr: None },
            size: 0,
            linkage,
            scope: Scope::Default,
            callable: false,
            live: false,
            thread_local: false,
        });
        self.by_name.insert(name, id);
        id
    }

    /// Adds a symbol at a fixed address.
    pub fn add_absolute_symbol(
        &mut self,
        name: Option<SymbolName>,
        addr: TargetAddr,
        linkage: Linkage,
        scope: Scope,
        live: bool,
    ) -> Result<SymbolId, LinkError> {
        self.insert_symbol(Symbol {
            name,
            def: SymbolDef::Absolute(addr),
            size: 0,
            linkage,
            scope,
            callable: false,
            live,
            thread_local: false,
        })
    }

    /// A symbol.
    pub fn symbol(&self, id: SymbolId) -> Option<&Symbol> {
        self.symbols.get(id)
    }

    /// A symbol, to change its flags (use the graph's methods for name, scope and definition).
    pub fn symbol_mut(&mut self, id: SymbolId) -> Option<&mut Symbol> {
        self.symbols.get_mut(id)
    }

    /// Every symbol (in no particular order).
    pub fn symbols(&self) -> impl Iterator<Item = (SymbolId, &Symbol)> {
        self.symbols.iter()
    }

    /// The ids of every symbol.
    pub fn symbol_ids(&self) -> Vec<SymbolId> {
        self.symbols.keys().collect()
    }

    /// The non-local symbol called `name`.
    pub fn find_symbol(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    /// Moves every section, block, symbol and edge of `other` into this graph, as a static
    /// linker combines relocatable objects (`ld -r`): sections of one name, kind and
    /// largeness become one (laid out this graph's blocks first; a read-only and a writable
    /// one become writable), and a non-local name means one symbol. A definition takes the
    /// place of an external, a strong definition that of a weak one, the larger of two
    /// common symbols wins, and otherwise the first definition stays; two strong definitions
    /// are a [`LinkError::DuplicateSymbol`] naming `other`. The loser's block stays, for
    /// dead-stripping to drop if nothing else reaches it. Local symbols stay apart. For
    /// graphs fresh from a front end: neither may have been through a pass yet. After an
    /// error this graph is partly combined, to be dropped.
    pub fn absorb(&mut self, other: LinkGraph) -> Result<(), LinkError> {
        let fresh = |g: &LinkGraph| {
            g.finalize_actions.is_empty() && g.init_fini.is_empty() && g.tls.is_none() && g.dso_handle.is_none()
        };
        if !fresh(self) || !fresh(&other) {
            return Err(self.invalid(format!("{} joins this graph after passes ran on one of them", other.name)));
        }
        let LinkGraph { name: other_name, sections, blocks, symbols, .. } = other;

        let mut section_map: HashMap<SectionId, SectionId> = HashMap::default();
        let mut other_sections: Vec<(SectionId, Section)> = sections.into_iter().collect();
        other_sections.sort_by_key(|(_, s)| s.ordinal);
        for (id, s) in other_sections {
            let data = |p: Prot| matches!(p, Prot::R | Prot::RW);
            let same = self.sections.iter_mut().find(|(_, mine)| {
                mine.name == s.name
                    && mine.kind == s.kind
                    && mine.large == s.large
                    && (mine.prot == s.prot || data(mine.prot) && data(s.prot))
            });
            let target = match same {
                Some((mine_id, mine)) => {
                    if mine.prot != s.prot {
                        mine.prot = Prot::RW;
                    }
                    mine_id
                }
                None => {
                    let new = self.add_section_of_kind(s.name, s.prot, s.kind);
                    let mine = &mut self.sections[new];
                    (mine.lifetime, mine.large) = (s.lifetime, s.large);
                    new
                }
            };
            section_map.insert(id, target);
        }

        self.member_starts.push(self.next_block);
        let mut block_map: HashMap<BlockId, BlockId> = HashMap::default();
        let mut other_blocks: Vec<(BlockId, Block)> = blocks.into_iter().collect();
        other_blocks.sort_by_key(|(_, b)| b.ordinal);
        let mut edges: Vec<(BlockId, Vec<Edge>)> = Vec::with_capacity(other_blocks.len());
        let dangling = |what: &str| LinkError::InvalidGraph { object: other_name.clone(), what: what.into() };
        for (id, mut b) in other_blocks {
            let section = *section_map.get(&b.section).ok_or_else(|| dangling("a block of a removed section"))?;
            let new = self.insert_block(
                section,
                std::mem::replace(&mut b.content, BlockContent::ZeroFill(0)),
                b.align,
                b.align_offset,
            )?;
            block_map.insert(id, new);
            edges.push((new, b.edges));
        }

        let mut symbol_map: HashMap<SymbolId, SymbolId> = HashMap::default();
        for (id, mut s) in symbols {
            if let SymbolDef::Defined { block, offset } = s.def {
                let block = *block_map.get(&block).ok_or_else(|| dangling("a symbol in a removed block"))?;
                s.def = SymbolDef::Defined { block, offset };
            }
            let existing = match (&s.name, s.scope) {
                (Some(name), Scope::Default | Scope::Hidden) => self.by_name.get(name).copied(),
                _ => None,
            };
            let mapped = match existing {
                None => self.insert_symbol(s)?,
                Some(mine_id) => {
                    let mine = &self.symbols[mine_id];
                    // The ELF front end gives each common symbol a zero-fill block in `.common`.
                    let common = |sym: &Symbol| {
                        sym.block()
                            .and_then(|b| self.blocks.get(b))
                            .is_some_and(|b| self.sections[b.section].name == ".common")
                    };
                    let take_theirs = match (mine.def, s.def) {
                        (_, SymbolDef::External { .. }) => false,
                        (SymbolDef::External { .. }, _) => true,
                        _ => match (mine.linkage, s.linkage) {
                            (Linkage::Strong, Linkage::Strong) => {
                                return Err(LinkError::DuplicateSymbol {
                                    object: other_name.clone(),
                                    symbol: s.name.expect("named"),
                                });
                            }
                            (Linkage::Weak, Linkage::Strong) => true,
                            (_, Linkage::Weak) => common(mine) && common(&s) && s.size > mine.size,
                        },
                    };
                    let mine = &mut self.symbols[mine_id];
                    if take_theirs {
                        let hidden = mine.scope == Scope::Hidden && !mine.is_external();
                        mine.def = s.def;
                        (mine.size, mine.linkage, mine.callable, mine.thread_local) =
                            (s.size, s.linkage, s.callable, s.thread_local);
                        mine.scope = if hidden { Scope::Hidden } else { s.scope };
                        mine.live |= s.live;
                    } else if mine.is_external() {
                        // Two references: a required one makes the reference required.
                        if s.linkage == Linkage::Strong {
                            mine.linkage = Linkage::Strong;
                        }
                        mine.thread_local |= s.thread_local;
                    } else if s.scope == Scope::Hidden && !s.is_external() {
                        mine.scope = Scope::Hidden;
                    }
                    mine_id
                }
            };
            symbol_map.insert(id, mapped);
        }

        for (block, mut block_edges) in edges {
            for e in &mut block_edges {
                e.target = *symbol_map.get(&e.target).ok_or_else(|| dangling("an edge to a removed symbol"))?;
            }
            self.blocks[block].edges = block_edges;
        }
        Ok(())
    }

    /// Which of the graphs this one [`absorb`](Self::absorb)ed `block` came from: 0 for the
    /// first, and for every block of a graph that absorbed none (as for a block a pass added
    /// before the first absorb); a block added after the last comes from the last. Static
    /// initializers run by it in the order of the objects (`crate::init_fini`).
    pub fn member_of(&self, block: BlockId) -> u32 {
        let Some(b) = self.blocks.get(block) else { return 0 };
        self.member_starts.partition_point(|&start| start <= b.ordinal).saturating_sub(1) as u32
    }

    /// Renames a symbol (for example to make a module-local name globally unique).
    pub fn rename_symbol(&mut self, id: SymbolId, name: SymbolName) -> Result<(), LinkError> {
        let Some(sym) = self.symbols.get(id) else {
            return Err(self.invalid("rename of a symbol that does not exist"));
        };
        let scope = sym.scope;
        if sym.name.as_ref() == Some(&name) {
            return Ok(());
        }
        self.claim_name(&Some(name.clone()), scope)?;
        let old = self.symbols.get_mut(id).and_then(|s| s.name.replace(name.clone()));
        if scope != Scope::Local {
            if let Some(old) = old {
                self.by_name.remove(&old);
            }
            self.by_name.insert(name, id);
        }
        Ok(())
    }

    /// Changes a symbol's scope; making it non-local claims its name.
    pub fn set_scope(&mut self, id: SymbolId, scope: Scope) -> Result<(), LinkError> {
        let Some(sym) = self.symbols.get(id) else {
            return Err(self.invalid("scope change of a symbol that does not exist"));
        };
        let (was_local, now_local) = (sym.scope == Scope::Local, scope == Scope::Local);
        let name = sym.name.clone();
        if was_local && !now_local {
            self.claim_name(&name, scope)?;
            if let Some(name) = name {
                self.by_name.insert(name, id);
            }
        } else if !was_local && now_local {
            if let Some(name) = name {
                self.by_name.remove(&name);
            }
        }
        if let Some(sym) = self.symbols.get_mut(id) {
            sym.scope = scope;
        }
        Ok(())
    }

    /// Marks a symbol as naming thread-local storage.
    pub fn set_thread_local(&mut self, id: SymbolId, thread_local: bool) {
        if let Some(sym) = self.symbols.get_mut(id) {
            sym.thread_local = thread_local;
        }
    }

    /// Turns a defined (or absolute) named symbol into an external one: what the object
    /// linking layer does when the session discards a losing weak definition. The block
    /// stays; dead-stripping removes it if nothing else keeps it.
    pub fn make_external(&mut self, id: SymbolId) -> Result<(), LinkError> {
        let object = self.name.clone();
        let Some(sym) = self.symbols.get_mut(id) else {
            return Err(LinkError::InvalidGraph {
                object,
                what: "make_external of a symbol that does not exist".into(),
            });
        };
        if sym.name.is_none() || sym.scope == Scope::Local {
            return Err(LinkError::InvalidGraph {
                object,
                what: "only named non-local symbols can become external".into(),
            });
        }
        sym.def = SymbolDef::External { addr: None };
        sym.scope = Scope::Default;
        sym.size = 0;
        sym.live = false;
        Ok(())
    }

    /// Gives a symbol a fixed address (it stays named and scoped as it was).
    pub fn make_absolute(&mut self, id: SymbolId, addr: TargetAddr) -> Result<(), LinkError> {
        match self.symbols.get_mut(id) {
            Some(sym) => {
                sym.def = SymbolDef::Absolute(addr);
                Ok(())
            }
            None => Err(self.invalid("make_absolute of a symbol that does not exist")),
        }
    }

    /// Defines a symbol (external or not) at `offset` in `block`.
    pub fn make_defined(&mut self, id: SymbolId, block: BlockId, offset: u64) -> Result<(), LinkError> {
        let Some(b) = self.blocks.get(block) else {
            return Err(self.invalid("make_defined in a block that does not exist"));
        };
        if offset > b.size() {
            return Err(self.invalid(format!("make_defined at offset {offset:#x} of a {}-byte block", b.size())));
        }
        match self.symbols.get_mut(id) {
            Some(sym) => {
                sym.def = SymbolDef::Defined { block, offset };
                Ok(())
            }
            None => Err(self.invalid("make_defined of a symbol that does not exist")),
        }
    }

    /// Removes a symbol. Edges that still target it fail the link at fixup time.
    pub fn remove_symbol(&mut self, id: SymbolId) {
        if let Some(sym) = self.symbols.remove(id) {
            if let (Some(name), true) = (sym.name, sym.scope != Scope::Local) {
                if self.by_name.get(&name) == Some(&id) {
                    self.by_name.remove(&name);
                }
            }
        }
    }

    /// A symbol's address: its block's address plus its offset, its fixed address, or (for
    /// an external) the address the lookup gave. `None` before allocation or lookup.
    pub fn symbol_addr(&self, id: SymbolId) -> Option<TargetAddr> {
        let sym = self.symbols.get(id)?;
        match sym.def {
            SymbolDef::Defined { block, offset } => self.blocks.get(block).map(|b| b.addr.offset(offset)),
            SymbolDef::External { addr } => addr,
            SymbolDef::Absolute(addr) => Some(addr),
        }
    }

    pub(crate) fn set_external_addr(&mut self, id: SymbolId, value: TargetAddr) {
        if let Some(sym) = self.symbols.get_mut(id) {
            if let SymbolDef::External { addr } = &mut sym.def {
                *addr = Some(value);
            }
        }
    }

    pub(crate) fn set_block_addr(&mut self, id: BlockId, addr: TargetAddr) {
        if let Some(b) = self.blocks.get_mut(id) {
            b.addr = addr;
        }
    }

    /// A human description of a place in a block for error messages:
    /// `.text+0x1a4 (main+0x14)`.
    pub fn describe_location(&self, block: BlockId, offset: u64) -> String {
        let Some(b) = self.blocks.get(block) else {
            return format!("<removed block>+{offset:#x}");
        };
        let section = self.sections.get(b.section).map(|s| s.name.as_str()).unwrap_or("<removed section>");
        // The nearest named symbol at or before the offset.
        let nearest = self
            .symbols
            .values()
            .filter_map(|s| match (s.def, &s.name) {
                (SymbolDef::Defined { block: sb, offset: so }, Some(name)) if sb == block && so <= offset => {
                    Some((so, name))
                }
                _ => None,
            })
            .max_by_key(|(so, _)| *so);
        match nearest {
            Some((so, name)) => format!("{section}+{offset:#x} ({name}+{:#x})", offset - so),
            None => format!("{section}+{offset:#x}"),
        }
    }

    /// A human description of a symbol for error messages.
    pub fn describe_symbol(&self, id: SymbolId) -> String {
        match self.symbols.get(id) {
            Some(Symbol { name: Some(name), .. }) => name.to_string(),
            Some(Symbol { def: SymbolDef::Defined { block, offset }, .. }) => self.describe_location(*block, *offset),
            Some(_) => "<anonymous symbol>".into(),
            None => "<removed symbol>".into(),
        }
    }

    // ---- what a link produces besides memory ----

    /// Queues work to run when the allocation is finalized (and undone when it is freed),
    /// such as registering `.eh_frame`. Actions run in the order added.
    pub fn add_finalize_action(&mut self, action: FinalizeAction) {
        self.finalize_actions.push(action);
    }

    /// The initializers and finalizers collected so far (complete after the post-fixup
    /// phase's built-in pass).
    pub fn init_fini(&self) -> &InitFini {
        &self.init_fini
    }

    /// The initializers and finalizers, for passes that add their own.
    pub fn init_fini_mut(&mut self) -> &mut InitFini {
        &mut self.init_fini
    }

    /// The graph's `__dso_handle` symbol, if it defines one.
    pub fn dso_handle(&self) -> Option<SymbolId> {
        self.dso_handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EdgeKind;

    fn graph_with_text() -> (LinkGraph, SectionId, BlockId) {
        let mut g = LinkGraph::new("t.o");
        let text = g.add_section(".text", Prot::RX);
        let block = g.add_content_block(text, (0u8..32).collect(), 16, 0).unwrap();
        (g, text, block)
    }

    /// A graph named `name` with a `.text` block and a `cmds` block (read-only or writable),
    /// defining `own` (with `linkage`) and a local `helper`, and referring to `wanted`.
    fn object(name: &str, cmds: Prot, own: &str, linkage: Linkage, wanted: &str) -> LinkGraph {
        let (mut g, _, text) = graph_with_text();
        g.name = name.into();
        let section = g.add_section("cmds", cmds);
        let entry = g.add_content_block(section, vec![0; 8], 8, 0).unwrap();
        g.add_defined_symbol(text, 0, Some(own.into()), 4, linkage, Scope::Default, true, true).unwrap();
        let helper = g
            .add_defined_symbol(text, 8, Some("helper".into()), 4, Linkage::Strong, Scope::Local, true, false)
            .unwrap();
        let ext = g.add_external_symbol(wanted.into(), Linkage::Strong);
        g.add_edge(text, Edge::new(EdgeKind::Delta32, 2, ext, -4)).unwrap();
        g.add_edge(entry, Edge::new(EdgeKind::Pointer64, 0, helper, 0)).unwrap();
        g
    }

    fn target_of(g: &LinkGraph, block: BlockId, edge: usize) -> SymbolDef {
        g.symbol(g.block(block).unwrap().edges()[edge].target).unwrap().def()
    }

    #[test]
    fn absorb_combines_sections_and_binds_names_as_a_static_link() {
        // a.o defines f and calls g; b.o defines g and calls f.
        let mut a = object("a.o", Prot::R, "f", Linkage::Strong, "g");
        let b = object("b.o", Prot::RW, "g", Linkage::Strong, "f");
        a.absorb(b).unwrap();
        let cmds = a.section_by_name("cmds").unwrap();
        assert_eq!(a.section(cmds).unwrap().prot(), Prot::RW, "read-only and writable parts make one writable section");
        let (text, entries) = (a.blocks_in_section(a.section_by_name(".text").unwrap()), a.blocks_in_section(cmds));
        assert_eq!((text.len(), entries.len()), (2, 2), "one section each, a.o's block first");
        assert_eq!(a.sections().len(), 2);
        let (f, g) = (a.find_symbol("f").unwrap(), a.find_symbol("g").unwrap());
        assert_eq!(a.symbol(f).unwrap().def(), SymbolDef::Defined { block: text[0], offset: 0 });
        assert_eq!(a.symbol(g).unwrap().def(), SymbolDef::Defined { block: text[1], offset: 0 });
        assert_eq!(target_of(&a, text[0], 0), a.symbol(g).unwrap().def(), "a.o's call binds to b.o's g");
        assert_eq!(target_of(&a, text[1], 0), a.symbol(f).unwrap().def(), "b.o's call binds to a.o's f");
        // Each object's local helper stays its own.
        assert_eq!(target_of(&a, entries[0], 0), SymbolDef::Defined { block: text[0], offset: 8 });
        assert_eq!(target_of(&a, entries[1], 0), SymbolDef::Defined { block: text[1], offset: 8 });
        assert!(a.symbols().all(|(_, s)| !s.is_external()), "nothing is left to look up");
    }

    #[test]
    fn absorb_keeps_the_strong_definition_and_refuses_two() {
        for (first, second, winner) in [(Linkage::Weak, Linkage::Strong, 1), (Linkage::Strong, Linkage::Weak, 0)] {
            let mut a = object("a.o", Prot::R, "f", first, "x");
            a.absorb(object("b.o", Prot::R, "f", second, "f")).unwrap();
            let text = a.blocks_in_section(a.section_by_name(".text").unwrap());
            let f = a.find_symbol("f").unwrap();
            assert_eq!(a.symbol(f).unwrap().def(), SymbolDef::Defined { block: text[winner], offset: 0 });
            assert_eq!(a.symbol(f).unwrap().linkage(), Linkage::Strong);
            assert_eq!(target_of(&a, text[1], 0), a.symbol(f).unwrap().def(), "b.o's own reference binds too");
        }
        let mut a = object("a.o", Prot::R, "f", Linkage::Strong, "x");
        let err = a.absorb(object("b.o", Prot::R, "f", Linkage::Strong, "x")).unwrap_err();
        assert_eq!(err.to_string(), "b.o: duplicate definition of symbol 'f'");
    }

    #[test]
    fn absorb_keeps_the_larger_common_symbol_and_refuses_graphs_passes_ran_on() {
        let common = |name: &str, size: u64| {
            let mut g = LinkGraph::new(name);
            let section = g.add_section(".common", Prot::RW);
            let block = g.add_zero_fill_block(section, size, 8, 0).unwrap();
            g.add_defined_symbol(block, 0, Some("c".into()), size, Linkage::Weak, Scope::Default, false, true).unwrap();
            g
        };
        let mut a = common("a.o", 8);
        a.absorb(common("b.o", 64)).unwrap();
        a.absorb(common("c.o", 16)).unwrap();
        assert_eq!(a.symbol(a.find_symbol("c").unwrap()).unwrap().size(), 64);

        let mut a = common("a.o", 8);
        a.dso_handle = a.find_symbol("c");
        let err = a.absorb(common("b.o", 8)).unwrap_err();
        assert!(err.to_string().contains("b.o joins this graph after passes ran"), "{err}");

        // An edge left pointing at a removed symbol is an error, not a panic.
        let mut b = object("b.o", Prot::R, "g", Linkage::Strong, "f");
        b.remove_symbol(b.find_symbol("f").unwrap());
        let err = object("a.o", Prot::R, "x", Linkage::Strong, "y").absorb(b).unwrap_err();
        assert!(err.to_string().contains("an edge to a removed symbol"), "{err}");
    }

    #[test]
    fn split_block_moves_symbols_and_edges_and_keeps_layout_order() {
        let (mut g, text, block) = graph_with_text();
        let after = g.add_content_block(text, vec![0; 4], 1, 0).unwrap();
        let a =
            g.add_defined_symbol(block, 0, Some("a".into()), 8, Linkage::Strong, Scope::Default, true, true).unwrap();
        let b =
            g.add_defined_symbol(block, 10, Some("b".into()), 8, Linkage::Strong, Scope::Default, true, true).unwrap();
        let c =
            g.add_defined_symbol(block, 20, Some("c".into()), 8, Linkage::Strong, Scope::Default, true, true).unwrap();
        g.add_edge(block, Edge::new(EdgeKind::Delta32, 2, c, -4)).unwrap();
        g.add_edge(block, Edge::new(EdgeKind::Delta32, 22, a, -4)).unwrap();
        let pieces = g.split_block(block, &[10, 20]).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0], block, "the first piece keeps the id");
        assert_eq!(g.blocks_in_section(text), vec![pieces[0], pieces[1], pieces[2], after]);
        assert_eq!(g.block(pieces[1]).unwrap().bytes(), &(10u8..20).collect::<Vec<_>>()[..]);
        assert_eq!(g.symbol(b).unwrap().def(), SymbolDef::Defined { block: pieces[1], offset: 0 });
        assert_eq!(g.symbol(c).unwrap().def(), SymbolDef::Defined { block: pieces[2], offset: 0 });
        assert_eq!(g.block(pieces[0]).unwrap().edges()[0].offset, 2);
        assert_eq!(g.block(pieces[2]).unwrap().edges()[0].offset, 2);
        assert!(g.split_block(pieces[2], &[0]).is_err(), "a cut at zero is refused");
        assert!(g.split_block(pieces[2], &[12]).is_err(), "a cut past the end is refused");
    }

    #[test]
    fn names_stay_unique_across_rename_scope_and_external_changes() {
        let (mut g, _, block) = graph_with_text();
        let f = g.add_defined_symbol(block, 0, Some("f".into()), 4, Linkage::Weak, Scope::Default, true, true).unwrap();
        let local = g.add_defined_symbol(block, 4, Some("f".into()), 4, Linkage::Strong, Scope::Local, true, false);
        assert!(local.is_ok(), "a local may share a global's name");
        let dup = g.add_defined_symbol(block, 8, Some("f".into()), 4, Linkage::Strong, Scope::Hidden, true, true);
        assert!(matches!(dup, Err(LinkError::DuplicateSymbol { .. })));
        assert!(g.rename_symbol(local.unwrap(), "f".into()).is_ok(), "locals are not indexed");
        g.rename_symbol(f, "f.renamed".into()).unwrap();
        assert_eq!(g.find_symbol("f"), None);
        assert_eq!(g.find_symbol("f.renamed"), Some(f));
        g.make_external(f).unwrap();
        assert!(g.symbol(f).unwrap().is_external());
        assert_eq!(g.add_external_symbol("f.renamed".into(), Linkage::Strong), f, "externals are shared by name");
        let anon = g.add_anonymous_symbol(block, 0, 0, false, false).unwrap();
        assert!(g.make_external(anon).is_err(), "an anonymous symbol cannot become external");
    }

    #[test]
    fn removing_blocks_removes_their_symbols_and_frees_their_names() {
        let (mut g, text, block) = graph_with_text();
        let other = g.add_content_block(text, vec![0; 4], 1, 0).unwrap();
        let f =
            g.add_defined_symbol(block, 0, Some("f".into()), 4, Linkage::Strong, Scope::Default, true, true).unwrap();
        let h =
            g.add_defined_symbol(other, 0, Some("h".into()), 4, Linkage::Strong, Scope::Default, true, true).unwrap();
        g.remove_blocks(&[block]);
        assert!(g.symbol(f).is_none() && g.find_symbol("f").is_none());
        assert!(g.symbol(h).is_some());
        assert!(
            g.add_defined_symbol(other, 0, Some("f".into()), 0, Linkage::Strong, Scope::Default, false, true).is_ok()
        );
        assert!(g.block(block).is_none());
        assert!(g.add_edge(block, Edge::new(EdgeKind::Pointer64, 0, h, 0)).is_err(), "stale ids are errors");
    }
}
