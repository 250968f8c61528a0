//! orcjit core.
