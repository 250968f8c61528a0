//! What the jit-layers tests share. (Each test file that includes it uses only some of it.)
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

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

/// How long a test may take before its [`Watchdog`] aborts the process.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Aborts the process if dropped later than [`WATCHDOG`] after it was made: a hang fails fast.
pub struct Watchdog(crossbeam_channel::Sender<()>);

/// A watchdog (on a thread of its own, until it is dropped); `what` names the hang.
pub fn watchdog(what: &'static str) -> Watchdog {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
            eprintln!("watchdog: {what} hung");
            std::process::abort();
        }
    });
    Watchdog(tx)
}
