//! Lazy call-through stubs on real code compiled by clang-19: the body of a stub is linked on
//! its first call and not before; arguments of every kind arrive intact through the re-entry
//! path; concurrent first calls compile once; a pool of one thread suffices; redirection is
//! atomic for a thread calling meanwhile; failures and stale calls abort with a message (run in
//! a child process, this test binary run again with `ORCJIT_LAZY_CHILD` set).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use jit_core::{
    ExecutionSession, ExecutorAddr, Interface, JitDylib, MatchFlags, MaterializationResponsibility,
    MaterializationUnit, Priority, SymbolFlags, SymbolName, Task, TaskKind,
};
use jit_layers::{LazyReexports, LazyStub, ObjectLinkingLayer};
use jit_mem::{ManagerConfig, MemoryManager};

use common::{WATCHDOG, watchdog};

const CHILD: &str = "ORCJIT_LAZY_CHILD";

/// Compiles C `source` (named `name.c`) with clang-19 and `flags`; returns the object's bytes.
fn object(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    let obj = dir.join(format!("{name}.o"));
    std::fs::write(&src, source).unwrap();
    let out = Command::new("clang-19")
        .args(["-c", "-O1", "-fPIC"])
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(obj).unwrap()
}

/// A session whose bodies live in `bodies` (which sees `stubs` and the process) and whose
/// stubs live in `stubs`.
struct Setup {
    es: ExecutionSession,
    bodies: JitDylib,
    stubs: JitDylib,
    layer: ObjectLinkingLayer,
    lazy: LazyReexports,
}

fn setup(threads: usize) -> Setup {
    let es = ExecutionSession::with_threads(threads).unwrap();
    let memory = jit_mem::default_manager(ManagerConfig::default()).unwrap();
    setup_with(es, memory)
}

fn setup_with(es: ExecutionSession, memory: Arc<dyn MemoryManager>) -> Setup {
    let layer = ObjectLinkingLayer::new(&es, memory.clone());
    let lazy = LazyReexports::new(&es, memory).unwrap();
    let bodies = es.create_dylib("bodies").unwrap();
    let stubs = es.create_dylib("stubs").unwrap();
    bodies.add_to_link_order(&stubs, MatchFlags::ExportedOnly);
    bodies.add_generator(jit_core::ProcessSymbolsGenerator::new());
    Setup { es, bodies, stubs, layer, lazy }
}

impl Setup {
    /// Stubs `lazy_<name>` in `stubs` for each `name` in `bodies`.
    fn add_stubs(&self, names: &[&str]) {
        let stubs = names
            .iter()
            .map(|n| LazyStub::new(self.es.intern(&format!("lazy_{n}")), &self.bodies, self.es.intern(n)))
            .collect();
        self.lazy.add(&self.stubs, stubs, None).unwrap();
    }

    /// The address of `name` in `dylib`, looked up (so materialized) under the watchdog.
    fn addr(&self, dylib: &JitDylib, name: &str) -> u64 {
        let _w = watchdog("lookup");
        dylib.lookup(name).unwrap().addr.0
    }

    fn name(&self, s: &str) -> SymbolName {
        self.es.intern(s)
    }
}

/// An object unit that counts its materializations: it links through the layer's `emit`.
struct CountingObject {
    name: String,
    interface: Interface,
    layer: ObjectLinkingLayer,
    bytes: Vec<u8>,
    count: Arc<AtomicUsize>,
}

impl CountingObject {
    fn new(setup: &Setup, name: &str, functions: &[&str], bytes: Vec<u8>) -> (Self, Arc<AtomicUsize>) {
        let interface =
            functions.iter().map(|f| (setup.name(f), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE)).collect();
        let count = Arc::new(AtomicUsize::new(0));
        let unit =
            CountingObject { name: name.into(), interface, layer: setup.layer.clone(), bytes, count: count.clone() };
        (unit, count)
    }
}

impl MaterializationUnit for CountingObject {
    fn name(&self) -> &str {
        &self.name
    }
    fn symbols(&self) -> &Interface {
        &self.interface
    }
    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.layer.emit(mr, &self.name, &self.bytes);
    }
    fn discard(&mut self, _: &JitDylib, name: &SymbolName) {
        self.interface.remove(name);
    }
}

