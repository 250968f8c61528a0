//! orcjit: a JIT framework in the style of LLVM's ORC v2 and JITLink.
pub use jit_core as core;
pub use jit_layers as layers;
pub use jit_link as link;
pub use jit_mem as mem;
