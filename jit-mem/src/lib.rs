//! Executable memory for orcjit: reservations, slabs, dual mapping and protections.
//!
//! Depends on no other crate of this workspace.
