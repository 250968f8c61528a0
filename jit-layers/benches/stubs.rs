//! Criterion benchmarks of lazy call-through stubs, on `long inc(long x) { return x + 1; }`
//! compiled by clang-19 (`-O1 -fPIC`) and linked by the object layer:
//! - `call/direct`: 1,000 dependent calls of the JIT'd function through a function pointer;
//! - `call/through_stub`: the same through its resolved stub (one more indirect jump each);
//! - `reentry/round_trip`: one call that enters the resolver (the slot pointed back at the
//!   stub's lazy entry with `redirect` first) and finds the body already Ready: the cost of a
//!   first call, compilation excluded.

use std::hint::black_box;
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jit_core::{ExecutionSession, ExecutorAddr};
use jit_layers::{LazyReexports, LazyStub, ObjectLinkingLayer};
use jit_mem::ManagerConfig;

const CALLS: u64 = 1000;

type Inc = extern "C" fn(i64) -> i64;

/// `CALLS` calls, each waiting for the one before.
fn chain(f: Inc) -> i64 {
    let mut x = 0;
    for _ in 0..CALLS {
        x = f(black_box(x));
    }
    x
}

fn stubs(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, obj) = (tmp.path().join("inc.c"), tmp.path().join("inc.o"));
    std::fs::write(&src, "long inc(long x) { return x + 1; }\n").unwrap();
    let out = Command::new("clang-19").args(["-c", "-O1", "-fPIC"]).arg(&src).arg("-o").arg(&obj).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let es = ExecutionSession::with_threads(1).unwrap();
    let memory = jit_mem::default_manager(ManagerConfig::default()).unwrap();
    let layer = ObjectLinkingLayer::new(&es, memory.clone());
    let lazy = LazyReexports::new(&es, memory).unwrap();
    let bodies = es.create_dylib("bodies").unwrap();
    let stubs = es.create_dylib("stubs").unwrap();
    layer.add(&bodies, "inc.o", std::fs::read(&obj).unwrap()).unwrap();
    let stub_name = es.intern("lazy_inc");
    lazy.add(&stubs, vec![LazyStub::new(stub_name.clone(), &bodies, es.intern("inc"))], None).unwrap();
    let body = bodies.lookup("inc").unwrap().addr.0 as usize;
    let stub = stubs.lookup("lazy_inc").unwrap().addr.0;
    // SAFETY: both lead to long inc(long).
    let direct = unsafe { std::mem::transmute::<usize, Inc>(body) };
    // SAFETY: as above.
    let through_stub = unsafe { std::mem::transmute::<usize, Inc>(stub as usize) };
    assert_eq!(chain(through_stub), CALLS as i64, "the first call resolves the stub");
    assert_eq!(lazy.stats().resolver_entries, 1);

    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(CALLS));
    g.bench_function("direct", |b| b.iter(|| chain(black_box(direct))));
    g.bench_function("through_stub", |b| b.iter(|| chain(black_box(through_stub))));
    g.finish();

    // The stub's lazy entry follows its 6-byte `jmp *slot(%rip)`: pointing the slot there sends
    // the next call into the resolver again.
    let lazy_entry = ExecutorAddr(stub + 6);
    c.bench_function("reentry/round_trip", |b| {
        b.iter(|| {
            lazy.redirect(&stubs, &stub_name, lazy_entry).unwrap();
            through_stub(black_box(1))
        })
    });
    assert!(lazy.stats().resolver_entries > 1);
    es.end_session().unwrap();
}

criterion_group!(benches, stubs);
criterion_main!(benches);
