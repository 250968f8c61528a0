#![doc = include_str!("../README.md")]

pub mod board;

pub use jit_core as core;
pub use jit_layers as layers;
pub use jit_link as link;
pub use jit_mem as mem;
