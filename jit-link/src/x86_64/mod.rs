//! x86-64: edge kinds and their fixups, the GOT/PLT builder with its relaxation, and indirect
//! functions.

mod edge_kind;
mod got_plt;
mod ifunc;

pub use edge_kind::EdgeKind;
pub(crate) use edge_kind::{FixupEnv, apply_fixups};
pub use got_plt::{GOT_SECTION, GOT_SYMBOL, STUBS_SECTION, build_got_and_stubs, optimize_got_and_stub_accesses};
pub use ifunc::{IFUNC_SECTION, IFUNC_SLOTS_SECTION, add_indirect_function};