/// Writes every caller-saved vector register, upper ymm halves included where the CPU has
/// them: a first-call listener doing this proves the re-entry path restores them.
fn clobber_vector_registers() {
    // SAFETY: writes only the registers the asm declares clobbered.
    unsafe {
        std::arch::asm!(
            "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2", "pcmpeqd xmm3, xmm3",
            "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5", "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
        );
    }
    if is_x86_feature_detected!("avx") {
        // SAFETY: AVX is available.
        unsafe { clobber_ymm() };
    }
}

#[target_feature(enable = "avx")]
fn clobber_ymm() {
    // SAFETY: writes only the registers the asm declares clobbered.
    unsafe {
        std::arch::asm!(
            "vpcmpeqd ymm0, ymm0, ymm0", "vpcmpeqd ymm1, ymm1, ymm1", "vpcmpeqd ymm2, ymm2, ymm2",
            "vpcmpeqd ymm3, ymm3, ymm3", "vpcmpeqd ymm4, ymm4, ymm4", "vpcmpeqd ymm5, ymm5, ymm5",
            "vpcmpeqd ymm6, ymm6, ymm6", "vpcmpeqd ymm7, ymm7, ymm7",
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        );
    }
}

const ARGUMENTS_C: &str = r#"
#include <stdarg.h>
long ints(long a, long b, long c, long d, long e, long f, long g, long h) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}
double doubles(double a, double b, double c, double d, double e, double f, double g, double h, double i) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i;
}
double weighted_sum(int n, ...) {
    va_list ap;
    va_start(ap, n);
    double s = 0;
    for (int i = 0; i < n; i++) s += va_arg(ap, double) * (i + 1);
    va_end(ap);
    return s;
}
"#;

type Ints = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64, i64, i64) -> i64;
type Doubles = unsafe extern "C" fn(f64, f64, f64, f64, f64, f64, f64, f64, f64) -> f64;
type WeightedSum = unsafe extern "C" fn(i32, ...) -> f64;

#[test]
fn arguments_of_every_kind_pass_through_the_first_and_later_calls_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    s.layer.add(&s.bodies, "arguments.o", object(tmp.path(), "arguments", ARGUMENTS_C, &[])).unwrap();
    s.add_stubs(&["ints", "doubles", "weighted_sum"]);
    s.lazy.set_first_call_listener(|_, _, _, _| clobber_vector_registers());
    let _w = watchdog("calls through stubs");

    // SAFETY: each stub stands for the C function of that signature above.
    let ints: Ints = unsafe { std::mem::transmute(s.addr(&s.stubs, "lazy_ints") as usize) };
    // SAFETY: as above.
    let doubles: Doubles = unsafe { std::mem::transmute(s.addr(&s.stubs, "lazy_doubles") as usize) };
    // SAFETY: as above.
    let weighted_sum: WeightedSum = unsafe { std::mem::transmute(s.addr(&s.stubs, "lazy_weighted_sum") as usize) };
    let want_ints = |a: [i64; 8]| a.iter().enumerate().map(|(i, x)| (i as i64 + 1) * x).sum::<i64>();
    let want_doubles = |a: &[f64]| a.iter().enumerate().map(|(i, x)| (i as f64 + 1.0) * x).sum::<f64>();

    for round in 0..2 {
        let entries = s.lazy.stats().resolver_entries;
        let a = [1i64 << 40, -3, 5, -7, 11, -13, 17 << 20, -19];
        // SAFETY: see above; six arguments go in registers, two on the stack.
        assert_eq!(unsafe { ints(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) }, want_ints(a), "round {round}");
        let d = [0.5, -1.25, 2.0, 1e10, -3.5, 0.125, 7.0, -8.75, 1024.0];
        // SAFETY: eight arguments in xmm0-7, one on the stack.
        let got = unsafe { doubles(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]) };
        assert_eq!(got, want_doubles(&d), "round {round}");
        let v = [1.5, -2.0, 3.25, 4.0, -5.5, 6.0, 7.75, 8.0, 9.5, -10.0];
        // SAFETY: a C varargs call: %al says eight vector registers are used, two doubles go on
        // the stack.
        let got = unsafe { weighted_sum(10, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]) };
        assert_eq!(got, want_doubles(&v), "round {round}");
        let entered = s.lazy.stats().resolver_entries - entries;
        assert_eq!(entered, if round == 0 { 3 } else { 0 }, "later calls go straight to the bodies");
    }
    for name in ["ints", "doubles", "weighted_sum"] {
        let status = s.lazy.stub_status(&s.stubs, &s.name(&format!("lazy_{name}"))).unwrap();
        assert_eq!(status.target, Some(ExecutorAddr(s.addr(&s.bodies, name))), "{name}'s slot holds its body");
    }
}

