//! Compile on demand: modules added so that each function is compiled when first called,
//! behind lazy stubs, a partition at a time from a module read once.

mod layer;
mod plan;
mod rest;
mod units;

pub use layer::CompileOnDemandLayer;
pub use plan::{FunctionInfo, PartitionPolicy, PerFunction, WholeModule};
pub use units::{CodStats, TierUp};
