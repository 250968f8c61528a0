//! Layout: which segment each block goes to and at what offset; TLS blocks form the TLS image.

use jit_mem::{AllocRequest, InFlightAlloc, MAX_ALIGN, Prot, SegmentLifetime, SegmentRequest, TargetAddr};

use crate::tls::runtime::{MAX_TLS_ALIGN, MAX_TLS_SIZE};
use crate::{BlockId, LinkError, LinkGraph, SectionId, SectionKind};

/// Large data sections that hold at least this much together are allocated apart from the
/// graph's memory manager (see [`sections_apart`]).
pub(crate) const LARGE_DATA_APART: u64 = 64 << 20;

/// An allocation of a graph besides its main one, and the plan of the blocks in it.
pub(crate) struct PlannedAlloc {
    pub(crate) plan: Plan,
    pub(crate) alloc: InFlightAlloc,
}

/// Blocks and their offsets in a segment (or the TLS image).
type Placement = Vec<(BlockId, u64)>;

/// A laid-out run of blocks: placement, size and alignment.
type Laid = (Placement, u64, u64);

/// Sort key of a block: protection, lifetime, section order, block order.
type LayoutKey = (usize, usize, u32, u64);

/// Where every block goes.
pub(crate) struct Plan {
    pub(crate) request: AllocRequest,
    /// Per requested segment: its blocks and their offsets.
    segments: Vec<Placement>,
    /// TLS blocks and their offsets in the TLS image, its size and alignment.
    pub(crate) tls: Option<Laid>,
}

/// The smallest offset at or after `cur` that is `align_offset` modulo `align`.
fn place(cur: u64, align: u64, align_offset: u64) -> Option<u64> {
    let base = cur - cur % align;
    let off = base.checked_add(align_offset)?;
    if off < cur { off.checked_add(align) } else { Some(off) }
}

fn lay_out(graph: &LinkGraph, blocks: &[BlockId], max_align: u64, what: &str) -> Result<Laid, LinkError> {
    let mut cur = 0u64;
    let mut align = 1u64;
    let mut out = Vec::with_capacity(blocks.len());
    for &id in blocks {
        let Some(b) = graph.block(id) else { continue };
        if b.align() > max_align {
            let section = graph.section(b.section()).map(|s| s.name().to_string()).unwrap_or_default();
            return Err(LinkError::Unsupported {
                object: graph.name().to_string(),
                what: format!(
                    "{what} block of {section} aligned to {} bytes (at most {max_align} supported)",
                    b.align()
                ),
            });
        }
        align = align.max(b.align());
        let off = place(cur, b.align(), b.align_offset());
        let end = off.and_then(|o| o.checked_add(b.size()));
        let (Some(off), Some(end)) = (off, end) else {
            return Err(LinkError::Unsupported {
                object: graph.name().to_string(),
                what: format!("{what} segment larger than the address space"),
            });
        };
        out.push((id, off));
        cur = end;
    }
    Ok((out, cur, align))
}

/// The sections to allocate apart from the graph's memory manager
/// (`jit_mem::PageAllocator::allocate_apart`): its large data sections (x86-64's `.ldata`,
/// `.lbss` and `.lrodata`; not code, not thread-local data), when together they hold at least
/// [`LARGE_DATA_APART`] bytes. Code reaches such data only through 64-bit addresses or the
/// GOT, so it may lie anywhere; apart, an array larger than the manager's whole reservation
/// (2 GiB at most) links, and a large one does not take the room other graphs share. Smaller
/// large data stays with the rest of the graph. Empty when nothing goes apart.
pub(crate) fn sections_apart(graph: &LinkGraph) -> Vec<SectionId> {
    let sections: Vec<SectionId> = graph
        .sections()
        .into_iter()
        .filter(|(_, s)| s.is_large() && s.prot() != Prot::RX && s.kind() == SectionKind::Regular)
        .map(|(id, _)| id)
        .collect();
    if sections.is_empty() {
        return sections;
    }
    let size = graph
        .blocks()
        .filter(|(_, b)| sections.contains(&b.section()))
        .fold(0u64, |size, (_, b)| size.saturating_add(b.size()));
    if size >= LARGE_DATA_APART { sections } else { Vec::new() }
}

