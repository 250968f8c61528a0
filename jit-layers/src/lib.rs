//! jit-layers: the layers that turn compiler inputs into materialization units.
//!
//! Bridges jit-core (sessions, symbols), jit-link (linking) and jit-mem (memory): the object
//! linking layer links relocatable objects into JIT dylibs through the session.

mod entry;
mod initializers;
mod object_layer;

pub use entry::EntryGate;
pub use object_layer::{InitArgs, LinkPlugin, ObjectLinkingLayer};
