//! Definition generators: what a dylib consults for names it does not define (the process's
//! own symbols, a `dlopen`ed library, or anything a host provides).

use std::ffi::{CStr, CString, c_void};
use std::sync::Arc;

use crate::dylib::JitDylib;
use crate::error::{Error, Result};
use crate::loaded_symbols::{self, Found};
use crate::lookup::{LookupKind, SymbolLookupFlags};
use crate::process_tls::{self, thread_locals_to_indices};
use crate::session::SessionInner;
use crate::state::GeneratorStep;
use crate::symbol::{ExecutorAddr, SymbolDef, SymbolFlags, SymbolName};

/// Defines symbols on demand.
///
/// Contract: called outside the session lock, for one lookup at a time per dylib (calls for
/// other lookups of the same dylib wait their turn), with names the dylib does not define,
/// each once.
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
        GeneratorDone { inner, step: Some(step), index }
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
/// libc, libm, the host's own exported functions. A thread-local variable (libstdc++'s
/// `std::__once_callable`) is defined at the address of its `tls_index`, not at the instance
/// of the thread that asked, as JIT'd thread-local symbols are.
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
        ProcessSymbolsGenerator { filter: Some(Box::new(allow)) }
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
        let defs = search(libc::RTLD_DEFAULT, None, self.filter.as_deref(), names);
        done.finish(dylib.define_absolute_missing(defs));
    }
}

/// Resolves names against one shared library, loaded with `dlopen` when the generator is made
/// (and kept loaded for the life of the process, as `dlopen`ed code may be running).
/// Thread-local variables resolve to their `tls_index`, as with [`ProcessSymbolsGenerator`].
pub struct DynamicLibraryGenerator {
    handle: LibraryHandle,
    /// The library's dynamic section, which names it for [`loaded_symbols::find`].
    dynamic: Option<usize>,
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
        let fail = |reason: String| Error::LibraryLoad { path: Arc::from(path), reason: Arc::from(reason) };
        let c_path = CString::new(path).map_err(|_| fail("path contains a NUL byte".into()))?;
        // SAFETY: c_path is a valid NUL-terminated string. RTLD_GLOBAL makes the library's
        // symbols visible process-wide, as `lli --dlopen` does, so code loaded later links to it.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            return Err(fail(dl_error()));
        }
        let dynamic = loaded_symbols::dynamic_section_of(handle);
        Ok(DynamicLibraryGenerator { handle: LibraryHandle(handle), dynamic, filter })
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
        let defs = search(self.handle.0, self.dynamic, self.filter.as_deref(), names);
        done.finish(dylib.define_absolute_missing(defs));
    }
}

/// A generator made on the first lookup that reaches it for a name `wants` accepts (a name
/// nothing searched before it defines), for what a native link adds on its own: a library
/// ([`library`](Self::library), [`located_library`](Self::located_library)) such as
/// `libstdc++.so.6` for C++'s mangled names and runtime (`_Z*`, `__cxa_*`,
/// `__gxx_personality_v0`), which `clang++` links into every program and a JIT whose process
/// lacks it would not find; or a static library read then ([`new`](Self::new)). A program that
/// never needs it never makes it. If making it fails, a lookup that requires one of the names
/// fails with that error (one that only weakly references them finds them absent).
pub struct OnDemandGenerator {
    wants: Filter,
    make: Box<MakeGenerator>,
    made: std::sync::OnceLock<Result<Box<dyn DefinitionGenerator>>>,
}

type MakeGenerator = dyn Fn() -> Result<Box<dyn DefinitionGenerator>> + Send + Sync;

impl OnDemandGenerator {
    /// The generator `make` makes, when first wanted.
    pub fn new(
        wants: impl Fn(&str) -> bool + Send + Sync + 'static,
        make: impl Fn() -> Result<Box<dyn DefinitionGenerator>> + Send + Sync + 'static,
    ) -> Self {
        OnDemandGenerator { wants: Box::new(wants), make: Box::new(make), made: std::sync::OnceLock::new() }
    }

    /// `path` loaded (as [`DynamicLibraryGenerator::load`] does) when first wanted.
    pub fn library(path: &str, wants: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        let owned = path.to_string();
        Self::located_library(path, move || Some(owned.clone()), wants)
    }

