//! The object linking layer on real objects compiled by clang-19: linked code runs, trackers
//! free what they own (after finalizers; large data allocated apart too), plugins take part,
//! weak definitions resolve across objects, mutually dependent objects link on a pool of one
//! thread, and a chain of thousands of objects links without recursing object by object.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jit_core::{ExecutionSession, JitDylib, ProcessSymbolsGenerator, SymbolLookupSet};
use jit_layers::{InitArgs, LinkPlugin, ObjectLinkingLayer};
use jit_link::{LinkGraph, LinkedObject, PassConfig, Phase};
use jit_mem::{ManagerConfig, MemoryManager};

const WATCHDOG: Duration = Duration::from_secs(60);

/// Compiles C `source` (named `name.c`) with clang-19 -fPIC and returns the object's bytes.
fn object(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    object_with(dir, name, source, &["-fPIC"])
}

/// As [`object`], with `flags` instead of -fPIC.
fn object_with(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    let obj = dir.join(format!("{name}.o"));
    std::fs::write(&src, source).unwrap();
    let out = Command::new("clang-19").args(["-c", "-O1"]).args(flags).arg(&src).arg("-o").arg(&obj).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(obj).unwrap()
}

/// A session on a pool of `threads` (in place for 0) with a dylib that finds the process's
/// symbols, and an object linking layer.
fn setup(threads: usize) -> (ExecutionSession, JitDylib, ObjectLinkingLayer, Arc<dyn MemoryManager>) {
    let es = if threads == 0 { ExecutionSession::in_place() } else { ExecutionSession::with_threads(threads).unwrap() };
    let memory = jit_mem::default_manager(ManagerConfig::default()).unwrap();
    let layer = ObjectLinkingLayer::new(&es, memory.clone());
    let jd = es.create_dylib("main").unwrap();
    jd.add_generator(ProcessSymbolsGenerator::new());
    (es, jd, layer, memory)
}

/// Runs `f` on another thread, failing the test if it takes longer than the watchdog.
fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watched_on(std::thread::Builder::new(), f)
}

/// [`watched`], on a thread made by `thread` (one with a stack of a given size, say).
fn watched_on<T: Send + 'static>(thread: std::thread::Builder, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    rx.recv_timeout(WATCHDOG).expect("watchdog: hung")
}

#[test]
fn linked_code_runs_and_calls_across_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let (_es, jd, layer, _) = setup(2);
    let a = object(tmp.path(), "a", "int twice(int); int quad(int x) { return twice(twice(x)); }");
    let b = object(tmp.path(), "b", "int twice(int x) { return 2 * x; }");
    layer.add(&jd, "a.o", a).unwrap();
    layer.add(&jd, "b.o", b).unwrap();
    let quad = watched(move || jd.lookup("quad")).unwrap();
    // SAFETY: 'quad' is the C function int quad(int) linked above.
    let quad: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(quad.addr.0 as usize) };
    assert_eq!(quad(5), 20);
}

static FINALIZED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn orcjit_test_note_finalized() {
    FINALIZED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn removing_a_tracker_runs_finalizers_and_frees_the_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (es, jd, layer, memory) = setup(2);
    let obj = object(
        tmp.path(),
        "fin",
        "void orcjit_test_note_finalized(void);
         static int ready;
         __attribute__((constructor)) static void init(void) { ready = 7; }
         __attribute__((destructor)) static void fini(void) { orcjit_test_note_finalized(); }
         int value(void) { return ready; }",
    );
    // The host provides the callback the object's destructor calls.
    let note = es.intern("orcjit_test_note_finalized");
    let note_addr = jit_core::ExecutorAddr::from_ptr(orcjit_test_note_finalized as *const ());
    jd.define_absolute([(note, jit_core::SymbolDef::new(note_addr, jit_core::SymbolFlags::EXPORTED))]).unwrap();
    layer.entry_gate().unwrap(); // made once per layer; not part of what the tracker owns
    let before = memory.stats().in_use;
    let tracker = jd.create_tracker();
    layer.add_with_tracker(&jd, "fin.o", obj, Some(&tracker)).unwrap();
    let (layer2, jd2) = (layer.clone(), jd.clone());
    watched(move || layer2.initialize(&jd2, InitArgs::default())).unwrap();
    let value = jd.lookup("value").unwrap();
    // SAFETY: 'value' is int value(void), linked and initialized above.
    let value: extern "C" fn() -> i32 = unsafe { std::mem::transmute(value.addr.0 as usize) };
    assert_eq!(value(), 7, "the constructor ran");
    assert!(memory.stats().in_use > before);
    let finalized = FINALIZED.load(Ordering::SeqCst);
    tracker.remove().unwrap();
    assert_eq!(FINALIZED.load(Ordering::SeqCst), finalized + 1, "the destructor ran on removal");
    assert_eq!(memory.stats().in_use, before, "the memory was freed");
    assert!(jd.lookup("value").is_err());
    es.end_session().unwrap();
}

