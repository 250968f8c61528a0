//! The subcommands of `orcjit`, one module each.

pub mod demo;
pub mod link;
