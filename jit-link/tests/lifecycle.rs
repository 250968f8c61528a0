//! The driver's contract with its context, and the life of what a link registers: a dropped
//! continuation fails the link and frees its memory; a lookup answered later on another
//! thread completes it; `.eh_frame` registered at finalize is deregistered at free, so
//! exceptions keep unwinding through JIT'd frames across repeated link/free cycles.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jit_link::{LinkContext, LinkError, LinkGraph, LinkedObject, LookupContinuation, LookupRequest};
use jit_mem::{ManagerConfig, MemoryManager, TargetAddr};

type Outcome = Result<LinkedObject, LinkError>;

/// A context that hands its lookups to the test through a channel.
struct ChannelContext {
    mm: Arc<dyn MemoryManager>,
    lookups: Mutex<mpsc::Sender<(LookupRequest, LookupContinuation)>>,
    done: Mutex<mpsc::Sender<(Outcome, std::thread::ThreadId)>>,
    defined: Mutex<HashMap<String, TargetAddr>>,
}

impl LinkContext for ChannelContext {
    fn memory_manager(&self) -> Arc<dyn MemoryManager> {
        self.mm.clone()
    }
    fn notify_resolved(&self, graph: &LinkGraph) -> Result<(), LinkError> {
        let mut defined = self.defined.lock().unwrap();
        for (id, sym) in graph.symbols() {
            if let (Some(name), true) = (sym.name(), sym.is_defined()) {
                defined.insert(name.to_string(), graph.symbol_addr(id).unwrap_or_default());
            }
        }
        Ok(())
    }
    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation) {
        let _ = self.lookups.lock().unwrap().send((request, continuation));
    }
    fn notify_finalized(&self, linked: LinkedObject) {
        let _ = self.done.lock().unwrap().send((Ok(linked), std::thread::current().id()));
    }
    fn notify_failed(&self, error: LinkError) {
        let _ = self.done.lock().unwrap().send((Err(error), std::thread::current().id()));
    }
}

fn object(name: &str, source: &str, lang: &str) -> (String, Vec<u8>) {
    let dir = work_dir("lifecycle");
    let src = dir.join(format!("{name}.{lang}"));
    let obj = dir.join(format!("{name}.o"));
    std::fs::write(&src, source).expect("write source");
    clang(&["-c", "-O1", "-fPIC", &src.to_string_lossy(), "-o", &obj.to_string_lossy()]);
    (format!("{name}.o"), std::fs::read(&obj).expect("object"))
}

#[allow(clippy::type_complexity)]
fn channel_context(
    mm: Arc<dyn MemoryManager>,
) -> (
    Arc<ChannelContext>,
    mpsc::Receiver<(LookupRequest, LookupContinuation)>,
    mpsc::Receiver<(Outcome, std::thread::ThreadId)>,
) {
    let (ltx, lrx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    (
        Arc::new(ChannelContext {
            mm,
            lookups: Mutex::new(ltx),
            done: Mutex::new(dtx),
            defined: Mutex::new(HashMap::new()),
        }),
        lrx,
        drx,
    )
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_dropped_continuation_fails_the_link_and_frees_its_memory() {
    let _watchdog = Watchdog::start(Duration::from_secs(60), "dropped continuation");
    let mm = jit_mem::default_manager(ManagerConfig::with_reservation(64 << 20)).unwrap();
    let (name, bytes) = object("needs_puts", "int puts(const char *); int hello(void) { return puts(\"hi\"); }", "c");
    let graph = jit_link::graph_from_elf_object(&name, &bytes).unwrap();
    let (ctx, lookups, done) = channel_context(mm.clone());
    jit_link::link(graph, ctx);
    let (request, continuation) = lookups.recv_timeout(WAIT).expect("a lookup");
    assert_eq!(request.object, "needs_puts.o");
    assert!(request.symbols.iter().any(|(n, _)| n.as_str() == "puts"));
    assert_eq!(mm.stats().allocations, 1, "memory is allocated while the lookup is pending");
    drop(continuation);
    let (outcome, _) = done.recv_timeout(WAIT).expect("an outcome");
    let err = outcome.expect_err("the link must fail").to_string();
    assert!(err.contains("needs_puts.o") && err.contains("dropped the lookup continuation"), "{err}");
    assert_eq!(mm.stats().allocations, 0, "the allocation was released");
}

#[test]
fn a_lookup_answered_later_on_another_thread_completes_the_link() {
    let _watchdog = Watchdog::start(Duration::from_secs(60), "late answer");
    let (name, bytes) = object(
        "late",
        "long labs(long); __attribute__((weak)) extern int absent_weak; \
         long late(long x) { return labs(x) + (&absent_weak == 0 ? 1000 : 0); }",
        "c",
    );
    let graph = jit_link::graph_from_elf_object(&name, &bytes).unwrap();
    let (ctx, lookups, done) = channel_context(memory());
    jit_link::link(graph, ctx.clone());
    let (request, continuation) = lookups.recv_timeout(WAIT).expect("a lookup");
    let answerer = std::thread::spawn(move || {
        let mut found = HashMap::new();
        for (name, _) in &request.symbols {
            if let Some(addr) = dlsym(name.as_str()) {
                found.insert(name.clone(), addr);
            }
        }
        continuation.resolve(Ok(found));
        std::thread::current().id()
    });
    let answered_on = answerer.join().expect("answering thread");
    let (outcome, finished_on) = done.recv_timeout(WAIT).expect("an outcome");
    let linked = outcome.expect("link");
    assert_eq!(finished_on, answered_on, "the link resumed on the thread that answered");
    assert_ne!(finished_on, std::thread::current().id());
    let late = ctx.defined.lock().unwrap()["late"];
    // SAFETY: `late` is the finalized `long late(long)`; `linked` keeps it alive.
    let late: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(late.0 as usize) };
    assert_eq!(late(-5), 1005, "labs resolved, missing weak reference is null");
    drop(linked);
}

#[test]
fn exceptions_unwind_through_jit_frames_across_repeated_link_and_free() {
    let _watchdog = Watchdog::start(Duration::from_secs(120), "eh_frame lifecycle");
    dlopen_global("libstdc++.so.6");
    let thrower = object(
        "thrower",
        "#include <stdexcept>\n\
         extern \"C\" int throw_if(int n) { if (n > 0) throw std::runtime_error(\"x\"); if (n < 0) throw n; return 7; }",
        "cpp",
    );
    let catcher = object(
        "catcher",
        "#include <stdexcept>\n\
         extern \"C\" int throw_if(int);\n\
         extern \"C\" int catch_from(int n) {\n\
           try { return throw_if(n); }\n\
           catch (const std::runtime_error &) { return 100; }\n\
           catch (int v) { return v * 2; } }",
        "cpp",
    );
    for round in 0..50 {
        let (batch, linked) = link_objects(&[thrower.clone(), catcher.clone()]).expect("link");
        let f = batch.address_of("catch_from").expect("catch_from");
        // SAFETY: `catch_from` is `extern "C" int catch_from(int)`, which catches everything
        // `throw_if` throws, so no exception leaves JIT'd code.
        let f: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(f.0 as usize) };
        assert_eq!((f(0), f(1), f(-4)), (7, 100, -8), "round {round}");
        // Dropping the allocations deregisters their .eh_frame before the memory goes.
        drop(linked);
    }
}
