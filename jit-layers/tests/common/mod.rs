//! What the jit-layers tests share.

use std::sync::Arc;
use std::time::Duration;

use jit_core::{Priority, Task, TaskKind};
use jit_layers::Jit;

/// Waits until the JIT's `workers` have run every task queued so far (and the demanded work
/// those queued, which goes first): a speculative task per worker, each waiting for all the
/// others to start, so that every worker is idle at once. Fails after a minute rather than hang.
pub fn drain(jit: &Jit, workers: usize) {
    let barrier = Arc::new(std::sync::Barrier::new(workers));
    let (tx, rx) = crossbeam_channel::bounded(workers);
    for _ in 0..workers {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        jit.session().dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || {
            barrier.wait();
            tx.send(()).unwrap();
        }));
    }
    for _ in 0..workers {
        rx.recv_timeout(Duration::from_secs(60)).expect("the workers did not get through their queues");
    }
}