/// Whether anything is mapped at `addr` (`/proc/self/maps`).
fn mapped(addr: u64) -> bool {
    jit_mem::maps::process_mappings().unwrap().iter().any(|m| m.range.contains(&addr))
}

/// An object whose large data (5 GiB under the medium code model) the linker allocates apart
/// from the manager: the code reaches it, and removing the tracker unmaps it with the rest.
#[test]
fn large_data_allocated_apart_goes_with_its_tracker() {
    let tmp = tempfile::tempdir().unwrap();
    let (es, jd, layer, memory) = setup(2);
    let obj = object_with(
        tmp.path(),
        "huge",
        "static char huge[5UL << 30];
         char *huge_at(unsigned long i) { huge[i] += 1; return &huge[i]; }",
        &["-fPIC", "-mcmodel=medium"],
    );
    layer.entry_gate().unwrap(); // made once per layer; not part of what the tracker owns
    let before = memory.stats().in_use;
    let tracker = jd.create_tracker();
    layer.add_with_tracker(&jd, "huge.o", obj, Some(&tracker)).unwrap();
    let jd2 = jd.clone();
    let huge_at = watched(move || jd2.lookup("huge_at")).unwrap();
    // SAFETY: 'huge_at' is the C function char *huge_at(unsigned long) linked above.
    let huge_at: extern "C" fn(u64) -> *mut u8 = unsafe { std::mem::transmute(huge_at.addr.0 as usize) };
    let (first, last) = (huge_at(0), huge_at((5 << 30) - 1));
    assert_eq!(last as u64 - first as u64, (5 << 30) - 1);
    // SAFETY: both point into the object's array, live until the tracker is removed.
    assert_eq!(unsafe { (*first, *last) }, (1, 1));
    let in_manager = memory.stats().in_use - before;
    assert!(in_manager < 1 << 20, "the array is not in the manager: {in_manager} bytes");
    assert!(!memory.reservation().contains(&jit_mem::TargetAddr(first as u64)));
    assert!(mapped(first as u64) && mapped(last as u64));
    tracker.remove().unwrap();
    assert!(!mapped(first as u64) && !mapped(last as u64), "the array was unmapped with its object");
    assert_eq!(memory.stats().in_use, before);
    es.end_session().unwrap();
}

#[derive(Default)]
struct Watcher {
    passes: AtomicUsize,
    finalized: AtomicUsize,
}

