//! A JIT for relocatable objects only (LLVM's LLJIT without its IR layer): a session with a
//! thread pool, a main dylib that sees the process, and the object linking layer over one
//! memory manager. Nothing here calls LLVM, so a program built on it does not load libLLVM
//! (about 14 ms of start-up on the project's VM); [`crate::Jit`] (feature `llvm`) is this
//! plus the IR layers.

use std::collections::VecDeque;
use std::ffi::{CString, c_char};
use std::path::Path;
use std::sync::Arc;

use jit_core::{
    DynamicLibraryGenerator, Error, ExecutionSession, ExecutorAddr, FxHashSet, JitDylib, OnDemandGenerator,
    ProcessSymbolsGenerator, ResourceKey, ResourceManager, Result, SymbolDef, SymbolFlags,
};
use jit_mem::{ManagerConfig, MemoryManager};
use parking_lot::Mutex;

use crate::archive::{TiedObjects, Ties};
use crate::{
    InitArgs, ObjectBytes, ObjectLinkingLayer, StaticLibrary, StaticLibraryGenerator, compiler_runtime_generator,
};

/// Builds an [`ObjectJit`] (and the object half of a [`crate::Jit`]).
#[must_use]
pub struct ObjectJitBuilder {
    threads: Option<usize>,
    process_symbols: bool,
    export_dynamic: bool,
    dlopen: Vec<String>,
    archives: Vec<StaticLibrary>,
    memory: Option<Arc<dyn MemoryManager>>,
    program_threads_only: bool,
}

impl Default for ObjectJitBuilder {
    fn default() -> Self {
        ObjectJitBuilder {
            threads: None,
            process_symbols: true,
            export_dynamic: true,
            dlopen: Vec::new(),
            archives: Vec::new(),
            memory: None,
            program_threads_only: false,
        }
    }
}

impl ObjectJitBuilder {
    /// Worker threads for linking (and compiling, in a [`crate::Jit`]; default: one per CPU).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Whether the main dylib sees the symbols of this process (default: yes).
    pub fn process_symbols(mut self, yes: bool) -> Self {
        self.process_symbols = yes;
        self
    }

    /// Whether libraries that JIT'd code loads with `dlopen` see the main dylib's exported
    /// symbols, and JIT'd `dlsym` finds them, as `-Wl,--export-dynamic` makes a native
    /// executable's (default: yes; see [`crate::export_dynamic()`]).
    pub fn export_dynamic(mut self, yes: bool) -> Self {
        self.export_dynamic = yes;
        self
    }

    /// Loads a shared library whose symbols the main dylib sees (searched before the process's).
    pub fn dlopen(mut self, library: &str) -> Self {
        self.dlopen.push(library.to_string());
        self
    }

    /// A static library whose members the main dylib links when it needs a symbol they define
    /// (searched before shared libraries and the process, in the order given).
    pub fn static_library(mut self, library: StaticLibrary) -> Self {
        self.archives.push(library);
        self
    }

