//! Registration of a graph's `.eh_frame` with the process's unwinder.
//!
//! This process unwinds with libgcc (Rust's std and libstdc++ link `libgcc_s`). libgcc's
//! `__register_frame` takes the start of a whole `.eh_frame` section, walked up to its
//! zero-length terminator; libunwind's takes a single FDE instead. LLVM's
//! `llvm/lib/ExecutionEngine/Orc/TargetProcess/RegisterEHFrames.cpp` makes the same
//! distinction (`HAVE_UNW_ADD_DYNAMIC_FDE` / Apple walk FDEs; libgcc gets the section).

use jit_mem::{FinalizeAction, TargetAddr};

use super::split::EH_FRAME_SECTION;
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
    let Some(&first) = blocks.first() else {
        return Ok(());
    };
    if blocks.len() < 2 {
        return Ok(());
    }
    let Some(start) = graph.block(first).map(|b| b.addr()) else {
        return Ok(());
    };
    let addr = start.0;
    graph.add_finalize_action(FinalizeAction::new(
        move || {
            // SAFETY: `addr` is the start of this allocation's `.eh_frame`, finalized and
            // readable; its records were validated with gimli and end in a zero terminator.
            // The memory outlives the registration: deregistration runs before it is freed.
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