impl LinkPlugin for Watcher {
    fn modify_pass_config(&self, _: &JitDylib, _: &LinkGraph, config: &mut PassConfig) -> jit_core::Result<()> {
        let count = Arc::new(AtomicUsize::new(0));
        config.add(Phase::PostPrune, "watcher", move |g: &mut LinkGraph| {
            count.fetch_add(g.block_count(), Ordering::SeqCst);
            Ok(())
        });
        self.passes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn notify_finalized(&self, _: &JitDylib, _: &LinkedObject) {
        self.finalized.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn plugins_add_passes_to_every_link_and_hear_the_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let (_es, jd, layer, _) = setup(1);
    let watcher = Arc::new(Watcher::default());
    layer.add_plugin(watcher.clone());
    layer.add(&jd, "p.o", object(tmp.path(), "p", "int p(void) { return 1; }")).unwrap();
    layer.add(&jd, "q.o", object(tmp.path(), "q", "int p(void); int q(void) { return p() + 1; }")).unwrap();
    watched(move || jd.lookup("q")).unwrap();
    assert_eq!(watcher.passes.load(Ordering::SeqCst), 2);
    assert_eq!(watcher.finalized.load(Ordering::SeqCst), 2);
}

#[test]
fn a_weak_definition_loses_to_a_strong_one_in_another_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (_es, jd, layer, _) = setup(2);
    let weak = object(
        tmp.path(),
        "weak",
        "__attribute__((weak)) int which(void) { return 1; } int call_which(void) { return which(); }",
    );
    let strong = object(tmp.path(), "strong", "int which(void) { return 2; }");
    layer.add(&jd, "weak.o", weak).unwrap();
    layer.add(&jd, "strong.o", strong).unwrap();
    let call = watched(move || jd.lookup("call_which")).unwrap();
    // SAFETY: int call_which(void), linked above.
    let call: extern "C" fn() -> i32 = unsafe { std::mem::transmute(call.addr.0 as usize) };
    assert_eq!(call(), 2, "the weak object's own call binds to the strong definition");
}

#[test]
fn mutually_dependent_objects_link_on_a_pool_of_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let (es, jd, layer, _) = setup(1);
    let n = 12;
    for i in 0..n {
        let next = (i + 1) % n;
        let src = format!("int f{next}(int); int f{i}(int x) {{ return x <= 0 ? {i} : f{next}(x - 1); }}");
        layer.add(&jd, &format!("f{i}.o"), object(tmp.path(), &format!("f{i}"), &src)).unwrap();
    }
    let names: SymbolLookupSet = (0..n).map(|i| es.intern(&format!("f{i}"))).collect();
    let order = jd.search_order();
    let es2 = es.clone();
    let found = watched(move || es2.lookup_blocking(&order, names, jit_core::RequiredState::Ready)).unwrap();
    let f0 = found[&es.intern("f0")];
    // SAFETY: int f0(int), linked above.
    let f0: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(f0.addr.0 as usize) };
    assert_eq!(f0(30), 30 % n);
}

/// `template` with each `(from, to)` name in its string table replaced by one of the same
/// length, as `objcopy --redefine-sym` would: copies of one compiled object that define and
/// need names of their own, without a compiler run for each.
fn renamed(template: &[u8], names: &[(&str, String)]) -> Vec<u8> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(template).unwrap();
    let strtab = file.section_by_name(".strtab").expect("a string table");
    let (start, size) = strtab.file_range().unwrap();
    let mut bytes = template.to_vec();
    let table = &mut bytes[start as usize..(start + size) as usize];
    for (from, to) in names {
        assert_eq!(from.len(), to.len());
        let needle = format!("\0{from}\0");
        let at = table.windows(needle.len()).position(|w| w == needle.as_bytes()).expect("the name is in .strtab");
        table[at + 1..at + 1 + to.len()].copy_from_slice(to.as_bytes());
    }
    bytes
}

/// A chain of 4,000 objects, each calling into the next, links from one lookup of its first
/// function, in place and on a pool of one thread: each link's lookup of the next object's
/// symbol is a task of its own, not a call nested in the last one. (llvm-jitlink-19 recurses
/// through lookup, materialization and link for each object: on such a chain it overflows its
/// stack between 1,000 and 2,000 objects.)
#[test]
fn a_chain_of_thousands_of_objects_links_without_recursing_object_by_object() {
    const N: usize = 4000;
    const STACK: usize = 256 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let template = object(
        tmp.path(),
        "link",
        "int f_99999(int); int g_00000 = 1;
         int f_00000(int x) { return x > 0 ? f_99999(x - 1) + g_00000 : g_00000; }",
    );
    let last = object(tmp.path(), "last", &format!("int f_{:05}(int x) {{ return 1000 * x; }}", N));
    for threads in [0, 1] {
        let (_es, jd, layer, _) = setup(threads);
        for i in 0..N {
            let names = [
                ("f_00000", format!("f_{i:05}")),
                ("g_00000", format!("g_{i:05}")),
                ("f_99999", format!("f_{:05}", i + 1)),
            ];
            layer.add(&jd, &format!("link{i}.o"), renamed(&template, &names)).unwrap();
        }
        layer.add(&jd, "last.o", last.clone()).unwrap();
        // In place, the links run on the thread that looks up: give it a small stack (a
        // hundred bytes per object would overflow it).
        let first = watched_on(std::thread::Builder::new().stack_size(STACK), move || jd.lookup("f_00000")).unwrap();
        // SAFETY: int f_00000(int), linked above: calls down the chain N deep.
        let first: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(first.addr.0 as usize) };
        // Down to the last object: one from each link, 0 from the last.
        assert_eq!(first(N as i32), N as i32, "in place: {}", threads == 0);
        // Three links down, then the fourth link's own value.
        assert_eq!(first(3), 4);
    }
}