    /// The memory manager to link into (default: jit-mem's default manager, its reservation
    /// near libc: see `jit_mem::Placement::near_libc`).
    pub fn memory_manager(mut self, memory: Arc<dyn MemoryManager>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Whether [`ObjectJit::run_main`] lets the session's worker threads exit first, so that the
    /// program (its constructors, `main`, its exit) runs among its own threads only, as
    /// natively: Google Test's death tests warn when they find others, and
    /// `unshare(CLONE_NEWUSER)` fails in a multithreaded process (default: no). Linking still
    /// uses the workers up to then; what the program needs linked later (a `dlsym` of a
    /// symbol nothing linked yet) is linked on its own thread (see
    /// [`jit_core::TaskDispatcher::retire_workers`]).
    pub fn program_threads_only(mut self, yes: bool) -> Self {
        self.program_threads_only = yes;
        self
    }

    /// Builds the JIT. If a step fails (a library that does not load, say), the session it
    /// had started is ended, so its threads do not outlive the error.
    pub fn build(self) -> Result<ObjectJit> {
        let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let memory = match self.memory {
            Some(m) => m,
            // Near libc: PIE objects compiled by gcc reach libc's variables directly.
            None => jit_mem::default_manager(ManagerConfig::default().with_placement(jit_mem::Placement::near_libc()))
                .map_err(Error::other)?,
        };
        let session = ExecutionSession::with_threads(threads).map_err(Error::other)?;
        let objects = ObjectLinkingLayer::new(&session, memory.clone());
        let archives: Vec<Arc<StaticLibraryGenerator>> =
            self.archives.into_iter().map(|a| Arc::new(StaticLibraryGenerator::new(&objects, a))).collect();
        if self.export_dynamic {
            // For JIT'd `dladdr`, which answers as for a native build linked -rdynamic.
            objects.add_plugin(Arc::new(crate::symbolize::Symbolizer));
        }
        match main_dylib(&session, &objects, &archives, &self.dlopen, self.process_symbols, self.export_dynamic) {
            Ok(main) => {
                let main_args = Arc::new(MainArgs::default());
                session.register_resource_manager(main_args.clone());
                let program_threads_only = self.program_threads_only;
                Ok(ObjectJit { session, main, objects, archives, memory, main_args, program_threads_only })
            }
            Err(e) => {
                let _ = session.end_session();
                Err(e)
            }
        }
    }
}

/// The dylib everything is added to: it sees the static libraries given, then the shared
/// libraries, then (if asked) the process, libstdc++ (for C++ code), UBSan's runtimes (for
/// code built with `-fsanitize=undefined`) and the compiler's runtime library.
fn main_dylib(
    session: &ExecutionSession,
    objects: &ObjectLinkingLayer,
    archives: &[Arc<StaticLibraryGenerator>],
    dlopen: &[String],
    process_symbols: bool,
    export_dynamic: bool,
) -> Result<JitDylib> {
    let main = session.create_dylib("main")?;
    for archive in archives {
        main.add_generator_arc(archive.clone());
    }
    for library in dlopen {
        main.add_generator(DynamicLibraryGenerator::load(library)?);
    }
    if process_symbols {
        main.add_generator(ProcessSymbolsGenerator::new());
        // The C++ runtime, as `clang++` links it, for C++ code when this process lacks it
        // (`orcjit link` does not load LLVM, nor so libstdc++).
        main.add_generator(OnDemandGenerator::library("libstdc++.so.6", OnDemandGenerator::is_cxx_runtime_name));
        // The UndefinedBehaviorSanitizer's runtimes, as `clang -fsanitize=undefined` links them
        // (the minimal one with `-fsanitize-minimal-runtime`, whose handlers say so).
        for (file, minimal) in
            [("libclang_rt.ubsan_standalone-x86_64.so", false), ("libclang_rt.ubsan_minimal-x86_64.so", true)]
        {
            let locate = move || crate::toolchain::compiler_rt(file).map(|p| p.display().to_string());
            let wants = move |n: &str| n.starts_with("__ubsan_") && n.contains("_minimal") == minimal;
            main.add_generator(OnDemandGenerator::located_library(file, locate, wants));
        }
        // Last, as a native link ends with the compiler's runtime library.
        main.add_generator(compiler_runtime_generator(objects));
    }
    // JIT'd code registers its exit handlers with orcjit and exits through it (see
    // `at_exit`), so that what runs at exit can still be compiled then; its `vfork` is a
    // `fork`, whose child compiles what it calls (see `vfork`); the signal handlers it
    // installs are compiled first (see `signals`); its `dlopen` and `dlsym` see its own
    // symbols (see `export_dynamic`).
    let mut overrides = crate::at_exit::overrides().to_vec();
    overrides.extend(crate::vfork::overrides());
    overrides.extend(crate::signals::overrides());
    if export_dynamic {
        overrides.extend(crate::export_dynamic::overrides());
        overrides.extend(crate::symbolize::overrides());
        crate::export_dynamic(&main);
    }
    main.define_absolute(overrides.into_iter().map(|(name, addr)| {
        let flags = SymbolFlags::EXPORTED | SymbolFlags::CALLABLE | SymbolFlags::ABSOLUTE;
        (session.intern(name), SymbolDef::new(ExecutorAddr(addr as u64), flags))
    }))?;
    Ok(main)
}

/// What a static link's objects define (weakly, for some) and refer to, as
/// [`ObjectJit::overriding_members`] follows it.
#[derive(Default)]
struct SymbolScan {
    defined: FxHashSet<String>,
    weak: FxHashSet<String>,
    /// Names referred to, in order, not looked at yet.
    needed: VecDeque<String>,
}

impl SymbolScan {
    /// Notes an object's names; returns those it defines strongly.
    fn note(&mut self, bytes: &[u8]) -> Vec<String> {
        let (defines, needs) = jit_link::defined_and_needed_names(bytes);
        self.needed.extend(needs);
        let mut strong = Vec::new();
        for (name, is_weak) in defines {
            if is_weak {
                self.weak.insert(name.clone());
            } else {
                strong.push(name.clone());
            }
            self.defined.insert(name);
        }
        strong
    }
}

/// A JIT for relocatable objects: add them, look symbols up, run `main`.
///
/// Contract: everything added goes to the main dylib; nothing is linked before a lookup needs
/// it. Dropping it does not end the session (handles may outlive it); [`end`](Self::end) does,
/// freeing all JIT'd memory.
pub struct ObjectJit {
    session: ExecutionSession,
    main: JitDylib,
    objects: ObjectLinkingLayer,
    /// The static libraries' generators, also attached to `main`.
    archives: Vec<Arc<StaticLibraryGenerator>>,
    memory: Arc<dyn MemoryManager>,
    main_args: Arc<MainArgs>,
    /// See [`ObjectJitBuilder::program_threads_only`].
    program_threads_only: bool,
}

/// The argument vectors [`ObjectJit::run_main`] handed to JIT'd code, each with its strings.
/// A C program may keep `argv` and read it until it exits (in an `atexit` handler, a static
/// destructor), so each lives as long as the code that may read it: until the main dylib's
/// default tracker is removed, at the session's end at the latest.
#[derive(Default)]
struct MainArgs {
    vectors: Mutex<Vec<(ResourceKey, ArgVector)>>,
}

/// The storage of an `argv` as C sees it, owned and never read here: the strings, and the
/// NULL-terminated vector of their addresses (as `usize`, the layout of `char *`). Moving it
/// moves neither.
struct ArgVector {
    _strings: Vec<CString>,
    _vector: Box<[usize]>,
}

impl ResourceManager for MainArgs {
    fn handle_remove(&self, key: ResourceKey) -> Result<()> {
        let gone: Vec<(ResourceKey, ArgVector)> = {
            let mut vectors = self.vectors.lock();
            let (gone, kept) = std::mem::take(&mut *vectors).into_iter().partition(|(k, _)| *k == key);
            *vectors = kept;
            gone
        };
        drop(gone);
        Ok(())
    }

    fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey) {
        for (key, _) in self.vectors.lock().iter_mut().filter(|(k, _)| *k == src) {
            *key = dst;
        }
    }
}

impl ObjectJit {
    pub fn builder() -> ObjectJitBuilder {
        ObjectJitBuilder::default()
    }

    pub fn session(&self) -> &ExecutionSession {
        &self.session
    }

    pub fn main_dylib(&self) -> &JitDylib {
        &self.main
    }

    pub fn object_layer(&self) -> &ObjectLinkingLayer {
        &self.objects
    }

    pub fn memory_manager(&self) -> &Arc<dyn MemoryManager> {
        &self.memory
    }

    /// Adds a relocatable object to the main dylib.
    pub fn add_object(&self, name: &str, bytes: impl Into<ObjectBytes>) -> Result<()> {
        self.objects.add(&self.main, name, bytes)
    }

    /// Adds relocatable objects (named, in link order) to the main dylib as a static link
    /// takes them (see [`ObjectLinkingLayer::add_objects`]). The members of the static
    /// libraries that define thread-local variables their code reaches with the local-dynamic
    /// model (see [`jit_link::link_ties`]) are added with them, in their graph, and so are the
    /// members they pull whose strong definitions override weak ones of theirs.
    pub fn add_objects(&self, objects: Vec<(String, ObjectBytes)>) -> Result<()> {
        let ties = objects.iter().map(|(_, bytes)| jit_link::link_ties(bytes)).collect();
        self.add_objects_tied(objects, ties)
    }

    /// [`add_objects`](Self::add_objects), with each object's [`jit_link::link_ties`] already
    /// read (`ties`, one per object).
    pub(crate) fn add_objects_tied(&self, mut objects: Vec<(String, ObjectBytes)>, mut ties: Vec<Ties>) -> Result<()> {
        for (object, object_ties) in self.tied_members(&ties).into_iter().chain(self.overriding_members(&objects)) {
            objects.push(object);
            ties.push(object_ties);
        }
        self.objects.add_objects_grouped(&self.main, objects, &ties)
    }

