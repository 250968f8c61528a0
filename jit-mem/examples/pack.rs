//! Packs N typical small objects (256 B code, 64 B rodata, 32 B data) into one manager and
//! prints one tab-separated line:
//!
//! `MANAGER N mappings=M committed_over_requested=R ns_per_alloc=T`
//!
//! Usage: `cargo run --release -p jit-mem --example pack -- MANAGER N [BATCH]`, MANAGER one of
//! `dual`, `mprotect`, `mprotect-in-place`, `page`. BATCH (default 1) allocations are in flight before they are
//! finalized together, as when several links overlap. All N objects stay live to the end;
//! `ns_per_alloc` is the wall time of allocate + write + finalize per object. If the manager
//! fails first (the page allocator at the kernel's mapping limit), the line also says where
//! it stopped and why, and the figures are for the objects made so far.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use jit_mem::{
    AllocRequest, FinalizedAlloc, ManagerConfig, MemError, MemoryManager, Prot, SegmentRequest, manager_by_name,
};

/// `mov eax, imm32; ret` (Intel SDM vol. 2B: B8+rd id, C3).
fn return_imm(imm: u32) -> [u8; 6] {
    let b = imm.to_le_bytes();
    [0xB8, b[0], b[1], b[2], b[3], 0xC3]
}

fn run(mem: &dyn MemoryManager, n: u64, batch: u64) -> (Vec<FinalizedAlloc>, Option<MemError>, f64) {
    let req = AllocRequest::new(vec![
        SegmentRequest::new(Prot::RX, 256, 16),
        SegmentRequest::new(Prot::R, 64, 8),
        SegmentRequest::new(Prot::RW, 32, 8),
    ]);
    let (tx, rx) = mpsc::channel();
    let mut held = Vec::with_capacity(n as usize);
    let mut error = None;
    let start = Instant::now();
    let mut made = 0u64;
    'outer: while made < n {
        let mut inflight = Vec::with_capacity(batch as usize);
        for _ in 0..batch.min(n - made) {
            match mem.allocate(&req) {
                Ok(mut a) => {
                    if let Some(code) = a.working_mut(0) {
                        code[..6].copy_from_slice(&return_imm(made as u32));
                    }
                    inflight.push(a);
                    made += 1;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let count = inflight.len();
        for a in inflight {
            let tx = tx.clone();
            a.finalize(Vec::new(), Box::new(move |r| drop(tx.send(r))));
        }
        for _ in 0..count {
            match rx.recv() {
                Ok(Ok(done)) => held.push(done),
                Ok(Err(e)) => error = Some(e),
                Err(_) => break 'outer,
            }
        }
        if error.is_some() {
            break;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / held.len().max(1) as f64;
    (held, error, ns)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pack MANAGER N [BATCH]   (MANAGER: dual | mprotect | mprotect-in-place | page)";
    let (Some(name), Some(n)) = (args.first(), args.get(1).and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let batch = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(b)) if b > 0 => b,
        Some(_) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let mem = match manager_by_name(name, ManagerConfig::default()) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("pack: {e}");
            return ExitCode::FAILURE;
        }
        None => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (held, error, ns) = run(&*mem, n, batch);
    let stats = mem.stats();
    let ratio = stats.committed as f64 / stats.in_use.max(1) as f64;
    let mut line =
        format!("{name}\t{n}\tmappings={}\tcommitted_over_requested={ratio:.3}\tns_per_alloc={ns:.0}", stats.mappings);
    if batch != 1 {
        line.push_str(&format!("\tbatch={batch}"));
    }
    if let Some(e) = &error {
        line.push_str(&format!("\tstopped_at={}\terror={e}", held.len()));
    }
    // Give the mappings back before printing: at the kernel's limit even stdout may need one.
    let freed = mem.deallocate_blocking(held);
    println!("{line}");
    if let Err(e) = freed {
        eprintln!("pack: deallocate: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