#[test]
fn a_link_error_fails_the_lookup_with_the_linker_s_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (_es, jd, layer, _) = setup(2);
    let obj =
        object(tmp.path(), "needs", "int missing_everywhere(void); int needs(void) { return missing_everywhere(); }");
    layer.add(&jd, "needs.o", obj).unwrap();
    let err = watched(move || jd.lookup("needs")).unwrap_err().to_string();
    assert!(err.contains("undefined symbol 'missing_everywhere' referenced from needs.o"), "{err}");
}

/// Forks this process and returns the child's exit status (a child that gets past its
/// `pthread_atfork` child handlers exits with 0).
fn fork_status() -> i32 {
    // SAFETY: the child only runs the atfork child handlers and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
}

/// JIT'd code's `pthread_atfork` handlers run at a `fork` while their object is linked, and
/// are forgotten when it is removed: a later `fork` calls nothing in the freed memory.
#[test]
fn atfork_handlers_of_a_removed_object_are_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let obj = object(
        tmp.path(),
        "atfork",
        "#include <pthread.h>
         #include <unistd.h>
         static void in_child(void) { _exit(42); }
         __attribute__((constructor)) static void init(void) { pthread_atfork(0, 0, in_child); }",
    );
    let jit = jit_layers::ObjectJit::builder().threads(2).build().unwrap();
    let tracker = jit.main_dylib().create_tracker();
    jit.object_layer().add_with_tracker(jit.main_dylib(), "atfork.o", obj, Some(&tracker)).unwrap();
    let jd = jit.main_dylib().clone();
    let layer = jit.object_layer().clone();
    watched(move || layer.initialize(&jd, InitArgs::default())).unwrap();
    assert_eq!(fork_status(), 42, "the child handler ran in the child");
    tracker.remove().unwrap();
    assert_eq!(fork_status(), 0, "the removed object's child handler was not called");
    jit.end().unwrap();
}

/// An `ObjectJit` with its default memory links PIE code that reaches libc's variables with
/// 32-bit PC-relative references (gcc's default for PIE code; clang's with
/// `-fdirect-access-external-data`): its memory lies near libc, so the references reach
/// libc's own `optind` and `environ`, which it reads and writes.
#[test]
fn an_object_jit_links_pie_code_that_reaches_libc_variables_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let obj = object_with(
        tmp.path(),
        "libcvars",
        "#include <unistd.h>
         extern char **environ;
         char **jit_environ(void) { return environ; }
         int jit_swap_optind(int value) { int old = optind; optind = value; return old; }",
        &["-fPIE", "-fdirect-access-external-data"],
    );
    let jit = jit_layers::ObjectJit::builder().threads(1).build().unwrap();
    jit.add_object("libcvars.o", obj).unwrap();
    let environ_of: unsafe extern "C" fn() -> *mut *mut libc::c_char = jit.lookup("jit_environ").unwrap();
    let swap_optind: unsafe extern "C" fn(i32) -> i32 = jit.lookup("jit_swap_optind").unwrap();
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
        static mut optind: libc::c_int;
    }
    // SAFETY: reads libc's variables; no other thread of this test writes them.
    let (libc_environ, libc_optind) = unsafe { (environ, optind) };
    // SAFETY: the functions of the object above, `char **(void)` and `int (int)`.
    unsafe {
        assert_eq!(environ_of(), libc_environ, "libc's own environ");
        assert_eq!(swap_optind(7), libc_optind);
        let now = optind;
        assert_eq!(now, 7, "written to libc's own optind");
        swap_optind(libc_optind);
    }
    jit.end().unwrap();
}