    /// The static libraries' members that a static link of `objects` pulls and whose strong
    /// definitions override weak ones of the link, taken to be added with the objects, before
    /// anything links: then their definitions win, as natively. Pulled by a lookup, while the
    /// object with the weak definition was being linked, such a member's was a duplicate
    /// definition (as it is for llvm-jitlink-19). The members the link pulls are those that
    /// define, in the first library that does, a name the objects (and the members pulled, in
    /// turn) refer to and none of them defines; found by reading symbol tables only, and, but
    /// for these, left for lookups to add.
    fn overriding_members(&self, objects: &[(String, ObjectBytes)]) -> TiedObjects {
        if self.archives.is_empty() {
            return Vec::new();
        }
        let mut scan = SymbolScan::default();
        // (library, member, its strong definitions) of each member pulled.
        let mut pulled: Vec<(usize, usize, Vec<String>)> = Vec::new();
        let mut seen: FxHashSet<(usize, usize)> = FxHashSet::default();
        for (_, bytes) in objects {
            scan.note(bytes);
        }
        while let Some(name) = scan.needed.pop_front() {
            if scan.defined.contains(&name) {
                continue;
            }
            let found =
                self.archives.iter().enumerate().find_map(|(a, lib)| Some((a, lib.unadded_object_defining(&name)?)));
            match found {
                Some((a, (m, bytes))) if seen.insert((a, m)) => {
                    let strong = scan.note(bytes);
                    pulled.push((a, m, strong));
                }
                // Pulled already, or not a member object's: searched once.
                _ => {
                    scan.defined.insert(name);
                }
            }
        }
        let weak = &scan.weak;
        pulled
            .into_iter()
            .filter(|(_, _, strong)| strong.iter().any(|name| weak.contains(name)))
            .flat_map(|(a, m, _)| self.archives[a].take(m))
            .collect()
    }

    /// Sends the static libraries' LLVM bitcode members to `sink` (see
    /// [`StaticLibraryGenerator::set_bitcode_sink`]).
    pub(crate) fn set_bitcode_sink(&self, sink: &crate::BitcodeSink) {
        for archive in &self.archives {
            archive.set_bitcode_sink(sink.clone());
        }
    }

    /// Whether the builder was given static libraries.
    pub(crate) fn has_static_libraries(&self) -> bool {
        !self.archives.is_empty()
    }

    /// The static libraries' members to link with inputs whose [`jit_link::link_ties`] are
    /// `ties`: those that define the thread-local variables the inputs (and these members,
    /// transitively) reach with the local-dynamic model and none of them defines. They are
    /// marked added in their libraries.
    pub(crate) fn tied_members(&self, ties: &[Ties]) -> TiedObjects {
        let mut taken: TiedObjects = Vec::new();
        let mut defined: FxHashSet<String> = ties.iter().flat_map(|(defines, _)| defines.iter().cloned()).collect();
        let needs = |ties: &mut dyn Iterator<Item = &Ties>, defined: &FxHashSet<String>| -> Vec<String> {
            let keys = ties.flat_map(|(_, needs)| needs);
            keys.filter(|key| jit_link::tls_tie_name(key).is_some() && !defined.contains(*key)).cloned().collect()
        };
        let mut missing = needs(&mut ties.iter(), &defined);
        // Rounds until no member taken needs another; in each, the first library that defines
        // a variable supplies it, as a static linker searches them.
        while !missing.is_empty() && !self.archives.is_empty() {
            let from = taken.len();
            for archive in &self.archives {
                if missing.is_empty() {
                    break;
                }
                for (object, object_ties) in archive.take_tied(&missing) {
                    missing.retain(|key| !object_ties.0.contains(key));
                    defined.extend(object_ties.0.iter().cloned());
                    taken.push((object, object_ties));
                }
            }
            missing = needs(&mut taken[from..].iter().map(|(_, ties)| ties), &defined);
        }
        taken
    }

