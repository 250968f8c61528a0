//! Lazy call-through stubs (x86-64 System V): a function is compiled the first time it is
//! called, not when its address is taken.
//!
//! - `stubs.rs`: the 16-byte stub encoding and batches of stubs and slots in jit-mem memory;
//! - `reentry.rs`: the re-entry trampoline every unresolved stub jumps to;
//! - `table.rs`: which stub stands for what, which tracker owns it, the pool of unused stubs;
//! - `reexports.rs`: the materialization unit, the resolver and [`LazyReexports`], the manager.

mod reentry;
mod reexports;
mod stubs;
mod table;

pub(crate) use reexports::stub_name_at;
pub use reexports::{LazyReexports, LazyStats, LazyStub, StubStatus, resolve_reachable_from, resolve_stub_at};
