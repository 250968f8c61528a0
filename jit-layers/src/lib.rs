//! orcjit's layers: what turns compiler inputs into materialization units.
//!
//! Bridges jit-core (sessions, symbols) with jit-link (linking) and jit-mem (memory).
