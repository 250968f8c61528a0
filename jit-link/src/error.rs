//! The one error type of jit-link: every variant names the object and the symbol, section,
//! relocation or offset involved.

use jit_mem::{MemError, TargetAddr};

use crate::SymbolName;

/// A boxed error from outside jit-link (a context's lookup, a user pass).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while building or linking a graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The object is not a well-formed ELF x86-64 relocatable file.
    #[error("{object}: malformed object: {what}")]
    Malformed { object: String, what: String },

    /// The object uses a feature jit-link does not implement.
    #[error("{object}: unsupported: {what}")]
    Unsupported { object: String, what: String },

    /// A relocation type jit-link does not implement.
    #[error("{object}: unsupported relocation {relocation} in {section} at offset {offset:#x}")]
    UnsupportedRelocation { object: String, relocation: String, section: String, offset: u64 },

    /// An initial- or local-exec TLS relocation: JIT'd code cannot join the process's static
    /// TLS block.
    #[error(
        "{object}: {relocation} in {section} at offset {offset:#x} uses the initial-exec or local-exec TLS model, \
         which JIT'd code cannot use (it cannot join the process's static TLS block); compile with -fPIC \
         (general- or local-dynamic TLS)"
    )]
    StaticTlsModel { object: String, relocation: String, section: String, offset: u64 },

    /// A relocation that cannot be applied as written: bad symbol index, offset outside its
    /// section, or a target that makes no sense for its type.
    #[error("{object}: invalid relocation {relocation} in {section} at offset {offset:#x}: {reason}")]
    BadRelocation { object: String, relocation: String, section: String, offset: u64, reason: String },

    /// Two definitions of one non-local name in one graph.
    #[error("{object}: duplicate definition of symbol '{symbol}'")]
    DuplicateSymbol { object: String, symbol: SymbolName },

    /// A required external symbol was not found by the context. Names of runtimes a JIT
    /// cannot provide get a hint saying so (see [`runtime_hint`]).
    #[error("undefined symbol '{symbol}' referenced from {object} ({location}){hint}", hint = runtime_hint(.symbol.as_str()))]
    UndefinedSymbol { object: String, symbol: SymbolName, location: String },

    /// A fixup's value does not fit its field.
    #[error(
        "{object}: {kind} fixup at {source_location} to '{target}' (value {value:#x}) is out of range; \
         the target is too far away for this relocation"
    )]
    FixupOutOfRange { object: String, kind: crate::EdgeKind, source_location: String, target: String, value: i128 },

    /// Non-PIC code refers directly (`R_X86_64_PC32`, `R_X86_64_32`, `R_X86_64_32S`) to an
    /// external out of the reference's reach, and no stand-in in reach would be correct (see
    /// [`crate::ExternalDefinition`]).
    #[error(
        "{object}: {relocation} at {location} refers to '{symbol}' at {addr}, out of its reach, and {reason}",
        relocation = crate::far::relocation_name(*.kind)
    )]
    FarReference {
        object: String,
        kind: crate::EdgeKind,
        location: String,
        symbol: SymbolName,
        addr: TargetAddr,
        reason: String,
    },

    /// An absolute 32-bit reference in memory placed above its reach: the object was built
    /// for the small code model without `-fPIC`.
    #[error(
        "{object}: {relocation} at {location} needs the address of '{target}' in 32 bits, but the memory manager's \
         reservation lies at {reservation}; link non-PIC small-code-model objects into a manager placed low \
         (jit_mem::Placement::Low), or compile them with -fPIC or -mcmodel=large",
        relocation = crate::far::relocation_name(*.kind)
    )]
    NeedsLowPlacement { object: String, kind: crate::EdgeKind, location: String, target: String, reservation: String },

    /// A graph operation was given an id or offset that does not fit the graph.
    #[error("{object}: invalid graph operation: {what}")]
    InvalidGraph { object: String, what: String },

    /// A malformed `.eh_frame` record.
    #[error("{object}: malformed .eh_frame record at offset {offset:#x}: {reason}")]
    EhFrame { object: String, offset: u64, reason: String },

    /// Thread-local storage that cannot be laid out or used.
    #[error("{object}: thread-local storage: {what}")]
    Tls { object: String, what: String },

    /// The memory manager failed.
    #[error("{object}: memory: {source}")]
    Memory {
        object: String,
        #[source]
        source: MemError,
    },

    /// The context's lookup failed.
    #[error("{object}: looking up external symbols failed: {source}")]
    Lookup {
        object: String,
        #[source]
        source: BoxError,
    },

    /// The context dropped a lookup continuation without calling it.
    #[error("{object}: the link context dropped the lookup continuation without answering")]
    LookupAbandoned { object: String },

    /// A pass (built in or a plugin's) or the context failed.
    #[error("{object}: {what}: {source}")]
    Custom {
        object: String,
        what: String,
        #[source]
        source: BoxError,
    },
}

