//! Criterion benchmarks of jit-core's dependency tracking and lookup, the same work as LLVM's
//! anchor (`../shared/bench/orc-deps/orc_deps.cpp`, and `examples/deps.rs`):
//! - `deps/SHAPE/N`: define N one-symbol units whose emission groups form a chain, one cycle
//!   or a random DAG of out-degree 4, then look all N up at Ready (in place, as ORC's default);
//! - `lookup_ready`: one blocking lookup of a Ready symbol;
//! - `async_lookups`: 10,000 async lookups from two threads, a fresh symbol in every 16
//!   materializing on a 2-thread pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jit_core::{
    EmissionGroup, ExecutionSession, ExecutorAddr, Interface, JitDylib, MaterializationResponsibility,
    MaterializationUnit, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName,
};

struct OneSymbol {
    interface: Interface,
    name: SymbolName,
    deps: Vec<SymbolName>,
}

impl MaterializationUnit for OneSymbol {
    fn name(&self) -> &str {
        "one symbol"
    }
    fn symbols(&self) -> &Interface {
        &self.interface
    }
    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let dylib = mr.dylib_id();
        let def = SymbolDef::new(ExecutorAddr(0x1000), SymbolFlags::EXPORTED);
        if let Err(e) = mr.notify_resolved([(self.name.clone(), def)]) {
            return mr.fail(e);
        }
        let _ = mr.notify_emitted([EmissionGroup::new([self.name], self.deps.into_iter().map(|d| (dylib, d)))]);
    }
    fn discard(&mut self, _: &JitDylib, _: &SymbolName) {}
}

fn deps_of(shape: &str, i: usize, names: &[SymbolName], seed: &mut u64) -> Vec<SymbolName> {
    let n = names.len();
    let mut next = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as usize
    };
    match shape {
        "chain" => i.checked_sub(1).map(|p| names[p].clone()).into_iter().collect(),
        "cycle" => vec![names[(i + 1) % n].clone()],
        _ if i > 0 => (0..4).map(|_| names[next() % i].clone()).collect(),
        _ => Vec::new(),
    }
}

fn define_and_lookup_all(shape: &str, n: usize) {
    let es = ExecutionSession::in_place();
    let jd = es.create_dylib("main").unwrap();
    let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("s{i}"))).collect();
    let mut seed = 42;
    for (i, name) in names.iter().enumerate() {
        let deps = deps_of(shape, i, &names, &mut seed);
        let interface = [(name.clone(), SymbolFlags::EXPORTED)].into_iter().collect();
        jd.define(OneSymbol { interface, name: name.clone(), deps }).unwrap();
    }
    let all: SymbolLookupSet = names.iter().cloned().collect();
    let found = es.lookup_blocking(&jd.search_order(), all, RequiredState::Ready).unwrap();
    assert_eq!(found.len(), n);
}

fn dependency_tracking(c: &mut Criterion) {
    let mut group = c.benchmark_group("deps");
    group.sample_size(10);
    for shape in ["chain", "dag", "cycle"] {
        for n in [1_000usize, 10_000, 100_000] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(shape, n), &n, |b, &n| b.iter(|| define_and_lookup_all(shape, n)));
        }
    }
    group.finish();
}

fn lookup_ready(c: &mut Criterion) {
    let es = ExecutionSession::in_place();
    let jd = es.create_dylib("main").unwrap();
    let names: Vec<SymbolName> = (0..1000).map(|i| es.intern(&format!("r{i}"))).collect();
    jd.define_absolute(names.iter().map(|n| (n.clone(), SymbolDef::new(ExecutorAddr(1), SymbolFlags::EXPORTED))))
        .unwrap();
    let mut i = 0;
    c.bench_function("lookup_ready", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            es.lookup_symbol(&jd.search_order(), &names[i]).unwrap()
        })
    });
}

fn async_lookups(c: &mut Criterion) {
    const TOTAL: usize = 10_000;
    let mut group = c.benchmark_group("async_lookups");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TOTAL as u64));
    group.bench_function("two_threads_while_materializing", |b| {
        b.iter(|| {
            let es = ExecutionSession::with_threads(2).unwrap();
            let jd = es.create_dylib("main").unwrap();
            let names: Vec<SymbolName> = (0..TOTAL / 16).map(|i| es.intern(&format!("l{i}"))).collect();
            for name in &names {
                let interface = [(name.clone(), SymbolFlags::EXPORTED)].into_iter().collect();
                jd.define(OneSymbol { interface, name: name.clone(), deps: Vec::new() }).unwrap();
            }
            let done = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (es, jd, names, done, tx) = (es.clone(), jd.clone(), &names, done.clone(), tx.clone());
                    s.spawn(move || {
                        let order = jd.search_order();
                        for i in (t..TOTAL).step_by(2) {
                            let (done, tx) = (done.clone(), tx.clone());
                            let set = SymbolLookupSet::new().with(names[(i / 16) % names.len()].clone());
                            es.lookup(&order, set, RequiredState::Ready, move |r| {
                                r.unwrap();
                                if done.fetch_add(1, Ordering::AcqRel) + 1 == TOTAL {
                                    let _ = tx.send(());
                                }
                            });
                        }
                    });
                }
            });
            rx.recv().unwrap();
            es.end_session().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, dependency_tracking, lookup_ready, async_lookups);
criterion_main!(benches);
