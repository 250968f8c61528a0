//! Definition generators: what a dylib consults for names it does not define (the process's
//! own symbols, a `dlopen`ed library, or anything a host provides).

use std::ffi::{CStr, CString, c_void};
use std::sync::Arc;

use crate::dylib::JitDylib;
use crate::error::{Error, Result};
use crate::lookup::{LookupKind, SymbolLookupFlags};
use crate::session::SessionInner;
use crate::state::GeneratorStep;
use crate::symbol::{ExecutorAddr, SymbolDef, SymbolFlags, SymbolName};

/// Defines symbols on demand.
///
/// Contract: called outside the session lock, for one lookup at a time per dylib (calls for
/// other lookups of the same dylib wait their turn), with names the dylib does not define.
/// Define what you can in `dylib` (any way: `define`, `define_absolute`), then call
/// `done.finish(result)`, at once or later from any thread. Dropping `done` finishes with `Ok`.
/// An `Err` fails the lookup with that error.
pub trait DefinitionGenerator: Send + Sync + 'static {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        kind: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    );
}

/// The continuation of a lookup waiting on a generator.
pub struct GeneratorDone {
    inner: Arc<SessionInner>,
    step: Option<GeneratorStep>,
    index: usize,
}

impl GeneratorDone {
    pub(crate) fn new(inner: Arc<SessionInner>, step: GeneratorStep, index: usize) -> Self {
        GeneratorDone {
            inner,
            step: Some(step),
            index,
        }
    }

    /// Resumes the lookup.
    pub fn finish(mut self, result: Result<()>) {
        self.resume(result);
    }

    fn resume(&mut self, result: Result<()>) {
        if let Some(step) = self.step.take() {
            self.inner.generator_finished(step, self.index, result);
        }
    }
}

impl Drop for GeneratorDone {
    fn drop(&mut self) {
        self.resume(Ok(()));
    }
}

type Filter = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Resolves names against the symbols already loaded in this process (`dlsym(RTLD_DEFAULT)`):
/// libc, libm, the host's own exported functions.
#[derive(Default)]
pub struct ProcessSymbolsGenerator {
    filter: Option<Filter>,
}

impl ProcessSymbolsGenerator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Only names for which `allow` returns true are looked for.
    pub fn with_filter(allow: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        ProcessSymbolsGenerator {
            filter: Some(Box::new(allow)),
        }
    }
}

impl DefinitionGenerator for ProcessSymbolsGenerator {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        _kind: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    ) {
        let defs = search(libc::RTLD_DEFAULT, self.filter.as_deref(), names);
        done.finish(dylib.define_absolute_missing(defs));
    }
}

/// Resolves names against one shared library, loaded with `dlopen` when the generator is made
/// (and kept loaded for the life of the process, as `dlopen`ed code may be running).
pub struct DynamicLibraryGenerator {
    handle: LibraryHandle,
    filter: Option<Filter>,
}

struct LibraryHandle(*mut c_void);
// SAFETY: a dlopen handle is a process-global token; dlsym on it is thread-safe (POSIX).
unsafe impl Send for LibraryHandle {}
// SAFETY: as above; the handle is never mutated after dlopen.
unsafe impl Sync for LibraryHandle {}

impl DynamicLibraryGenerator {
    /// Loads `path` (a file name searched like `dlopen` does, e.g. `libm.so.6`, or a path).
    pub fn load(path: &str) -> Result<Self> {
        Self::load_filtered(path, None)
    }

    pub fn load_with_filter(path: &str, allow: impl Fn(&str) -> bool + Send + Sync + 'static) -> Result<Self> {
        Self::load_filtered(path, Some(Box::new(allow)))
    }

    fn load_filtered(path: &str, filter: Option<Filter>) -> Result<Self> {
        let fail = |reason: String| Error::LibraryLoad {
            path: Arc::from(path),
            reason: Arc::from(reason),
        };
        let c_path = CString::new(path).map_err(|_| fail("path contains a NUL byte".into()))?;
        // SAFETY: c_path is a valid NUL-terminated string. RTLD_GLOBAL makes the library's
        // symbols visible process-wide, as `lli --dlopen` does, so code loaded later links to it.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            return Err(fail(dl_error()));
        }
        Ok(DynamicLibraryGenerator {
            handle: LibraryHandle(handle),
            filter,
        })
    }
}

impl DefinitionGenerator for DynamicLibraryGenerator {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        _kind: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    ) {
        let defs = search(self.handle.0, self.filter.as_deref(), names);
        done.finish(dylib.define_absolute_missing(defs));
    }
}

fn search(
    handle: *mut c_void,
    filter: Option<&(dyn Fn(&str) -> bool + Send + Sync)>,
    names: &[(SymbolName, SymbolLookupFlags)],
) -> Vec<(SymbolName, SymbolDef)> {
    names
        .iter()
        .filter(|(n, _)| filter.is_none_or(|allow| allow(n)))
        .filter_map(|(n, _)| {
            let c_name = CString::new(n.as_str()).ok()?;
            // SAFETY: handle is RTLD_DEFAULT or a live dlopen handle; c_name is NUL-terminated.
            let addr = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
            (!addr.is_null()).then(|| {
                (
                    n.clone(),
                    SymbolDef::new(ExecutorAddr::from_ptr(addr), SymbolFlags::EXPORTED),
                )
            })
        })
        .collect()
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on
    // this thread; it is copied at once.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
    }
}
