//! Criterion benchmarks: the cost of allocate + finalize for the typical small object
//! (256 B code, 64 B rodata, 32 B data) per manager, with up to 10,000 objects live, and of a
//! full allocate / finalize / deallocate round trip.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jit_mem::{AllocRequest, FinalizedAlloc, ManagerConfig, MemoryManager, Prot, SegmentRequest, manager_by_name};

const MANAGERS: [&str; 4] = ["dual", "mprotect", "mprotect-in-place", "page"];
/// Live objects before an (untimed) deallocate; well under the page allocator's mapping limit.
const WINDOW: u64 = 10_000;

fn small_object() -> AllocRequest {
    AllocRequest::new(vec![
        SegmentRequest::new(Prot::RX, 256, 16),
        SegmentRequest::new(Prot::R, 64, 8),
        SegmentRequest::new(Prot::RW, 32, 8),
    ])
}

fn manager(name: &str) -> Arc<dyn MemoryManager> {
    match manager_by_name(name, ManagerConfig::default()) {
        Some(Ok(m)) => m,
        _ => panic!("cannot make manager {name}"),
    }
}

fn allocate_finalize(mem: &dyn MemoryManager, req: &AllocRequest, tx: &mpsc::Sender<FinalizedAlloc>) {
    let mut alloc = mem.allocate(req).unwrap();
    if let Some(code) = alloc.working_mut(0) {
        code[0] = 0xC3; // ret
    }
    let tx = tx.clone();
    alloc.finalize(Vec::new(), Box::new(move |r| drop(tx.send(r.unwrap()))));
}

fn bench_allocate_finalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate_finalize_small_object");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for name in MANAGERS {
        let mem = manager(name);
        let req = small_object();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (tx, rx) = mpsc::channel();
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(WINDOW);
                    let start = Instant::now();
                    for _ in 0..n {
                        allocate_finalize(&*mem, &req, &tx);
                    }
                    total += start.elapsed();
                    let held: Vec<FinalizedAlloc> = rx.try_iter().collect();
                    mem.deallocate_blocking(held).unwrap();
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate_finalize_deallocate_small_object");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for name in MANAGERS {
        let mem = manager(name);
        let req = small_object();
        let (tx, rx) = mpsc::channel();
        group.bench_function(name, |b| {
            b.iter(|| {
                allocate_finalize(&*mem, &req, &tx);
                let done = black_box(rx.try_recv().unwrap());
                mem.deallocate_blocking(vec![done]).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_allocate_finalize, bench_round_trip);
criterion_main!(benches);
