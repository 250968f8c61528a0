//! N objects that call each other in a cycle link on one thread: every link stops at its
//! lookup, and only once all N have asked are the lookups answered.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

const N: usize = 16;

#[test]
fn mutually_dependent_objects_link_on_one_thread_with_lookups_answered_after_all_are_issued() {
    let _watchdog = Watchdog::start(Duration::from_secs(120), "cycle test");
    let dir = work_dir("cycle");
    let mut objects = Vec::new();
    for i in 0..N {
        let next = (i + 1) % N;
        let src = format!(
            "extern int f_{next}(int);\nextern int data_{next};\nint data_{i} = {value};\n\
             int f_{i}(int n) {{ return n <= 0 ? data_{next} : f_{next}(n - 1) + 1; }}\n",
            value = 100 + i
        );
        let c = dir.join(format!("cyc{i}.c"));
        let o = dir.join(format!("cyc{i}.o"));
        std::fs::write(&c, src).expect("write source");
        clang(&["-c", "-O1", "-fPIC", &c.to_string_lossy(), "-o", &o.to_string_lossy()]);
        objects.push((format!("cyc{i}.o"), std::fs::read(&o).expect("object")));
    }
    let graphs =
        objects.iter().map(|(name, bytes)| jit_link::graph_from_elf_object(name, bytes).expect("parse")).collect();
    let (batch, results) = link_graphs(graphs, None);
    assert_eq!(batch.issued_before_first_answer.load(Ordering::SeqCst), N, "every link asked before any answer");
    let me = std::thread::current().id();
    let threads = batch.finished_on.lock().expect("threads").clone();
    assert_eq!(threads.len(), N);
    assert!(threads.iter().all(|t| *t == me), "every link finished on the test's thread");
    let linked: Vec<_> = results.into_iter().map(|r| r.expect("link")).collect();

    let f0 = batch.address_of("f_0").expect("f_0");
    // SAFETY: `f_0` is the finalized C function `int f_0(int)`.
    let f0: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(f0.0 as usize) };
    let steps = 3 * N as i32 + 5;
    // f_i(n) walks n steps around the cycle, then reads data of the next object.
    let last = steps as usize % N;
    let expected = steps + 100 + ((last + 1) % N) as i32;
    assert_eq!(f0(steps), expected);
    drop(linked);
}