#[test]
fn avx_vector_arguments_pass_through_the_first_call_exactly() {
    if !is_x86_feature_detected!("avx") {
        println!("skipped: this CPU has no AVX");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    let source = "#include <immintrin.h>\n\
                  __m256d axpy(__m256d a, __m256d x, __m256d y, double scale) { return a * x + y * scale; }\n";
    s.layer.add(&s.bodies, "avx.o", object(tmp.path(), "avx", source, &["-mavx"])).unwrap();
    s.add_stubs(&["axpy"]);
    s.lazy.set_first_call_listener(|_, _, _, _| clobber_vector_registers());
    let _w = watchdog("AVX call through a stub");
    let axpy = s.addr(&s.stubs, "lazy_axpy");
    for round in 0..2 {
        // SAFETY: AVX is available; the stub stands for `axpy` above.
        let got =
            unsafe { call_axpy(axpy, [1.0, 2.0, 3.0, 4.0], [0.5, -0.5, 0.25, -0.25], [8.0, 16.0, 32.0, 64.0], 2.0) };
        assert_eq!(got, [16.5, 31.0, 64.75, 127.0], "round {round}");
    }
    assert_eq!(s.lazy.stats().resolver_entries, 1);
}

/// Calls `axpy(a, x, y, scale)` at `f` with ymm arguments.
///
/// # Safety
/// `f` must be `__m256d axpy(__m256d, __m256d, __m256d, double)`, and the CPU must have AVX.
#[target_feature(enable = "avx")]
unsafe fn call_axpy(f: u64, a: [f64; 4], x: [f64; 4], y: [f64; 4], scale: f64) -> [f64; 4] {
    use std::arch::x86_64::{__m256d, _mm256_loadu_pd, _mm256_storeu_pd};
    // The lint cannot tell that `__m256d` is passed in a ymm register as C's is.
    #[allow(improper_ctypes_definitions)]
    type Axpy = unsafe extern "C" fn(__m256d, __m256d, __m256d, f64) -> __m256d;
    // SAFETY: guaranteed by the caller.
    let f: Axpy = unsafe { std::mem::transmute(f as usize) };
    let mut out = [0.0; 4];
    // SAFETY: the arrays hold four doubles each.
    unsafe {
        let r = f(_mm256_loadu_pd(a.as_ptr()), _mm256_loadu_pd(x.as_ptr()), _mm256_loadu_pd(y.as_ptr()), scale);
        _mm256_storeu_pd(out.as_mut_ptr(), r);
    }
    out
}

#[test]
fn a_stub_is_emitted_without_its_body_and_the_first_call_links_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    let bytes = object(tmp.path(), "twice", "int twice(int x) { return 2 * x; }", &[]);
    let (unit, links) = CountingObject::new(&s, "twice.o", &["twice"], bytes);
    s.bodies.define(unit).unwrap();
    s.add_stubs(&["twice"]);
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (h, l) = (heard.clone(), links.clone());
    s.lazy.set_first_call_listener(move |jd, stub, body_jd, body| {
        let linked_before = l.load(Ordering::SeqCst);
        h.lock().push(format!("{}:{stub} -> {}:{body} (linked before: {linked_before})", jd.name(), body_jd.name()));
    });
    let _w = watchdog("first call");
    let stub = s.addr(&s.stubs, "lazy_twice");
    assert_eq!(links.load(Ordering::SeqCst), 0, "looking the stub up links nothing");
    let status = s.lazy.stub_status(&s.stubs, &s.name("lazy_twice")).unwrap();
    assert_eq!((status.stub.0, status.target), (stub, None), "the slot still leads to the resolver");
    assert!(status.flags.contains(SymbolFlags::CALLABLE));

    // SAFETY: the stub stands for int twice(int).
    let twice: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(stub as usize) };
    assert_eq!(twice(21), 42);
    assert_eq!(twice(-4), -8);
    assert_eq!(links.load(Ordering::SeqCst), 1);
    assert_eq!(s.lazy.stats().resolver_entries, 1, "the second call did not enter the resolver");
    assert_eq!(*heard.lock(), ["stubs:lazy_twice -> bodies:twice (linked before: 0)"]);
}

