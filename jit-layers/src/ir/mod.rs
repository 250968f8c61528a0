//! LLVM IR in orcjit: modules (bitcode, text, or built on the compile thread) compiled into
//! objects on the dispatcher's threads, optionally transformed first.

mod cod;
mod compile;
mod layer;
mod module;
mod partition;
mod unit;
mod wire;

pub use cod::{CodStats, CompileOnDemandLayer, FunctionInfo, PartitionPolicy, PerFunction, TierUp, WholeModule};
pub use compile::CompileOptions;
pub use layer::{IrCompileLayer, IrTransform, IrTransformLayer, PassPipeline};
pub use module::{IrModule, IrSource, ModuleBuilder};
pub(crate) use module::{link_ties, linked};
