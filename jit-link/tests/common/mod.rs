//! Shared test support: compiling C/C++ with clang-19, a `dlsym`-backed LinkContext that
//! answers lookups only once every link has issued its own, running a linked program's
//! `main` in a child process, and bounded waits.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jit_link::{
    ExternalDefinition, LinkContext, LinkError, LinkGraph, Linkage, LinkedObject, LookupContinuation, LookupRequest,
    PassConfig, Phase, Scope, SymbolName,
};
use jit_mem::{ManagerConfig, MemoryManager, Placement, TargetAddr};

/// Where the calling test keeps its compiled objects: `sub`, in a directory of the test's own
/// (libtest names each test's thread after the test). Tests of one binary run at once, and two
/// that wrote the same source file could compile each other's half-written copy (CI saw a
/// test link an object with none of its functions).
pub fn work_dir(sub: &str) -> PathBuf {
    let test = std::thread::current().name().unwrap_or("main").replace("::", "-");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jit-link").join(test).join(sub);
    std::fs::create_dir_all(&dir).expect("create test work dir");
    dir
}

/// The directory of the test programs' sources.
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("programs")
}

/// Runs clang-19 with `args`; panics with its stderr on failure.
pub fn clang(args: &[&str]) {
    let out = Command::new("clang-19").args(args).output().expect("run clang-19 (is it installed?)");
    assert!(out.status.success(), "clang-19 {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Compiles each source of `program` (files under tests/programs/<program>/) with `flags`
/// into objects under the work dir; returns (name, bytes) per object.
pub fn compile(program: &str, sources: &[&str], flags: &[&str], tag: &str) -> Vec<(String, Vec<u8>)> {
    let dir = work_dir(&format!("{program}-{tag}"));
    let src_dir = programs_dir().join(program);
    let mut objects = Vec::new();
    for src in sources {
        let input = src_dir.join(src);
        let stem = Path::new(src).file_stem().and_then(|s| s.to_str()).unwrap_or("obj").to_string();
        let output = dir.join(format!("{stem}.o"));
        let mut args: Vec<&str> = vec!["-c"];
        args.extend_from_slice(flags);
        let (i, o) = (input.to_str().unwrap_or_default().to_string(), output.to_str().unwrap_or_default().to_string());
        args.extend_from_slice(&["-I", src_dir.to_str().unwrap_or_default(), &i, "-o", &o]);
        clang(&args);
        objects.push((format!("{stem}.o"), std::fs::read(&output).expect("read object")));
    }
    objects
}

/// Builds `program` natively (same flags) and returns its path.
pub fn build_native(program: &str, sources: &[&str], flags: &[&str], link_flags: &[&str], tag: &str) -> PathBuf {
    let dir = work_dir(&format!("{program}-{tag}"));
    let src_dir = programs_dir().join(program);
    let exe = dir.join("native");
    let inputs: Vec<String> = sources.iter().map(|s| src_dir.join(s).to_string_lossy().into_owned()).collect();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(inputs.iter().map(|s| s.as_str()));
    let inc = src_dir.to_string_lossy().into_owned();
    let exe_s = exe.to_string_lossy().into_owned();
    args.extend_from_slice(&["-I", &inc, "-o", &exe_s]);
    args.extend_from_slice(link_flags);
    clang(&args);
    exe
}

/// Waits for a child, killing it (and failing) if it runs past `limit`.
pub fn wait_bounded(child: std::process::Child, limit: Duration, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for child"),
        Err(_) => {
            // SAFETY: `pid` is our own child, still running (it has not been reaped: the
            // waiting thread has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what}: still running after {limit:?}; killed");
        }
    }
}

/// A watchdog for in-process tests: aborts the process if `done` is not called in time,
/// so a hang fails fast instead of stalling the suite.
pub struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    pub fn start(limit: Duration, what: &'static str) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: {what} did not finish within {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The process's memory manager for tests.
pub fn memory() -> Arc<dyn MemoryManager> {
    static MM: OnceLock<Arc<dyn MemoryManager>> = OnceLock::new();
    MM.get_or_init(|| jit_mem::default_manager(ManagerConfig::default()).expect("memory manager")).clone()
}

/// The process's memory manager placed below 2 GiB, for non-PIC small-code-model objects.
pub fn low_memory() -> Arc<dyn MemoryManager> {
    static MM: OnceLock<Arc<dyn MemoryManager>> = OnceLock::new();
    MM.get_or_init(|| {
        let config = ManagerConfig::default().with_placement(Placement::Low);
        jit_mem::default_manager(config).expect("low memory manager")
    })
    .clone()
}

/// The manager `orcjit link` would choose for these objects: low if any takes absolute
/// 32-bit addresses.
pub fn memory_for(objects: &[(String, Vec<u8>)]) -> Arc<dyn MemoryManager> {
    if objects.iter().any(|(_, bytes)| jit_link::needs_low_placement(bytes)) { low_memory() } else { memory() }
}

/// `dlopen`s a library into the global namespace so `dlsym(RTLD_DEFAULT)` sees it.
pub fn dlopen_global(lib: &str) {
    let c = CString::new(lib).expect("library name");
    // SAFETY: `c` is a valid C string; RTLD_NOW|RTLD_GLOBAL loads the library for good.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!handle.is_null(), "dlopen {lib} failed");
}

/// The process's definition of `name`, if any.
pub fn dlsym(name: &str) -> Option<TargetAddr> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid C string; RTLD_DEFAULT searches the global namespace.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(TargetAddr(p as usize as u64))
}

/// State shared by the contexts of one batch of links.
pub struct Batch {
    /// Definitions made by the batch's graphs (name -> address).
    defs: Mutex<HashMap<SymbolName, TargetAddr>>,
    /// Lookups waiting for every link to have issued its own.
    pending: Mutex<Vec<(LookupRequest, LookupContinuation)>>,
    /// Outcomes, by graph index.
    results: Mutex<Vec<Option<Result<LinkedObject, LinkError>>>>,
    /// How many lookups have been issued.
    pub lookups_issued: AtomicUsize,
    /// How many lookups were issued before the first was answered.
    pub issued_before_first_answer: AtomicUsize,
    /// Names to resolve to a fixed address instead of searching (for fuzzing).
    pub fake: Option<TargetAddr>,
    /// The threads links finished on.
    pub finished_on: Mutex<Vec<std::thread::ThreadId>>,
    /// Where the batch's graphs are linked.
    pub memory: Arc<dyn MemoryManager>,
}

struct ObjectContext {
    batch: Arc<Batch>,
    index: usize,
    losers: Vec<SymbolName>,
}

impl LinkContext for ObjectContext {
    fn memory_manager(&self) -> Arc<dyn MemoryManager> {
        self.batch.memory.clone()
    }

    fn modify_pass_config(&self, _graph: &LinkGraph, config: &mut PassConfig) -> Result<(), LinkError> {
        // What the session does with a losing weak definition: the unit is told to discard
        // it, and the layer makes it external.
        let losers = self.losers.clone();
        config.prepend(Phase::PrePrune, "discard_losing_weak", move |g: &mut LinkGraph| {
            for name in &losers {
                if let Some(sym) = g.find_symbol(name.as_str()) {
                    g.make_external(sym)?;
                }
            }
            Ok(())
        });
        Ok(())
    }

    fn notify_resolved(&self, graph: &LinkGraph) -> Result<(), LinkError> {
        let mut defs = self.batch.defs.lock().expect("defs");
        for (id, sym) in graph.symbols() {
            if sym.is_defined() && sym.scope() != Scope::Local {
                if let (Some(name), Some(addr)) = (sym.name(), graph.symbol_addr(id)) {
                    defs.insert(name.clone(), addr);
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation) {
        self.batch.lookups_issued.fetch_add(1, Ordering::SeqCst);
        self.batch.pending.lock().expect("pending").push((request, continuation));
    }

    fn describe_external(&self, name: &SymbolName, addr: TargetAddr) -> ExternalDefinition {
        // Externals come from this process (dlsym), like the object linking layer's.
        jit_link::process::describe_definition(name.as_str(), addr)
    }

    fn notify_finalized(&self, linked: LinkedObject) {
        self.batch.finished_on.lock().expect("threads").push(std::thread::current().id());
        self.batch.results.lock().expect("results")[self.index] = Some(Ok(linked));
    }

    fn notify_failed(&self, error: LinkError) {
        self.batch.finished_on.lock().expect("threads").push(std::thread::current().id());
        self.batch.results.lock().expect("results")[self.index] = Some(Err(error));
    }
}

impl Batch {
    fn answer(&self, request: &LookupRequest) -> HashMap<SymbolName, TargetAddr> {
        let defs = self.defs.lock().expect("defs");
        let mut found = HashMap::new();
        for (name, _) in &request.symbols {
            let addr = defs.get(name).copied().or_else(|| match self.fake {
                Some(fake) => Some(fake),
                None => dlsym(name.as_str()),
            });
            if let Some(addr) = addr {
                found.insert(name.clone(), addr);
            }
        }
        found
    }
}

/// Which definitions lose: strong beats weak, the first weak wins among weaks.
fn losing_weak_definitions(graphs: &[LinkGraph]) -> Vec<Vec<SymbolName>> {
    let mut owner: HashMap<SymbolName, (usize, Linkage)> = HashMap::new();
    for (i, g) in graphs.iter().enumerate() {
        for (_, sym) in g.symbols() {
            if !sym.is_defined() || sym.scope() == Scope::Local {
                continue;
            }
            let Some(name) = sym.name() else { continue };
            match owner.get(name) {
                None => {
                    owner.insert(name.clone(), (i, sym.linkage()));
                }
                Some((_, Linkage::Weak)) if sym.linkage() == Linkage::Strong => {
                    owner.insert(name.clone(), (i, Linkage::Strong));
                }
                _ => {}
            }
        }
    }
    graphs
        .iter()
        .enumerate()
        .map(|(i, g)| {
            g.symbols()
                .filter(|(_, s)| s.is_defined() && s.scope() != Scope::Local)
                .filter_map(|(_, s)| s.name().cloned())
                .filter(|n| owner.get(n).is_some_and(|(o, _)| *o != i))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect()
        })
        .collect()
}

/// Links graphs as one batch on this thread: every link runs to its lookup, then the
/// lookups are answered (from the batch's definitions, then `dlsym`) in order.
pub fn link_graphs(
    graphs: Vec<LinkGraph>,
    fake: Option<TargetAddr>,
) -> (Arc<Batch>, Vec<Result<LinkedObject, LinkError>>) {
    link_graphs_into(graphs, fake, memory())
}

/// [`link_graphs`] into the given memory manager.
pub fn link_graphs_into(
    graphs: Vec<LinkGraph>,
    fake: Option<TargetAddr>,
    memory: Arc<dyn MemoryManager>,
) -> (Arc<Batch>, Vec<Result<LinkedObject, LinkError>>) {
    let n = graphs.len();
    let losers = losing_weak_definitions(&graphs);
    let batch = Arc::new(Batch {
        defs: Mutex::new(HashMap::new()),
        pending: Mutex::new(Vec::new()),
        results: Mutex::new((0..n).map(|_| None).collect()),
        lookups_issued: AtomicUsize::new(0),
        issued_before_first_answer: AtomicUsize::new(0),
        fake,
        finished_on: Mutex::new(Vec::new()),
        memory,
    });
    for (index, (graph, losers)) in graphs.into_iter().zip(losers).enumerate() {
        let ctx = Arc::new(ObjectContext { batch: batch.clone(), index, losers });
        jit_link::link(graph, ctx);
    }
    batch.issued_before_first_answer.store(batch.lookups_issued.load(Ordering::SeqCst), Ordering::SeqCst);
    loop {
        let next = batch.pending.lock().expect("pending").pop();
        let Some((request, continuation)) = next else { break };
        let found = batch.answer(&request);
        continuation.resolve(Ok(found));
    }
    let results = std::mem::take(&mut *batch.results.lock().expect("results"));
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(LinkError::custom("test", "link never finished", "no outcome"))))
        .collect();
    (batch, results)
}

/// Parses and links objects into the manager `orcjit link` would choose ([`memory_for`]);
/// returns the linked objects and the batch, or the first error.
pub fn link_objects(objects: &[(String, Vec<u8>)]) -> Result<(Arc<Batch>, Vec<LinkedObject>), LinkError> {
    link_objects_into(objects, memory_for(objects))
}

/// [`link_objects`] into the given memory manager.
pub fn link_objects_into(
    objects: &[(String, Vec<u8>)],
    memory: Arc<dyn MemoryManager>,
) -> Result<(Arc<Batch>, Vec<LinkedObject>), LinkError> {
    let mut graphs = Vec::new();
    for (name, bytes) in objects {
        graphs.push(jit_link::graph_from_elf_object(name, bytes)?);
    }
    let (batch, results) = link_graphs_into(graphs, None, memory);
    let mut linked = Vec::new();
    for r in results {
        linked.push(r?);
    }
    Ok((batch, linked))
}

impl Batch {
    /// The address a graph of the batch gave `name`.
    pub fn address_of(&self, name: &str) -> Option<TargetAddr> {
        self.defs.lock().expect("defs").get(name).copied()
    }
}

static FINIS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

extern "C" fn run_finis() {
    let finis = std::mem::take(&mut *FINIS.lock().unwrap_or_else(|e| e.into_inner()));
    for f in finis {
        // SAFETY: `f` is a finalizer of a linked graph whose memory is never freed in the
        // child; finalizers take no arguments.
        let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
        f();
    }
}

/// Runs a linked program like the C runtime would: finalizers queued to run at exit after
/// every handler registered later, initializers in priority order, `main`, then `exit`.
pub fn run_program(batch: &Batch, linked: Vec<LinkedObject>) -> ! {
    let mut inits = Vec::new();
    let mut finis = Vec::new();
    for l in &linked {
        inits.extend(l.init_fini.inits.iter().copied());
    }
    for l in linked.iter().rev() {
        finis.extend(l.init_fini.finis.iter().copied());
    }
    inits.sort_by_key(|e| e.priority);
    finis.sort_by_key(|e| std::cmp::Reverse(e.priority));
    *FINIS.lock().unwrap_or_else(|e| e.into_inner()) = finis.iter().map(|e| e.addr.0).collect();
    // SAFETY: registering a plain `extern "C" fn()` with the C runtime.
    unsafe { libc::atexit(run_finis) };
    // Keep the memory for the rest of the process: exit handlers still run JIT'd code.
    std::mem::forget(linked);
    for init in inits {
        // SAFETY: an initializer of a linked graph; it takes no arguments.
        let f: extern "C" fn() = unsafe { std::mem::transmute(init.addr.0 as usize) };
        f();
    }
    let main = batch.address_of("main").expect("the program defines main");
    // SAFETY: `main` is the program's C `main`, finalized and runnable.
    let main: extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int =
        unsafe { std::mem::transmute(main.0 as usize) };
    let arg0 = CString::new("jit").unwrap_or_default();
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<c_char>()];
    let status = main(1, argv.as_ptr(), envp.as_ptr());
    // SAFETY: `exit` runs the atexit handlers (JIT'd code included, still mapped) and ends
    // the process.
    unsafe { libc::exit(status) }
}

/// The child side: if this process was started as a program runner, link the objects named
/// by the environment, run the program and exit; otherwise return.
pub fn child_entry() {
    let Ok(objects) = std::env::var("JITLINK_TEST_OBJECTS") else {
        return;
    };
    let libs = std::env::var("JITLINK_TEST_LIBS").unwrap_or_default();
    for lib in libs.split(',').filter(|l| !l.is_empty()) {
        dlopen_global(lib);
    }
    if let Ok(path) = std::env::var("JITLINK_TEST_STDOUT") {
        let file = std::fs::File::create(&path).expect("create stdout file");
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open; fd 1 now names the capture file.
        unsafe { libc::dup2(file.as_raw_fd(), 1) };
    }
    let objects: Vec<(String, Vec<u8>)> = objects
        .lines()
        .filter(|l| !l.is_empty())
        .map(|p| {
            let name = Path::new(p).file_name().and_then(|n| n.to_str()).unwrap_or(p).to_string();
            (name, std::fs::read(p).expect("read object"))
        })
        .collect();
    match link_objects(&objects) {
        Ok((batch, linked)) => run_program(&batch, linked),
        Err(e) => {
            eprintln!("link error: {e}");
            // SAFETY: ending the process.
            unsafe { libc::_exit(90) }
        }
    }
}

/// What a program printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub status: Option<i32>,
}

