//! orcjit's linker: turns relocatable objects into running code through a LinkGraph.
//!
//! May use jit-mem; knows nothing of sessions or LLVM.
