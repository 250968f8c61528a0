//! Registration of a graph's `.eh_frame` with the process's unwinder.
//!
//! This process unwinds with libgcc (Rust's std and libstdc++ link `libgcc_s`). libgcc's
//! `__register_frame` takes the start of a whole `.eh_frame` section, walked up to its
//! zero-length terminator; libunwind's takes a single FDE instead. LLVM's
//! `llvm/lib/ExecutionEngine/Orc/TargetProcess/RegisterEHFrames.cpp` makes the same
//! distinction (`HAVE_UNW_ADD_DYNAMIC_FDE` / Apple walk FDEs; libgcc gets the section).

use jit_mem::{FinalizeAction, Prot, TargetAddr};

use super::split::{EH_FRAME_SECTION, check_records};
use crate::{LinkError, LinkGraph, SectionKind};

unsafe extern "C" {
    fn __register_frame(begin: *const u8);
    fn __deregister_frame(begin: *const u8);
}

/// Queues the registration of the graph's `.eh_frame` (laid out contiguously, ending in a
/// terminator) as a finalize action, and its deregistration at deallocation. A post-fixup
/// pass.
pub fn register_eh_frame(graph: &mut LinkGraph) -> Result<(), LinkError> {
    let Some(section) = graph.section_by_name(EH_FRAME_SECTION) else {
        return Ok(());
    };
    // A thread-local section's blocks have offsets in the TLS image, not addresses (the ELF
    // front end refuses such an `.eh_frame`; a pass could still make one).
    if graph.section(section).is_some_and(|s| s.kind() == SectionKind::ThreadLocal) {
        return Err(graph.invalid("its .eh_frame section is thread-local, so it has no address to register"));
    }
    let blocks = graph.blocks_in_section(section);
    // Only a terminator left (every FDE was dead-stripped): nothing to register.
    if blocks.len() < 2 {
        return Ok(());
    }
    // The records and the terminator, laid out back to back (one section, alignment 1 after
    // the first record): the range libgcc walks.
    let mut spans: Vec<(u64, u64)> =
        blocks.iter().filter_map(|&b| graph.block(b)).map(|b| (b.addr().0, b.size())).collect();
    spans.sort_unstable();
    let Some(&(addr, _)) = spans.first() else {
        return Ok(());
    };
    let mut end = addr;
    for &(at, size) in &spans {
        if at != end {
            return Err(graph.invalid(format!(".eh_frame records are not contiguous: a gap at {end:#x}")));
        }
        end = at + size;
    }
    let len = usize::try_from(end - addr).map_err(|_| graph.invalid(".eh_frame larger than the address space"))?;
    // Where the FDEs may point: the graph's code blocks.
    let mut code: Vec<(u64, u64)> = graph
        .blocks()
        .filter(|(_, b)| graph.section(b.section()).is_some_and(|s| s.prot() == Prot::RX))
        .map(|(_, b)| (b.addr().0, b.addr().0.saturating_add(b.size())))
        .collect();
    code.sort_unstable();
    let object = graph.name().to_string();
    graph.add_finalize_action(FinalizeAction::new(
        move || {
            // SAFETY: `addr..addr + len` is this allocation's `.eh_frame`, finalized and
            // readable: the blocks checked contiguous above, in one segment of this allocation.
            let bytes = unsafe { std::slice::from_raw_parts(TargetAddr(addr).as_ptr(), len) };
            // Fixups wrote into the records after they were validated: a relocation at an
            // unexpected place in a corrupt object (over a record's length, say) would make
            // libgcc walk garbage at the next throw anywhere in the process, and an FDE whose
            // range reaches past its function would have it unwind other code by that FDE's
            // rules. So the bytes libgcc will read are checked again, at their addresses.
            check_records(bytes, addr, Some(&code)).map_err(|(offset, reason)| LinkError::EhFrame {
                object,
                offset,
                reason: format!("after relocation: {reason}"),
            })?;
            // SAFETY: `addr` is the start of that `.eh_frame`, whose records parse and end in a
            // zero terminator. The memory outlives the registration: deregistration runs
            // before it is freed.
            unsafe { __register_frame(TargetAddr(addr).as_ptr()) };
            Ok(())
        },
        move || {
            // SAFETY: the same address was registered by the finalize callback above (a
            // deallocate callback runs only if its finalize callback succeeded), and the
            // memory is still mapped.
            unsafe { __deregister_frame(TargetAddr(addr).as_ptr()) };
            Ok(())
        },
    ));
    Ok(())
}
