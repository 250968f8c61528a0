//! Thread-local storage of the general- and local-dynamic models, through orcjit's own
//! `__tls_get_addr`.
//!
//! JIT'd code cannot join the process's static TLS block (its size is fixed when the
//! program starts), so every graph with `.tdata`/`.tbss` gets a *TLS module* of its own in
//! [`runtime`]: a template (the TLS image) registered at finalize, and per thread a block
//! copied from it on that thread's first access, freed at thread exit. Code reaches it the
//! way the psABI's dynamic models do — `__tls_get_addr(&tls_index)`, or a TLS descriptor's
//! resolver (`descriptor`) — and calls to
//! `__tls_get_addr` bind to [`runtime::tls_get_addr`] without asking the context. That
//! function passes an index of the dynamic loader's (a library's variable, which jit-core's
//! generators define at such an index) to the loader's `__tls_get_addr`.

mod descriptor;
mod lowering;
pub mod runtime;

pub(crate) use lowering::TlsImage;
pub use lowering::{TLS_INFO_SECTION, TLS_RUNTIME_SYMBOL, capture_tls_template, lower_tls};
