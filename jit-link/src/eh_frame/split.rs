//! Splits `.eh_frame` into one block per record, validated with gimli.
//!
//! Layout of a record (LSB 5.0 "Exception Frames", `.eh_frame` section): a 4-byte length
//! (0xffffffff: an 8-byte length follows), then a CIE id of 0 for a CIE, or for an FDE the
//! distance from this field back to its CIE, then for an FDE the `pc_begin` pointer. As in
//! LLVM's `DWARFRecordSectionSplitter` and `EHFrameEdgeFixer`: each FDE gets a `NegDelta`
//! edge to its CIE (so the records may move independently) and its function's block gets a
//! `KeepAlive` edge to it (so the FDE lives exactly as long as its function).

use rustc_hash::FxHashMap as HashMap;

use gimli::{BaseAddresses, CieOrFde, EhFrame, EndianSlice, LittleEndian, UnwindSection};

use crate::{BlockId, Edge, EdgeKind, LinkError, LinkGraph};

/// The name of the section.
pub const EH_FRAME_SECTION: &str = ".eh_frame";

struct Record {
    start: u64,
    /// Size of the length field(s).
    header: u64,
    /// Size of the CIE id / CIE pointer field.
    id_size: u64,
    /// For an FDE, the start of its CIE.
    cie: Option<u64>,
}

fn malformed(graph: &LinkGraph, offset: u64, reason: impl Into<String>) -> LinkError {
    LinkError::EhFrame { object: graph.name().to_string(), offset, reason: reason.into() }
}