    pub fn add_object_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("cannot read '{}': {e}", path.display())))?;
        self.add_object(&path.display().to_string(), bytes)
    }

    /// The address of `name` in the main dylib, once it (and all it reaches) is Ready.
    pub fn lookup_address(&self, name: &str) -> Result<ExecutorAddr> {
        self.main.lookup(name).map(|def| def.addr)
    }

    /// `name` as a typed function pointer, e.g.
    /// `jit.lookup::<unsafe extern "C" fn(i32) -> i32>("square")`. Only `unsafe extern "C" fn`
    /// types qualify: nothing checks that the JIT'd function has that signature, so calling it
    /// is the caller's promise.
    pub fn lookup<F: JitFunction>(&self, name: &str) -> Result<F> {
        let addr = self.lookup_address(name)?;
        // SAFETY: `addr` is the Ready, executable address of `name`; F is an `unsafe fn`
        // pointer type, so whoever calls it vouches for the signature.
        Ok(unsafe { F::from_address(addr.0 as usize) })
    }

    /// Links what has static constructors and runs those not run yet (see
    /// [`ObjectLinkingLayer::initialize`]).
    pub fn initialize(&self, args: InitArgs) -> Result<()> {
        self.objects.initialize(&self.main, args)
    }

    /// Runs finalizers, `atexit` handlers and static destructors of what was initialized.
    pub fn deinitialize(&self) -> Result<()> {
        self.objects.deinitialize(&self.main)
    }

    /// Runs the program as a C runtime would, up to `main`'s return: looks `main` up, runs
    /// static constructors (with argc/argv/envp), then calls `main(argc, argv, envp)` with
    /// `argv = [argv0, args...]`, through the entry gate. Returns main's status; finalizers
    /// run at [`deinitialize`](Self::deinitialize) (or, for a command that exits, at exit).
    pub fn run_main(&self, argv0: &str, args: &[String]) -> Result<i32> {
        let main = self.lookup_address("main")?;
        self.run_main_at(main, argv0, args)
    }

    /// `run_main` with `main` already looked up (a [`crate::Jit`] looks it up before it starts
    /// its speculator).
    pub(crate) fn run_main_at(&self, main: ExecutorAddr, argv0: &str, args: &[String]) -> Result<i32> {
        let strings: Vec<CString> = std::iter::once(argv0)
            .chain(args.iter().map(String::as_str))
            .map(|a| CString::new(a).map_err(|_| Error::msg(format!("argument '{a}' contains a NUL byte"))))
            .collect::<Result<_>>()?;
        let pointers: Box<[usize]> = strings.iter().map(|a| a.as_ptr() as usize).chain([0]).collect();
        let argc = strings.len() as i32;
        let argv = pointers.as_ptr() as *const *const c_char;
        // Kept until the code that may read it goes (see `MainArgs`).
        let key = self.main.default_tracker().key();
        self.main_args.vectors.lock().push((key, ArgVector { _strings: strings, _vector: pointers }));
        // SAFETY: libc's `environ` is the NULL-terminated environment of this process.
        let envp = unsafe { environ };
        let init = InitArgs { argc, argv, envp: envp as *const *const c_char };
        if self.program_threads_only {
            self.session.dispatcher().retire_workers();
        }
        self.initialize(init)?;
        let gate = self.objects.entry_gate()?;
        // SAFETY: 'main' is Ready; C's main takes (int, char **, char **): argv is a
        // NULL-terminated vector of C strings, kept in `main_args` as long as this code lives
        // (the program may keep it), and envp is the process's environment.
        let status = unsafe { gate.call(main, argc as u64, argv as u64, envp as u64) };
        Ok(status as i32)
    }

    /// Ends the session: fails what is pending and frees all JIT'd memory (running the
    /// finalizers of what was initialized).
    pub fn end(self) -> Result<()> {
        self.session.end_session()
    }
}

unsafe extern "C" {
    static environ: *mut *mut c_char;
}

/// Function pointer types a [`ObjectJit::lookup`] (or [`crate::Jit::lookup`]) may return:
/// `unsafe extern "C" fn` of up to eight arguments.
///
/// # Safety
/// Implementors must be function pointer types that are unsafe to call (implemented here for
/// `unsafe extern "C" fn`; not meant to be implemented elsewhere).
pub unsafe trait JitFunction: Copy {
    /// # Safety
    /// `addr` must be executable code.
    unsafe fn from_address(addr: usize) -> Self;
}

macro_rules! jit_function {
    ($($arg:ident),*) => {
        // SAFETY: an `unsafe extern "C" fn` pointer: calling it requires `unsafe`.
        unsafe impl<R, $($arg),*> JitFunction for unsafe extern "C" fn($($arg),*) -> R {
            unsafe fn from_address(addr: usize) -> Self {
                // SAFETY: the caller guarantees `addr` is code; a function pointer is one usize.
                unsafe { std::mem::transmute::<usize, Self>(addr) }
            }
        }
    };
}

jit_function!();
jit_function!(A);
jit_function!(A, B);
jit_function!(A, B, C);
jit_function!(A, B, C, D);
jit_function!(A, B, C, D, E);
jit_function!(A, B, C, D, E, F);
jit_function!(A, B, C, D, E, F, G);
jit_function!(A, B, C, D, E, F, G, H);
