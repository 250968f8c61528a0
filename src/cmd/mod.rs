//! The subcommands of `orcjit`, one module each.

pub mod demo;
pub mod link;
pub mod program;
pub mod run;