fn read_u32(bytes: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// Walks the records of one `.eh_frame` block. Returns them and where the terminator (if
/// any) starts.
fn records(graph: &LinkGraph, bytes: &[u8]) -> Result<(Vec<Record>, Option<u64>), LinkError> {
    let len = bytes.len() as u64;
    let mut out: Vec<Record> = Vec::new();
    let mut starts: HashMap<u64, bool> = HashMap::default();
    let mut offset = 0u64;
    while offset < len {
        let length = read_u32(bytes, offset).ok_or_else(|| malformed(graph, offset, "truncated length"))?;
        if length == 0 {
            return Ok((out, Some(offset)));
        }
        let (header, length) = if length == u32::MAX {
            let l = read_u64(bytes, offset + 4).ok_or_else(|| malformed(graph, offset, "truncated 64-bit length"))?;
            (12, l)
        } else {
            (4, length as u64)
        };
        let id_size = if header == 12 { 8 } else { 4 };
        let end =
            offset.checked_add(header).and_then(|v| v.checked_add(length)).filter(|&end| end <= len).ok_or_else(
                || malformed(graph, offset, format!("record of {length} bytes runs past the section's end")),
            )?;
        if length < id_size {
            return Err(malformed(graph, offset, "record too short for its CIE id"));
        }
        let id_at = offset + header;
        let id = if id_size == 8 { read_u64(bytes, id_at) } else { read_u32(bytes, id_at).map(u64::from) }
            .ok_or_else(|| malformed(graph, offset, "truncated CIE id"))?;
        let cie = if id == 0 {
            None
        } else {
            let cie = id_at
                .checked_sub(id)
                .filter(|c| starts.get(c) == Some(&true))
                .ok_or_else(|| malformed(graph, offset, format!("FDE's CIE pointer {id:#x} does not lead to a CIE")))?;
            Some(cie)
        };
        starts.insert(offset, cie.is_none());
        out.push(Record { start: offset, header, id_size, cie });
        offset = end;
    }
    Ok((out, None))
}

/// Parses every CIE and FDE (and their call frame instructions) with gimli, so a record
/// the unwinder would choke on is an error at link time rather than an abort at throw time.
fn validate(graph: &LinkGraph, bytes: &[u8]) -> Result<(), LinkError> {
    check_records(bytes, 0, None).map_err(|(offset, reason)| malformed(graph, offset, reason))
}

/// The check behind [`validate`], on `.eh_frame` bytes at `base` (0 before layout): every
/// record up to the first terminator parses, with its instructions, as libgcc would walk it.
/// With `code` (the graph's code blocks as sorted `(start, end)` address ranges), every FDE
/// must also describe addresses within one of them: libgcc picks the FDE for any return
/// address in an FDE's range, so an FDE claiming more would unwind other code (libgcc's
/// own, the program's) with the wrong rules. An error is (offset of the record, reason).
pub(crate) fn check_records(bytes: &[u8], base: u64, code: Option<&[(u64, u64)]>) -> Result<(), (u64, String)> {
    let section = EhFrame::new(bytes, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(base).set_text(0).set_got(0);
    let mut entries = section.entries(&bases);
    loop {
        let entry = entries.next().map_err(|e| (0, format!("{e}")))?;
        let Some(entry) = entry else {
            return Ok(());
        };
        match entry {
            CieOrFde::Cie(cie) => {
                let offset = cie.offset() as u64;
                let mut insns = cie.instructions(&section, &bases);
                while insns.next().map_err(|e| (offset, format!("CIE instructions: {e}")))?.is_some() {}
                if let Some(problem) = libgcc_cie_problem(bytes, &cie) {
                    return Err((offset, problem));
                }
            }
            CieOrFde::Fde(partial) => {
                let fde = partial.parse(EhFrame::cie_from_offset).map_err(|e| (0, format!("FDE: {e}")))?;
                let offset = fde.offset() as u64;
                if read_u32(bytes, offset) == Some(u32::MAX) {
                    return Err((offset, LIBGCC_NO_DWARF64.into()));
                }
                let mut insns = fde.instructions(&section, &bases);
                while insns.next().map_err(|e| (offset, format!("FDE instructions: {e}")))?.is_some() {}
                if let Some(code) = code {
                    let (start, len) = (fde.initial_address(), fde.len());
                    let within = code.partition_point(|&(s, _)| s <= start).checked_sub(1).is_some_and(|i| {
                        let (_, end) = code[i];
                        start.checked_add(len).is_some_and(|e| e <= end)
                    });
                    if !within {
                        return Err((
                            offset,
                            format!("FDE describes {start:#x}..+{len:#x}, which is not within one block of code"),
                        ));
                    }
                }
            }
        }
    }
}

const LIBGCC_NO_DWARF64: &str = "64-bit DWARF record length, which libgcc's unwinder reads as a 32-bit one";

/// What in a CIE that gimli accepts libgcc would misread or abort on (`unwind-dw2-fde.c`:
/// `get_cie_encoding`, `base_from_object`, `classify_object_over_fdes`; `unwind-pe.h`).
/// Compilers emit none of it; LLVM's `EHFrameEdgeFixer` accepts still less.
fn libgcc_cie_problem(
    bytes: &[u8],
    cie: &gimli::CommonInformationEntry<EndianSlice<'_, LittleEndian>>,
) -> Option<String> {
    let offset = cie.offset() as u64;
    if read_u32(bytes, offset) == Some(u32::MAX) {
        return Some(LIBGCC_NO_DWARF64.into());
    }
    // libgcc skips an address size and a segment size from version 4 on, and gives up on the
    // whole object (after which deregistering it aborts) unless they are 8 and 0.
    if !matches!(cie.version(), 1 | 3) {
        return Some(format!("CIE version {} (only 1 and 3 are read as written)", cie.version()));
    }
    // The augmentation string, after the length, the CIE id and the version. libgcc looks for
    // `R` (the FDEs' pointer encoding) among `z`, `P`, `L` and `B` only: after an `S` it stops
    // and takes absolute 8-byte pointers, and would read every FDE's range wrong.
    let at = usize::try_from(offset).ok()?.checked_add(9)?;
    let augmentation: Vec<u8> = bytes.get(at..)?.iter().copied().take_while(|&c| c != 0).collect();
    if let (Some(r), Some(s)) =
        (augmentation.iter().position(|&c| c == b'R'), augmentation.iter().position(|&c| c == b'S'))
    {
        if s < r {
            return Some(format!("augmentation {:?} puts S before R", String::from_utf8_lossy(&augmentation)));
        }
    }
    // Pointers relative to nothing libgcc knows for registered frames abort it
    // (`base_from_object`, `base_of_encoded_value`); omitted FDE pointers make it give up on
    // the object; an indirect `pc_begin` would be dereferenced.
    let usual = |e: gimli::DwEhPe| matches!(e.application(), gimli::DW_EH_PE_absptr | gimli::DW_EH_PE_pcrel);
    if let Some(e) = cie.fde_address_encoding() {
        if e == gimli::DW_EH_PE_omit || e.is_indirect() || !usual(e) {
            return Some(format!("FDE pointer encoding {:#x}", e.0));
        }
    }
    if let Some(e) = cie.lsda_encoding().filter(|&e| e != gimli::DW_EH_PE_omit) {
        if !usual(e) {
            return Some(format!("LSDA pointer encoding {:#x}", e.0));
        }
    }
    None
}

/// Splits every `.eh_frame` block into records, adds the CIE and keep-alive edges, drops
/// any terminator the object carried and appends one live terminator for the whole section.
/// A pre-prune pass.
pub fn split_eh_frame(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let Some(section) = graph.section_by_name(EH_FRAME_SECTION) else {
        return Ok(());
    };
    let blocks = graph.blocks_in_section(section);
    for (index, block) in blocks.into_iter().enumerate() {
        split_one(graph, block, index == 0)?;
    }
    let terminator = graph.add_content_block(section, vec![0; 4], 1, 0)?;
    graph.add_anonymous_symbol(terminator, 0, 4, false, true)?;
    Ok(())
}

fn split_one(graph: &mut LinkGraph, block: BlockId, first: bool) -> Result<(), LinkError> {
    let Some(b) = graph.block(block) else {
        return Ok(());
    };
    if b.is_zero_fill() {
        return Err(malformed(graph, 0, "the section has no contents"));
    }
    let bytes = b.bytes().to_vec();
    validate(graph, &bytes)?;
    let (recs, terminator) = records(graph, &bytes)?;
    if recs.is_empty() {
        graph.remove_block(block);
        return Ok(());
    }
    let mut cuts: Vec<u64> = recs.iter().skip(1).map(|r| r.start).collect();
    if let Some(t) = terminator {
        cuts.push(t);
    }
    let pieces = graph.split_block(block, &cuts)?;
    if terminator.is_some() {
        if let Some(&last) = pieces.last() {
            graph.remove_block(last);
        }
    }
    // `pieces[i]` holds `recs[i]` (the cuts are the record starts after the first).
    let index_of: HashMap<u64, usize> = recs.iter().enumerate().map(|(i, r)| (r.start, i)).collect();
    let lost = |graph: &LinkGraph, offset: u64| malformed(graph, offset, "record lost while splitting");
    // Every record gets an anonymous symbol at its start for edges to name.
    let mut syms = Vec::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        let Some(&piece) = pieces.get(i) else {
            return Err(lost(graph, r.start));
        };
        if let Some(p) = graph.block_mut(piece) {
            if !(first && r.start == 0) {
                p.set_align(1, 0);
            }
        }
        let size = graph.block(piece).map(|p| p.size()).unwrap_or(0);
        syms.push(graph.add_anonymous_symbol(piece, 0, size, false, false)?);
    }
    for (i, r) in recs.iter().enumerate() {
        let Some(cie) = r.cie else { continue };
        let (Some(&piece), Some(&me)) = (pieces.get(i), syms.get(i)) else {
            return Err(lost(graph, r.start));
        };
        let Some(&cie_sym) = index_of.get(&cie).and_then(|&c| syms.get(c)) else {
            return Err(lost(graph, cie));
        };
        let kind = if r.id_size == 8 { EdgeKind::NegDelta64 } else { EdgeKind::NegDelta32 };
        graph.add_edge(piece, Edge::new(kind, r.header, cie_sym, 0))?;
        // The function this FDE describes: the edge at `pc_begin`.
        let pc_begin = r.header + r.id_size;
        let target = graph
            .block(piece)
            .and_then(|p| p.edges().iter().find(|e| e.offset == pc_begin && e.kind != EdgeKind::KeepAlive))
            .map(|e| e.target);
        let Some(target) = target else { continue };
        if let Some(function_block) = graph.symbol(target).and_then(|s| s.block()) {
            graph.add_edge(function_block, Edge::new(EdgeKind::KeepAlive, 0, me, 0))?;
        }
    }
    Ok(())
}