/// `resolve_stub_at` (what JIT'd `sigaction` and `signal` call on the handler they install)
/// links a stub's body ahead of its first call, and its first call then goes straight there.
#[test]
fn resolving_a_stub_at_its_address_links_its_body_before_the_first_call() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    let bytes = object(tmp.path(), "thrice", "int thrice(int x) { return 3 * x; }", &[]);
    let (unit, links) = CountingObject::new(&s, "thrice.o", &["thrice"], bytes);
    s.bodies.define(unit).unwrap();
    s.add_stubs(&["thrice"]);
    let _w = watchdog("resolve ahead");
    let stub = s.addr(&s.stubs, "lazy_thrice");
    assert!(!jit_layers::resolve_stub_at(stub + 1), "not a stub's address");
    assert_eq!(links.load(Ordering::SeqCst), 0);
    assert!(jit_layers::resolve_stub_at(stub), "an unresolved stub");
    assert_eq!(links.load(Ordering::SeqCst), 1, "the body is linked");
    let status = s.lazy.stub_status(&s.stubs, &s.name("lazy_thrice")).unwrap();
    assert!(status.target.is_some(), "the stub leads to its body");
    assert!(!jit_layers::resolve_stub_at(stub), "a resolved stub is left alone");
    let entries = s.lazy.stats().resolver_entries;
    // SAFETY: the stub stands for int thrice(int).
    let thrice: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(stub as usize) };
    assert_eq!(thrice(5), 15);
    assert_eq!(s.lazy.stats().resolver_entries, entries, "the first call did not enter the resolver");
}

#[test]
fn many_threads_calling_one_unresolved_stub_at_once_link_its_body_once() {
    const THREADS: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    let source = "long mix(long x) { long h = x; for (int i = 0; i < 8; i++) h = h * 31 + i; return h; }";
    let (unit, links) = CountingObject::new(&s, "mix.o", &["mix"], object(tmp.path(), "mix", source, &[]));
    s.bodies.define(unit).unwrap();
    s.add_stubs(&["mix"]);
    let _w = watchdog("concurrent first calls");
    let stub = s.addr(&s.stubs, "lazy_mix") as usize;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // SAFETY: the stub stands for long mix(long).
                let mix: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(stub) };
                barrier.wait();
                (i, mix(i as i64))
            })
        })
        .collect();
    let want = |x: i64| (0..8).fold(x, |h, i| h.wrapping_mul(31).wrapping_add(i));
    for t in threads {
        let (i, got) = t.join().unwrap();
        assert_eq!(got, want(i as i64));
    }
    assert_eq!(links.load(Ordering::SeqCst), 1, "the body was linked exactly once");
    let entries = s.lazy.stats().resolver_entries;
    assert!((1..=THREADS as u64).contains(&entries), "{entries} resolver entries");
}

#[test]
fn a_pool_of_one_thread_runs_lazy_calls_from_program_and_pool_threads_and_from_jit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(1);
    // `outer`, called lazily, itself calls `inner` through its stub: the nested first call
    // happens inside JIT'd code, on whichever thread runs it.
    let source = "int lazy_inner(int);\n\
                  int inner(int x) { return x + 100; }\n\
                  int outer(int x) { return lazy_inner(x) * 2; }\n";
    s.layer.add(&s.bodies, "nested.o", object(tmp.path(), "nested", source, &[])).unwrap();
    s.add_stubs(&["inner", "outer"]);
    let _w = watchdog("one pool thread");
    let outer = s.addr(&s.stubs, "lazy_outer") as usize;

    // First call on the pool's only thread, which must link `outer` while it waits.
    let (tx, rx) = crossbeam_channel::bounded(1);
    s.es.dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
        // SAFETY: the stub stands for int outer(int).
        let outer: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(outer) };
        let _ = tx.send(outer(1));
    }));
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 202);
    // SAFETY: as above.
    let outer: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(outer) };
    assert_eq!(outer(2), 204, "and from a program thread");
    assert_eq!(s.lazy.stats().resolver_entries, 2, "one entry per stub");
}