/// Plans the layout of the blocks of the sections `include` accepts (for a second allocation
/// of the same graph).
pub(crate) fn plan_sections(graph: &LinkGraph, include: impl Fn(SectionId) -> bool) -> Result<Plan, LinkError> {
    let mut keyed: Vec<(LayoutKey, BlockId, bool)> = Vec::with_capacity(graph.block_count());
    for (id, b) in graph.blocks() {
        if !include(b.section()) {
            continue;
        }
        let Some(s) = graph.section(b.section()) else { continue };
        let prot = Prot::ALL.iter().position(|p| *p == s.prot()).unwrap_or(0);
        let lifetime = match s.lifetime() {
            SegmentLifetime::Standard => 0,
            SegmentLifetime::FinalizeOnly => 1,
        };
        keyed.push(((prot, lifetime, s.ordinal, b.ordinal), id, s.kind() == SectionKind::ThreadLocal));
    }
    keyed.sort_unstable_by_key(|(k, _, _)| *k);
    let tls_blocks: Vec<BlockId> = keyed.iter().filter(|(_, _, tls)| *tls).map(|(_, id, _)| *id).collect();
    let mut request = AllocRequest::default();
    let mut segments = Vec::new();
    for (p, prot) in Prot::ALL.iter().enumerate() {
        for (l, lifetime) in [SegmentLifetime::Standard, SegmentLifetime::FinalizeOnly].iter().enumerate() {
            let blocks: Vec<BlockId> = keyed
                .iter()
                .filter(|((kp, kl, _, _), _, tls)| *kp == p && *kl == l && !tls)
                .map(|(_, id, _)| *id)
                .collect();
            if blocks.is_empty() {
                continue;
            }
            let (placed, size, align) = lay_out(graph, &blocks, MAX_ALIGN, &format!("{prot}"))?;
            request.segments.push(SegmentRequest::new(*prot, size, align).with_lifetime(*lifetime));
            segments.push(placed);
        }
    }
    let tls = if tls_blocks.is_empty() {
        None
    } else {
        let (placed, size, align) = lay_out(graph, &tls_blocks, MAX_TLS_ALIGN, "thread-local")?;
        if size > MAX_TLS_SIZE {
            return Err(LinkError::Tls {
                object: graph.name().to_string(),
                what: format!("{size} bytes of thread-local data (at most {MAX_TLS_SIZE})"),
            });
        }
        Some((placed, size, align))
    };
    Ok(Plan { request, segments, tls })
}

/// Gives every block its address (TLS blocks: their offset in the TLS image).
pub(crate) fn assign_addresses(graph: &mut LinkGraph, plan: &Plan, alloc: &InFlightAlloc) {
    for (index, blocks) in plan.segments.iter().enumerate() {
        let base = alloc.target(index).unwrap_or_default();
        for &(id, off) in blocks {
            graph.set_block_addr(id, base.offset(off));
        }
    }
    if let Some((blocks, _, _)) = &plan.tls {
        for &(id, off) in blocks {
            graph.set_block_addr(id, TargetAddr(off));
        }
    }
}

/// Copies every block's bytes into the allocation's working memory.
pub(crate) fn copy_to_working(graph: &LinkGraph, plan: &Plan, alloc: &mut InFlightAlloc) -> Result<(), LinkError> {
    let mut views = alloc.working_views();
    for (index, blocks) in plan.segments.iter().enumerate() {
        let Some(view) = views.get_mut(index) else {
            return Err(graph.invalid("the allocation has fewer segments than requested"));
        };
        for &(id, off) in blocks {
            let Some(b) = graph.block(id) else { continue };
            let bytes = b.bytes();
            if bytes.is_empty() {
                continue;
            }
            let start = off as usize;
            match view.bytes.get_mut(start..start + bytes.len()) {
                Some(dst) => dst.copy_from_slice(bytes),
                None => return Err(graph.invalid("a block does not fit its segment")),
            }
        }
    }
    Ok(())
}
