//! jit-layers: the layers that turn compiler inputs into materialization units.
//!
//! Bridges jit-core (sessions, symbols), jit-link (linking) and jit-mem (memory): the object
//! linking layer links relocatable objects into JIT dylibs through the session ([`ObjectJit`]
//! puts it together with a session and a main dylib, without LLVM); the IR layers (feature
//! `llvm`, on by default, and [`Jit`]) compile LLVM IR into objects for it.

mod archive;
pub mod at_exit;
mod at_fork;
mod bytes;
mod cache;
mod entry;
mod export_dynamic;
mod gdb;
mod initializers;
#[cfg(feature = "llvm")]
mod ir;
#[cfg(feature = "llvm")]
mod jit;
mod lazy;
mod object_jit;
mod object_layer;
mod perf_map;
mod signals;
pub mod speculate;
mod symbolize;
mod toolchain;
mod vfork;

pub use archive::{BitcodeSink, StaticLibrary, StaticLibraryGenerator, compiler_runtime_generator};
pub use bytes::ObjectBytes;
pub use cache::{CacheError, CacheKey, CacheKeyBuilder, CacheStats, ObjectCache};
pub use entry::EntryGate;
pub use export_dynamic::export_dynamic;
pub use gdb::GdbRegistration;
#[cfg(feature = "llvm")]
pub use ir::{
    CodStats, CompileOnDemandLayer, CompileOptions, FunctionInfo, IrCompileLayer, IrModule, IrSource, IrTransform,
    IrTransformLayer, ModuleBuilder, PartitionPolicy, PassPipeline, PerFunction, TierUp, WholeModule,
};
#[cfg(feature = "llvm")]
pub use jit::{DEFAULT_CACHE_BYTES, Jit, JitBuilder, Laziness, Speculation};
pub use lazy::{LazyReexports, LazyStats, LazyStub, StubStatus, resolve_reachable_from, resolve_stub_at};
pub use object_jit::{JitFunction, ObjectJit, ObjectJitBuilder};
pub use object_layer::{InitArgs, LinkPlugin, ObjectLinkingLayer};
pub use perf_map::PerfMap;
pub use signals::restore_native_signals;
pub use speculate::{ReplayProfile, SpeculationPolicy, SpeculationStats, Speculator, StaticCallees};
pub use toolchain::{FoundLibrary, find_library, shared_library_defining};
pub use vfork::fork as vfork_fork;