/// Runs the natively built program.
pub fn run_native(exe: &Path) -> Outcome {
    let child = Command::new(exe).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run native");
    let out = wait_bounded(child, Duration::from_secs(60), "native program");
    Outcome { stdout: String::from_utf8_lossy(&out.stdout).into_owned(), status: out.status.code() }
}

/// Runs the objects through jit-link in a child process (this test binary, re-invoked on
/// its `child` test) and returns what the program printed and its exit status.
pub fn run_jit(objects: &[(String, Vec<u8>)], tag: &str, libs: &[&str], child_test: &str) -> (Outcome, String) {
    let dir = work_dir(tag);
    let mut paths = String::new();
    for (name, bytes) in objects {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write object");
        paths.push_str(&p.to_string_lossy());
        paths.push('\n');
    }
    let stdout_path = dir.join("jit.stdout");
    let _ = std::fs::remove_file(&stdout_path);
    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .env("JITLINK_TEST_OBJECTS", paths)
        .env("JITLINK_TEST_LIBS", libs.join(","))
        .env("JITLINK_TEST_STDOUT", &stdout_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let out = wait_bounded(child, Duration::from_secs(60), tag);
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    (Outcome { stdout, status: out.status.code() }, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A raw pointer to an address (for calling JIT'd code in tests).
pub fn fn_ptr(addr: TargetAddr) -> *const c_void {
    addr.0 as usize as *const c_void
}