#[test]
fn redirect_sends_every_later_call_to_the_new_body_while_another_thread_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(2);
    let source = "long old_body(long x) { return x + 1; }\nlong new_body(long x) { return x + 1000; }\n";
    s.layer.add(&s.bodies, "bodies.o", object(tmp.path(), "bodies", source, &[])).unwrap();
    s.lazy.add(&s.stubs, vec![LazyStub::new(s.name("f"), &s.bodies, s.name("old_body"))], None).unwrap();
    let _w = watchdog("redirect");

    let err = s.lazy.redirect(&s.stubs, &s.name("f"), ExecutorAddr(0x1000)).unwrap_err();
    assert_eq!(err.to_string(), "no materialized lazy stub 'f' in dylib 'stubs'", "not looked up yet");
    let stub = s.addr(&s.stubs, "f") as usize;
    let new_body = ExecutorAddr(s.addr(&s.bodies, "new_body"));

    let redirected = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, c) = (redirected.clone(), calls.clone());
    let hammer = std::thread::spawn(move || {
        // SAFETY: the stub stands for long old_body(long), then long new_body(long).
        let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(stub) };
        let mut after = 0;
        while after < 10_000 {
            let was_redirected = r.load(Ordering::Acquire);
            let got = f(7);
            assert!(got == 8 || got == 1007, "{got} comes from neither body");
            if was_redirected {
                assert_eq!(got, 1007, "a call that started after redirect returned went to the old body");
                after += 1;
            }
            c.fetch_add(1, Ordering::Release);
        }
    });
    // Redirect while the other thread is calling (it has made at least 1,000 calls).
    while calls.load(Ordering::Acquire) < 1000 {
        std::hint::spin_loop();
    }
    s.lazy.redirect(&s.stubs, &s.name("f"), new_body).unwrap();
    redirected.store(true, Ordering::Release);
    hammer.join().unwrap();
    assert_eq!(s.lazy.stub_status(&s.stubs, &s.name("f")).unwrap().target, Some(new_body));
    let err = s.lazy.redirect(&s.stubs, &s.name("nope"), new_body).unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[test]
fn later_units_take_their_stubs_from_the_batch_of_earlier_ones() {
    let s = setup(1);
    let f = s.es.intern("f");
    let body = jit_core::SymbolDef::new(ExecutorAddr(0x1234), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE);
    s.bodies.define_absolute([(f.clone(), body)]).unwrap();
    s.lazy.add(&s.stubs, vec![LazyStub::new(s.name("a"), &s.bodies, f.clone())], None).unwrap();
    s.lazy.add(&s.stubs, vec![LazyStub::new(s.name("b"), &s.bodies, f.clone())], None).unwrap();
    let (a, b) = (s.addr(&s.stubs, "a"), s.addr(&s.stubs, "b"));
    let stats = s.lazy.stats();
    assert_eq!((stats.batches, stats.live_stubs, stats.free_stubs), (1, 2, 254), "{stats:?}");
    assert_eq!(b.abs_diff(a), 16, "neighbours in one batch");
}

#[test]
fn stubs_must_be_callable_and_distinct() {
    let s = setup(1);
    let f = s.name("f");
    let mut data = LazyStub::new(s.name("d"), &s.bodies, f.clone());
    data.flags = SymbolFlags::EXPORTED;
    let err = s.lazy.add(&s.stubs, vec![data], None).unwrap_err().to_string();
    assert!(err.contains("lazy stub 'd' in dylib 'stubs' must be a callable symbol"), "{err}");
    let twice = vec![LazyStub::new(s.name("t"), &s.bodies, f.clone()), LazyStub::new(s.name("t"), &s.bodies, f)];
    let err = s.lazy.add(&s.stubs, twice, None).unwrap_err().to_string();
    assert_eq!(err, "duplicate definition of 't' in dylib 'stubs'");
    assert_eq!(s.lazy.stats().live_stubs, 0);
}