impl LinkError {
    /// A custom error for passes and contexts outside jit-link.
    pub fn custom(object: impl Into<String>, what: impl Into<String>, source: impl Into<BoxError>) -> LinkError {
        LinkError::Custom { object: object.into(), what: what.into(), source: source.into() }
    }
}

/// What to add to an undefined-symbol error when the name belongs to a compiler runtime that
/// cannot come into a process already running: the sanitizers that replace the allocator and
/// map shadow memory at start-up, and the profiling runtimes, whose counters a native link
/// gathers from every object's sections into one; or to one the program must ask for, as
/// `-fopenmp` links OpenMP's and `-latomic` libatomic.
pub fn runtime_hint(symbol: &str) -> &'static str {
    const GOMP: &str = "; OpenMP code from gcc -fopenmp needs GCC's runtime loaded (orcjit: --dlopen libgomp.so.1)";
    const HINTS: [(&str, &str); 10] = [
        (
            "__asan_",
            "; code built with -fsanitize=address needs AddressSanitizer's runtime in the process from its start",
        ),
        (
            "__tsan_",
            "; code built with -fsanitize=thread needs ThreadSanitizer's runtime in the process from its start",
        ),
        (
            "__msan_",
            "; code built with -fsanitize=memory needs MemorySanitizer's runtime in the process from its start",
        ),
        ("__hwasan_", "; code built with -fsanitize=hwaddress needs its runtime in the process from its start"),
        (
            "__llvm_profile_",
            "; code built with -fprofile-instr-generate needs a profile runtime, which orcjit does not link",
        ),
        ("__gcov_", "; code built with --coverage needs a profile runtime, which orcjit does not link"),
        ("GOMP_", GOMP),
        ("omp_", GOMP),
        ("__kmpc_", "; OpenMP code from clang -fopenmp needs LLVM's runtime loaded (orcjit: --dlopen libomp.so.5)"),
        (
            "__atomic_",
            "; atomics the CPU cannot do inline call libatomic, which a native link adds with -latomic \
             (orcjit: --dlopen libatomic.so.1)",
        ),
    ];
    HINTS.iter().find(|(prefix, _)| symbol.starts_with(prefix)).map_or("", |(_, hint)| hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_sanitizer_name_says_why_and_others_say_nothing_more() {
        let undefined = |name: &str| {
            LinkError::UndefinedSymbol { object: "a.o".into(), symbol: name.into(), location: ".text+0x4".into() }
                .to_string()
        };
        assert_eq!(undefined("missing"), "undefined symbol 'missing' referenced from a.o (.text+0x4)");
        let asan = undefined("__asan_init");
        assert!(asan.starts_with("undefined symbol '__asan_init' referenced from a.o (.text+0x4); "), "{asan}");
        assert!(asan.contains("-fsanitize=address"), "{asan}");
        assert!(undefined("__llvm_profile_runtime").contains("-fprofile-instr-generate"));
        assert!(undefined("GOMP_parallel").contains("--dlopen libgomp.so.1"));
        assert!(undefined("omp_get_thread_num").contains("--dlopen libgomp.so.1"));
        assert!(undefined("__kmpc_fork_call").contains("--dlopen libomp.so.5"));
        assert!(undefined("__atomic_load_16").contains("--dlopen libatomic.so.1"));
    }
}
