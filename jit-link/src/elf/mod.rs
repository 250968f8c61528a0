//! The ELF x86-64 relocatable-object front end: builds a [`crate::LinkGraph`] from an object.

mod comdat;
mod file;
mod placement;
mod relocation;
mod section;
mod symbol;

pub use file::{
    graph_from_elf_object, graph_from_elf_objects, interface_graph_from_elf_object, interface_graph_from_elf_objects,
};
pub use placement::{
    defined_and_needed_names, enclosure_groups, is_c_identifier, is_llvm_bitcode, link_ties, memory_needed,
    needs_low_placement, profile_instrumented, tls_tie, tls_tie_name,
};
pub use relocation::relocation_name;
