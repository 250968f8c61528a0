//! orcjit's linker: turns relocatable objects into running code through a LinkGraph.
//!
//! May use jit-mem; knows nothing of sessions or LLVM. The pieces, one module each:
//!
//! - [`LinkGraph`] (`graph/`): sections, blocks, symbols and edges in arenas, and the
//!   operations passes use to rewrite them.
//! - [`graph_from_elf_object`] (`elf/`): the ELF x86-64 relocatable front end, and
//!   [`interface_graph_from_elf_object`], its sections and symbols alone (what an object defines).
//! - [`x86_64`]: edge kinds, fixups, the GOT/PLT builder and its relaxation.
//! - [`PassConfig`] (`passes.rs`): named passes in five phases; the built-in ones live in
//!   `eh_frame/`, `tls/`, `init_fini.rs`, `builtins.rs`, `prune.rs`.
//! - [`link`] and [`LinkContext`] (`driver.rs`): the continuation-passing driver.
//! - [`external_dependencies`] (`deps.rs`): which externals each definition reaches.
//! - far references (`far.rs`): stubs and read-only copies that bring a library's code and
//!   data into the reach of non-PIC code; [`process`] tells a context what a symbol of this
//!   process is, so it can answer [`LinkContext::describe_external`].

mod builtins;
mod deps;
mod driver;
pub mod eh_frame;
mod elf;
mod error;
mod far;
mod graph;
pub mod init_fini;
mod layout;
mod name;
mod passes;
pub mod process;
mod prune;
pub mod tls;
pub mod x86_64;

pub use builtins::{DSO_HANDLE, define_dso_handle, define_libc_nonshared, define_section_start_stop};
pub use deps::{SymbolDependencies, external_dependencies};
pub use driver::{LinkContext, LinkedObject, LookupContinuation, LookupFlags, LookupRequest, LookupResult, link};
pub use elf::{
    defined_and_needed_names, enclosure_groups, graph_from_elf_object, graph_from_elf_objects,
    interface_graph_from_elf_object, interface_graph_from_elf_objects, is_c_identifier, is_llvm_bitcode, link_ties,
    memory_needed, needs_low_placement, profile_instrumented, relocation_name, tls_tie, tls_tie_name,
};
pub use error::{BoxError, LinkError};
pub use far::{ExternalDefinition, FAR_DATA_SECTION, FAR_STUBS_SECTION};
pub use graph::{
    Block, BlockContent, BlockId, Edge, LinkGraph, Linkage, Scope, Section, SectionId, SectionKind, Symbol, SymbolDef,
    SymbolId,
};
pub use init_fini::{InitFini, InitFiniEntry};
pub use name::SymbolName;
pub use passes::{Pass, PassConfig, PassFn, Phase};
pub use prune::dead_strip;
pub use x86_64::EdgeKind;

// The object linking layer moves graphs, continuations and results between threads.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LinkGraph>();
    assert_send::<LookupContinuation>();
    assert_send::<LinkedObject>();
    assert_send::<PassConfig>();
};