#[test]
fn ending_the_session_frees_the_stubs_and_dropping_the_manager_the_trampoline() {
    let es = ExecutionSession::with_threads(1).unwrap();
    let memory = jit_mem::default_manager(ManagerConfig::default()).unwrap();
    let lazy = LazyReexports::new(&es, memory.clone()).unwrap();
    let trampoline = memory.stats().in_use;
    let jd = es.create_dylib("main").unwrap();
    let f = es.intern("f");
    let body = jit_core::SymbolDef::new(ExecutorAddr(0x1234), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE);
    jd.define_absolute([(f.clone(), body)]).unwrap();
    let tracker = jd.create_tracker();
    lazy.add(&jd, vec![LazyStub::new(es.intern("a"), &jd, f.clone())], Some(&tracker)).unwrap();
    lazy.add(&jd, vec![LazyStub::new(es.intern("b"), &jd, f)], None).unwrap();
    jd.lookup("a").unwrap();
    jd.lookup("b").unwrap();
    assert!(memory.stats().in_use > trampoline);
    tracker.remove().unwrap();
    let stats = lazy.stats();
    assert_eq!((stats.live_stubs, stats.dead_stubs, stats.batches), (1, 1, 1), "{stats:?}");
    assert!(lazy.stub_status(&jd, &es.intern("a")).is_none(), "a removed stub is gone");
    es.end_session().unwrap();
    assert_eq!(lazy.stats().batches, 0);
    assert_eq!(memory.stats().in_use, trampoline, "only the trampoline is left");
    drop(lazy);
    assert_eq!(memory.stats().in_use, 0);
}

/// Runs this test binary's test `name` in a child process with `ORCJIT_LAZY_CHILD` set.
fn run_child(name: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe).args([name, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, name).output().unwrap()
}

fn assert_aborted(out: &std::process::Output) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(6), "the child ends by SIGABRT: {out:?}");
}

#[test]
fn a_failing_body_lookup_aborts_with_a_message_naming_stub_and_body() {
    const NAME: &str = "a_failing_body_lookup_aborts_with_a_message_naming_stub_and_body";
    if std::env::var(CHILD).as_deref() == Ok(NAME) {
        let s = setup(1);
        s.lazy.add(&s.stubs, vec![LazyStub::new(s.name("f"), &s.bodies, s.name("missing"))], None).unwrap();
        // SAFETY: the stub's body does not exist: the call never returns.
        let f: extern "C" fn() = unsafe { std::mem::transmute(s.addr(&s.stubs, "f") as usize) };
        f();
        unreachable!("the lazy call returned");
    }
    let out = run_child(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("orcjit: lazy call to 'f' (body 'missing' in 'bodies') failed: symbols not found: 'missing'\n"),
        "{stderr}"
    );
    assert_aborted(&out);
}

#[test]
fn a_call_through_a_removed_stub_aborts_with_a_clear_message() {
    const NAME: &str = "a_call_through_a_removed_stub_aborts_with_a_clear_message";
    if std::env::var(CHILD).as_deref() == Ok(NAME) {
        let tmp = tempfile::tempdir().unwrap();
        let s = setup(1);
        s.layer.add(&s.bodies, "one.o", object(tmp.path(), "one", "int one(void) { return 1; }", &[])).unwrap();
        let tracker = s.stubs.create_tracker();
        let stub = LazyStub::new(s.name("lazy_one"), &s.bodies, s.name("one"));
        s.lazy.add(&s.stubs, vec![stub], Some(&tracker)).unwrap();
        // SAFETY: the stub stands for int one(void) until its tracker goes.
        let one: extern "C" fn() -> i32 = unsafe { std::mem::transmute(s.addr(&s.stubs, "lazy_one") as usize) };
        assert_eq!(one(), 1);
        tracker.remove().unwrap();
        eprintln!("first call returned 1");
        one();
        unreachable!("the stale call returned");
    }
    let out = run_child(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("first call returned 1\n"), "{stderr}");
    assert!(
        stderr.contains(
            "orcjit: call through lazy stub 'lazy_one' of 'stubs' after its resource tracker was removed \
             (the caller holds a stale address)\n"
        ),
        "{stderr}"
    );
    assert_aborted(&out);
}