    /// The library `locate` finds (a path; `None` if this machine has none, an error naming
    /// `what`), loaded when first wanted.
    pub fn located_library(
        what: &str,
        locate: impl Fn() -> Option<String> + Send + Sync + 'static,
        wants: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let what: Arc<str> = Arc::from(what);
        Self::new(wants, move || match locate() {
            Some(path) => Ok(Box::new(DynamicLibraryGenerator::load(&path)?) as Box<dyn DefinitionGenerator>),
            None => Err(Error::LibraryLoad { path: what.clone(), reason: Arc::from("not found") }),
        })
    }

    /// Whether `name` is one the C++ runtime (`libstdc++`) may define: a mangled name, one of
    /// the Itanium ABI's runtime functions, or one of the few other unmangled names its
    /// headers make code call (`std::call_once`'s `__once_proxy`, `atomic_flag` waits).
    pub fn is_cxx_runtime_name(name: &str) -> bool {
        const UNMANGLED: [&str; 4] =
            ["__dynamic_cast", "__once_proxy", "__atomic_flag_for_address", "__atomic_flag_wait_explicit"];
        name.starts_with("_Z") || name.starts_with("__cxa_") || name.starts_with("__gxx_") || UNMANGLED.contains(&name)
    }
}

impl DefinitionGenerator for OnDemandGenerator {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        kind: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    ) {
        let wanted: Vec<(SymbolName, SymbolLookupFlags)> =
            names.iter().filter(|(n, _)| (self.wants)(n.as_str())).cloned().collect();
        if wanted.is_empty() {
            return done.finish(Ok(()));
        }
        match self.made.get_or_init(|| (self.make)()) {
            Ok(generator) => generator.try_to_generate(dylib, kind, &wanted, done),
            Err(e) if wanted.iter().any(|(_, f)| *f == SymbolLookupFlags::Required) => done.finish(Err(e.clone())),
            Err(_) => done.finish(Ok(())),
        }
    }
}

/// Looks `names` up with `dlsym(handle)`; or, while a JIT'd `dlopen` holds the loader's lock
/// ([`LoaderBusy`](crate::LoaderBusy)), in the loaded objects' tables: all of them for the
/// process, or the library whose dynamic section is at `dynamic` (its own symbols only, where
/// `dlsym` also searches its dependencies).
fn search(
    handle: *mut c_void,
    dynamic: Option<usize>,
    filter: Option<&(dyn Fn(&str) -> bool + Send + Sync)>,
    names: &[(SymbolName, SymbolLookupFlags)],
) -> Vec<(SymbolName, SymbolDef)> {
    let names = names.iter().filter(|(n, _)| filter.is_none_or(|allow| allow(n)));
    // ABSOLUTE: the process's own symbols, which nothing JIT'd defines (see `JitDylib::defined_symbols`).
    let flags = SymbolFlags::EXPORTED | SymbolFlags::ABSOLUTE;
    if loaded_symbols::loader_busy() {
        let only = if handle == libc::RTLD_DEFAULT { None } else { dynamic };
        return names
            .filter_map(|(n, _)| {
                let addr = match loaded_symbols::find(n, only)? {
                    Found::Addr(addr) => ExecutorAddr(addr as u64),
                    Found::ThreadLocal { module, offset } => process_tls::index_of(module, offset),
                };
                Some((n.clone(), SymbolDef::new(addr, flags)))
            })
            .collect();
    }
    let (names, mut addrs): (Vec<SymbolName>, Vec<ExecutorAddr>) = names
        .filter_map(|(n, _)| {
            let addr = match versioned(n) {
                Some((name, version)) => {
                    let (name, version) = (CString::new(name).ok()?, CString::new(version).ok()?);
                    // SAFETY: handle is RTLD_DEFAULT or a live dlopen handle; both strings are
                    // NUL-terminated.
                    unsafe { libc::dlvsym(handle, name.as_ptr(), version.as_ptr()) }
                }
                None => {
                    let c_name = CString::new(n.as_str()).ok()?;
                    // SAFETY: handle is RTLD_DEFAULT or a live dlopen handle; c_name is
                    // NUL-terminated.
                    unsafe { libc::dlsym(handle, c_name.as_ptr()) }
                }
            };
            (!addr.is_null()).then(|| (n.clone(), ExecutorAddr::from_ptr(addr)))
        })
        .unzip();
    thread_locals_to_indices(&mut addrs);
    names.into_iter().zip(addrs).map(|(n, addr)| (n, SymbolDef::new(addr, flags))).collect()
}

/// A reference to one version of a symbol, `name@VERSION` (or `name@@VERSION`, the default
/// one), as an object pinned with `.symver` (`memcpy@GLIBC_2.2.5`) makes: the name and the
/// version, for `dlvsym`. A static linker binds such a reference to that version.
fn versioned(symbol: &str) -> Option<(&str, &str)> {
    let (name, version) = symbol.split_once('@')?;
    let version = version.strip_prefix('@').unwrap_or(version);
    (!name.is_empty() && !version.is_empty()).then_some((name, version))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{Error, ExecutionSession, RequiredState, SymbolLookupSet, SymbolMap};

    /// `name@VERSION` finds that version of `name` (`dlvsym`), as a static linker binds it:
    /// glibc's `memcpy@GLIBC_2.2.5` is the old memcpy, not the default `memcpy@@GLIBC_2.14`.
    #[test]
    fn a_versioned_name_resolves_to_that_version() {
        let (_es, jd) = setup(0);
        jd.add_generator(ProcessSymbolsGenerator::new());
        let old = jd.lookup("memcpy@GLIBC_2.2.5").unwrap().addr.0;
        let default = jd.lookup("memcpy@@GLIBC_2.14").unwrap().addr.0;
        let plain = jd.lookup("memcpy").unwrap().addr.0;
        // SAFETY: dlvsym with NUL-terminated strings, on the process's own symbols.
        let expected = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, c"memcpy".as_ptr(), c"GLIBC_2.2.5".as_ptr()) };
        assert_eq!(old, expected as u64);
        assert_eq!(default, plain, "the default version is what the plain name finds");
        assert_ne!(old, 0);
        assert!(matches!(jd.lookup("memcpy@NO_SUCH_VERSION"), Err(Error::SymbolsNotFound { .. })));
        assert_eq!(versioned("memcpy@@GLIBC_2.14"), Some(("memcpy", "GLIBC_2.14")));
        assert_eq!(versioned("plain"), None);
        assert_eq!(versioned("@x"), None);
    }

    #[test]
    fn process_symbols_resolve_to_the_real_libc_functions() {
        let (_es, jd) = setup(0);
        jd.add_generator(ProcessSymbolsGenerator::new());
        let malloc = jd.lookup("malloc").unwrap();
        assert_eq!(malloc.addr.0, libc::malloc as *const () as usize as u64);
        assert_eq!(malloc.flags, SymbolFlags::EXPORTED | SymbolFlags::ABSOLUTE, "the process's, not JIT'd");
        assert!(matches!(jd.lookup("no_such_function_anywhere"), Err(Error::SymbolsNotFound { .. })));
    }

    #[test]
    fn while_the_loader_is_busy_process_and_library_symbols_come_from_the_loaded_objects_tables() {
        let (_es, jd) = setup(0);
        jd.add_generator(DynamicLibraryGenerator::load("libm.so.6").unwrap());
        jd.add_generator(ProcessSymbolsGenerator::new());
        let (_es2, reference) = setup(0);
        reference.add_generator(DynamicLibraryGenerator::load("libm.so.6").unwrap());
        reference.add_generator(ProcessSymbolsGenerator::new());
        let busy = crate::LoaderBusy::enter();
        let names = ["cos", "malloc", "memcpy", "errno", "stdout"];
        let found: Vec<SymbolDef> = names.iter().map(|n| jd.lookup(n).unwrap()).collect();
        assert!(matches!(jd.lookup("no_such_function_anywhere"), Err(Error::SymbolsNotFound { .. })));
        drop(busy);
        for (name, def) in names.iter().zip(found) {
            assert_eq!(def, reference.lookup(name).unwrap(), "{name}: as dlsym finds it (errno: one tls_index)");
        }
    }

    #[test]
    fn a_filter_keeps_names_out() {
        let (_es, jd) = setup(0);
        jd.add_generator(ProcessSymbolsGenerator::with_filter(|name| name != "free"));
        assert!(jd.lookup("malloc").is_ok());
        assert!(matches!(jd.lookup("free"), Err(Error::SymbolsNotFound { .. })));
    }

    #[test]
    fn a_dlopened_library_provides_its_symbols_and_a_bad_path_is_named() {
        let (_es, jd) = setup(0);
        jd.add_generator(DynamicLibraryGenerator::load("libm.so.6").unwrap());
        let cos = jd.lookup("cos").unwrap();
        // SAFETY: 'cos' from libm has this signature.
        let f: extern "C" fn(f64) -> f64 = unsafe { std::mem::transmute(cos.addr.0 as usize) };
        assert_eq!(f(0.0), 1.0);
        let err = DynamicLibraryGenerator::load("/nonexistent/libnothing.so").err().unwrap();
        assert!(err.to_string().starts_with("cannot load library '/nonexistent/libnothing.so': "), "{err}");
    }

    #[test]
    fn an_on_demand_library_loads_for_the_names_it_wants_and_a_failed_load_fails_only_what_needs_it() {
        let (_es, jd) = setup(0);
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = asked.clone();
        jd.add_generator(OnDemandGenerator::library("libm.so.6", move |name| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            name.starts_with("co")
        }));
        assert!(matches!(jd.lookup("sin"), Err(Error::SymbolsNotFound { .. })), "not a name it wants");
        let cos = jd.lookup("cos").unwrap();
        // SAFETY: 'cos' from libm has this signature.
        let f: extern "C" fn(f64) -> f64 = unsafe { std::mem::transmute(cos.addr.0 as usize) };
        assert_eq!(f(0.0), 1.0);
        assert!(asked.load(std::sync::atomic::Ordering::Relaxed) >= 2);

        let (es2, broken) = setup(0);
        broken.add_generator(OnDemandGenerator::library("/nonexistent/libnothing.so", |name| name.starts_with("_Z")));
        assert!(matches!(broken.lookup("plain_c_name"), Err(Error::SymbolsNotFound { .. })), "never loaded");
        let err = broken.lookup("_Z3foov").unwrap_err();
        assert!(err.to_string().contains("cannot load library '/nonexistent/libnothing.so'"), "{err}");
        // A weak reference to a name the library would have defined is simply absent.
        let set = SymbolLookupSet::new().with_weak(es2.intern("_Z3barv"));
        let found = es2.lookup_blocking(&broken.search_order(), set, RequiredState::Ready).unwrap();
        assert!(found.is_empty());
    }

    /// This thread's instance of `name` in `library`, as `dlsym` gives it.
    fn instance(library: &str, name: &str) -> usize {
        let (library, name) = (CString::new(library).unwrap(), CString::new(name).unwrap());
        // SAFETY: NUL-terminated strings; the library is loaded already (RTLD_NOLOAD).
        unsafe {
            let handle = libc::dlopen(library.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            assert!(!handle.is_null());
            let addr = libc::dlsym(handle, name.as_ptr()) as usize;
            libc::dlclose(handle);
            addr
        }
    }

    #[test]
    fn a_dlopened_library_s_thread_locals_resolve_to_indices_any_thread_can_use() {
        // libstdc++ is no dependency of this test binary: dlopen'ed, its thread-local variables
        // live in blocks the loader makes per thread, the first time that thread touches them.
        // One lookup, so one generator call, asks for a function first: the blocks are read
        // after every dlsym of the call.
        let (es, jd) = setup(1);
        jd.add_generator(DynamicLibraryGenerator::load("libstdc++.so.6").unwrap());
        let names: [&'static str; 3] = ["_ZSt9terminatev", "_ZSt15__once_callable", "_ZSt11__once_call"];
        let set: SymbolLookupSet = names.iter().map(|n| es.intern(n)).collect();
        let found = es.lookup_blocking(&jd.search_order(), set, RequiredState::Ready).unwrap();
        let addr = |n: &str| found[&es.intern(n)].addr.0 as usize;
        assert_eq!(addr(names[0]), instance("libstdc++.so.6", names[0]), "a function is left alone");
        let names = [names[1], names[2]];
        let indices: Vec<ExecutorAddr> = names.iter().map(|n| found[&es.intern(n)].addr).collect();
        let check = move || {
            for (name, &index) in names.iter().zip(&indices) {
                // SAFETY: `index` is the address of a tls_index the generator made for a
                // variable of libstdc++, which stays loaded.
                let here = unsafe { crate::process_tls::tests::instance_at(index) };
                assert_eq!(here, instance("libstdc++.so.6", name), "{name}");
            }
        };
        check.clone()();
        std::thread::spawn(check).join().unwrap();
    }

    struct Later;
    impl DefinitionGenerator for Later {
        fn try_to_generate(
            &self,
            dylib: &JitDylib,
            _k: LookupKind,
            names: &[(SymbolName, SymbolLookupFlags)],
            done: GeneratorDone,
        ) {
            let (dylib, names) = (dylib.clone(), names.to_vec());
            // Finishes on another thread, after the call returned.
            std::thread::spawn(move || {
                let defs = names
                    .into_iter()
                    .filter(|(n, _)| n.starts_with("gen_"))
                    .map(|(n, _)| (n, SymbolDef::new(ExecutorAddr(42), SymbolFlags::EXPORTED)));
                done.finish(dylib.define_absolute(defs));
            });
        }
    }

    struct Refuses;
    impl DefinitionGenerator for Refuses {
        fn try_to_generate(
            &self,
            _d: &JitDylib,
            _k: LookupKind,
            _n: &[(SymbolName, SymbolLookupFlags)],
            done: GeneratorDone,
        ) {
            done.finish(Err(Error::msg("the symbol server is down")));
        }
    }

    #[test]
    fn a_generator_may_finish_asynchronously_on_another_thread() {
        for threads in [0, 2] {
            let (es, jd) = setup(threads);
            jd.add_generator(Later);
            assert_eq!(jd.lookup("gen_a").unwrap().addr, ExecutorAddr(42));
            let missing = es.intern("other");
            let err = es
                .lookup_blocking(&jd.search_order(), SymbolLookupSet::from([missing]), RequiredState::Ready)
                .unwrap_err();
            assert!(matches!(err, Error::SymbolsNotFound { .. }));
        }
    }

    #[test]
    fn a_generator_error_fails_the_lookup_with_that_error() {
        let (_es, jd) = setup(0);
        jd.add_generator(Refuses);
        assert_eq!(jd.lookup("x").unwrap_err().to_string(), "the symbol server is down");
    }

    #[test]
    fn generators_are_consulted_in_search_order_and_only_for_missing_names() {
        let (es, a) = setup(0);
        let b = es.create_dylib("b").unwrap();
        let here = es.intern("gen_here");
        b.define_absolute([(here.clone(), SymbolDef::new(ExecutorAddr(7), SymbolFlags::EXPORTED))]).unwrap();
        a.add_generator(Later);
        let order = crate::SearchOrder::from(&a).then(&b, crate::MatchFlags::All);
        // a's generator comes first in the order, so it wins for a name b also defines.
        assert_eq!(es.lookup_symbol(&order, &here).unwrap().addr, ExecutorAddr(42));
        let b_first = crate::SearchOrder::from(&b).then(&a, crate::MatchFlags::All);
        let other = es.intern("gen_other");
        b.define_absolute([(other.clone(), SymbolDef::new(ExecutorAddr(8), SymbolFlags::EXPORTED))]).unwrap();
        assert_eq!(es.lookup_symbol(&b_first, &other).unwrap().addr, ExecutorAddr(8));
    }

    /// Finishes only when the test says so, after recording that it was called.
    struct Gated {
        started: crossbeam_channel::Sender<()>,
        release: crossbeam_channel::Receiver<()>,
    }
    impl DefinitionGenerator for Gated {
        fn try_to_generate(
            &self,
            dylib: &JitDylib,
            _k: LookupKind,
            names: &[(SymbolName, SymbolLookupFlags)],
            done: GeneratorDone,
        ) {
            let _ = self.started.send(());
            let _ = self.release.recv_timeout(crate::testutil::WATCHDOG);
            let defs = names.iter().map(|(n, _)| (n.clone(), SymbolDef::new(ExecutorAddr(7), SymbolFlags::EXPORTED)));
            done.finish(dylib.define_absolute_missing(defs.collect()));
        }
    }

    /// A 4-thread session whose dylib has a [`Gated`] generator, and a first lookup of `name`,
    /// started on a thread of its own, that waits in it. Returns the session, the dylib, the
    /// sender that lets generator runs finish (one each) and the first lookup's answer.
    fn a_lookup_in_a_gated_generator(
        name: &str,
    ) -> (ExecutionSession, JitDylib, crossbeam_channel::Sender<()>, crossbeam_channel::Receiver<Result<SymbolMap>>)
    {
        let (es, jd) = setup(4);
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        jd.add_generator(Gated { started: started_tx, release: release_rx });
        let (first, first_rx) = oneshot();
        let (es2, jd2, name) = (es.clone(), jd.clone(), es.intern(name));
        std::thread::spawn(move || {
            es2.lookup(&jd2.search_order(), SymbolLookupSet::from([name]), RequiredState::Ready, first)
        });
        recv(&started);
        (es, jd, release, first_rx)
    }

    #[test]
    fn lookups_queued_behind_a_busy_generator_all_complete_even_when_it_defined_their_names() {
        // The first lookup runs the generator, which blocks; three more queue behind it. The
        // generator defines 'x', so the queued lookups no longer need it when they resume.
        let (es, jd, release, first_rx) = a_lookup_in_a_gated_generator("x");
        let x = es.intern("x");
        let queued: Vec<_> = (0..3)
            .map(|_| {
                let (done, rx) = oneshot();
                es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, done);
                rx
            })
            .collect();
        release.send(()).unwrap();
        assert_eq!(recv(&first_rx).unwrap()[&x].addr, ExecutorAddr(7));
        for rx in queued {
            assert_eq!(recv(&rx).unwrap()[&x].addr, ExecutorAddr(7), "a queued lookup was stranded");
        }
    }

    #[test]
    fn a_finished_generator_run_hands_the_generators_to_one_queued_lookup_at_a_time() {
        const QUEUED: usize = 16;
        let (es, jd, release, first_rx) = a_lookup_in_a_gated_generator("first");
        // Each queued lookup needs a name of its own, so each runs the generator in turn.
        let queued: Vec<_> = (0..QUEUED)
            .map(|i| {
                let name = es.intern(&format!("queued{i}"));
                let (done, rx) = oneshot();
                es.lookup(&jd.search_order(), SymbolLookupSet::from([name.clone()]), RequiredState::Ready, done);
                (name, rx)
            })
            .collect();
        for _ in 0..=QUEUED {
            release.send(()).unwrap();
        }
        recv(&first_rx).unwrap();
        for (name, rx) in queued {
            assert_eq!(recv(&rx).unwrap()[&name].addr, ExecutorAddr(7));
        }
        // The first lookup: a pass that starts the generator, one after it. Each queued one: a
        // pass that queues it, one that runs the generator when it is handed over, one after.
        // (Resuming every queued lookup after each run rescanned them all: 16 + 15 + ... + 1
        // passes more.)
        let passes = es.inner.state.lock().job_passes;
        assert_eq!(passes, 2 + 3 * QUEUED, "lookups rescanned while they waited for the generator");
    }

    #[test]
    fn ending_the_session_fails_the_lookups_waiting_for_a_generator_and_the_one_running_it() {
        let (es, jd, release, first_rx) = a_lookup_in_a_gated_generator("first");
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let (done, rx) = oneshot();
                let name = es.intern(&format!("queued{i}"));
                es.lookup(&jd.search_order(), SymbolLookupSet::from([name]), RequiredState::Ready, done);
                rx
            })
            .collect();
        es.end_session().unwrap();
        for rx in queued {
            assert!(matches!(recv(&rx), Err(Error::SessionEnded)));
        }
        release.send(()).unwrap();
        assert!(matches!(recv(&first_rx), Err(Error::SessionEnded)));
    }

    #[test]
    fn concurrent_lookups_through_one_generator_never_define_twice() {
        let (es, jd) = setup(4);
        jd.add_generator(ProcessSymbolsGenerator::new());
        let names = ["malloc", "free", "memcpy", "strlen", "printf", "puts", "qsort", "abort"];
        let results: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    let (es, jd) = (es.clone(), jd.clone());
                    s.spawn(move || {
                        let set: SymbolLookupSet = names.iter().cycle().skip(t).take(8).map(|n| es.intern(n)).collect();
                        let found = es.lookup_blocking(&jd.search_order(), set, RequiredState::Ready).unwrap();
                        found[&es.intern("malloc")].addr.0
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|&a| a == libc::malloc as *const () as usize as u64));
    }
}
