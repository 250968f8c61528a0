//! A forked child tiers up its hot code, as its parent does. The child has none of the
//! parent's threads (its pools have no workers, and the tier-up thread is gone), and it shared
//! the parent's eventfd: its requests woke the parent's tier-up thread, which found nothing to
//! do, so a child's hot loop ran first-tier code for good. A child's tier-up thread compiles
//! on itself, so a fork in the child waits for that compile (as pools pause for a fork): a
//! grandchild copied mid-compile would keep LLVM's locks and wait on them at its first compile.
//! Alone in its binary: a fork while another test's thread held one of LLVM's locks would
//! leave the child's compile waiting.

mod common;

use std::time::{Duration, Instant};

use jit_core::{Priority, Task, TaskKind};
use jit_layers::{IrModule, Jit, Laziness, TierUp};

/// `hot(n)`: a loop, so that its first-tier code counts calls.
const HOT: &str = r#"
define i32 @hot(i32 %n) {
entry:
  br label %loop
loop:
  %i = phi i32 [ 0, %entry ], [ %i.next, %loop ]
  %acc = phi i32 [ 7, %entry ], [ %acc.next, %loop ]
  %mul = mul i32 %acc, 31
  %acc.next = add i32 %mul, %i
  %i.next = add i32 %i, 1
  %done = icmp sge i32 %i.next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret i32 %acc.next
}

define i32 @cold(i32 %x) {
  %y = mul i32 %x, 3
  %z = add i32 %y, 1
  ret i32 %z
}
"#;

const CALLS_TO_TIER_UP: u32 = 50;

/// What `hot(n)` returns, computed here.
fn expected(n: i32) -> i32 {
    let mut acc: i32 = 7;
    let mut i = 0;
    loop {
        acc = acc.wrapping_mul(31).wrapping_add(i);
        i += 1;
        if i >= n {
            return acc;
        }
    }
}

/// One test, so that its forks never copy another test's compile under way.
#[test]
fn forked_children_tier_up_their_hot_code() {
    let _watchdog = common::watchdog("a forked child's tier-up");
    a_forked_child_tiers_up_its_hot_code();
    a_forked_child_tiers_up_what_its_parent_had_queued();
}

/// Waits for the child `pid` and returns its exit status (or panics if it did not exit).
fn exit_status(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for a child this process made; `status` is a local.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "the child did not exit: {status:#x}");
    libc::WEXITSTATUS(status)
}

/// In a child: 0 once the layer has tiered something up, 1 if not within 45 s.
fn wait_for_tier_up(layer: &jit_layers::CompileOnDemandLayer) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(45);
    while layer.stats().tiered_up == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    i32::from(layer.stats().tiered_up == 0)
}

/// A lazy JIT in two tiers with `threads` workers and [`HOT`] added, `hot`'s first tier
/// compiled (it counted one call); the JIT, `hot` and the lazy layer.
fn jit_with_hot(threads: usize) -> (Jit, unsafe extern "C" fn(i32) -> i32, jit_layers::CompileOnDemandLayer) {
    let jit = Jit::builder()
        .threads(threads)
        .lazy(Laziness::Function)
        .tier_up(Some(TierUp { first_opt_level: 0, calls: CALLS_TO_TIER_UP }))
        .build()
        .unwrap();
    jit.add_ir(IrModule::text("hot.ll", HOT)).unwrap();
    let hot: unsafe extern "C" fn(i32) -> i32 = jit.lookup("hot").unwrap();
    // SAFETY: `hot` is `i32 (i32)`.
    assert_eq!(unsafe { hot(10) }, expected(10));
    let layer = jit.lazy_layer().unwrap().clone();
    assert_eq!(layer.stats().tiered_up, 0);
    (jit, hot, layer)
}

fn a_forked_child_tiers_up_its_hot_code() {
    let (jit, hot, layer) = jit_with_hot(2);

    // SAFETY: the child calls JIT'd code and reads counters, then leaves with `_exit`: it never
    // returns into the test harness, whose other state belongs to the parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut status = 0;
        for n in 1..=2 * CALLS_TO_TIER_UP as i32 {
            // SAFETY: as above.
            if unsafe { hot(n) } != expected(n) {
                status = 2;
            }
        }
        // A grandchild forked while the child's tier-up thread is (most likely) compiling
        // compiles `cold` itself, and runs `hot`.
        let cold: unsafe extern "C" fn(i32) -> i32 = jit.lookup("cold").unwrap();
        // SAFETY: as above.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            // SAFETY: `cold` and `hot` are `i32 (i32)`.
            let right = unsafe { cold(5) == 16 && hot(300) == expected(300) };
            // SAFETY: ends the grandchild at once.
            unsafe { libc::_exit(if right { 0 } else { 4 }) };
        }
        let mut grandchild_status = 0;
        // SAFETY: waits for the grandchild made above; the status is a local.
        if grandchild < 0 || unsafe { libc::waitpid(grandchild, &mut grandchild_status, 0) } != grandchild {
            status = 5;
        } else if !libc::WIFEXITED(grandchild_status) || libc::WEXITSTATUS(grandchild_status) != 0 {
            status = 4;
        }
        // The child's own tier-up thread compiles in the background: wait for it (for as
        // long as the parent's watchdog would allow).
        if wait_for_tier_up(&layer) != 0 {
            status = 1;
        }
        // The second tier answers as the first did.
        // SAFETY: as above.
        if unsafe { hot(1000) } != expected(1000) {
            status = 3;
        }
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(status) };
    }
    let code = exit_status(pid);
    assert_ne!(code, 2, "the child's first-tier code gave wrong answers");
    assert_ne!(code, 3, "the child's second-tier code gave wrong answers");
    assert_ne!(code, 4, "the grandchild's code gave wrong answers or it did not exit");
    assert_ne!(code, 5, "the child could not fork or wait for the grandchild");
    assert_eq!(code, 0, "the child's hot code stayed at the first tier");
    // The parent's copy is untouched: it made no calls since.
    assert_eq!(layer.stats().tiered_up, 0);
    jit.end().unwrap();
}

/// A partition the parent made hot and queued for its second tier, not started when the
/// parent forks (its only worker is busy: the fork happens in the task that holds it), is
/// tiered up in the child: its queue's task went to the child's pools, which have no workers,
/// and it is marked started, so the child's own requests for it would be ignored.
fn a_forked_child_tiers_up_what_its_parent_had_queued() {
    let (jit, hot, layer) = jit_with_hot(1);

    // Hold the only worker, until told to fork.
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (fork_tx, fork_rx) = crossbeam_channel::bounded::<()>(1);
    let (pid_tx, pid_rx) = crossbeam_channel::bounded::<libc::pid_t>(1);
    let child_layer = layer.clone();
    jit.session().dispatch(Task::new(TaskKind::Other, Priority::Demanded, move || {
        started_tx.send(()).unwrap();
        fork_rx.recv().unwrap();
        // SAFETY: the child waits for its tier-up and leaves with `_exit`, never returning
        // into the pool or the test harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let status = wait_for_tier_up(&child_layer);
            // SAFETY: as above; `hot` is `i32 (i32)`.
            let status = if status == 0 && unsafe { hot(500) } != expected(500) { 3 } else { status };
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(status) };
        }
        pid_tx.send(pid).unwrap();
    }));
    started_rx.recv_timeout(Duration::from_secs(30)).expect("the worker took the task");
    // Hot now: the tier-up thread queues its compile, behind the task holding the worker.
    for n in 1..=2 * CALLS_TO_TIER_UP as i32 {
        // SAFETY: as above.
        assert_eq!(unsafe { hot(n) }, expected(n));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while layer.waiting_for_second_tier() == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(layer.waiting_for_second_tier(), 1, "queued behind the held worker");
    fork_tx.send(()).unwrap();
    let pid = pid_rx.recv_timeout(Duration::from_secs(30)).expect("the task forked");
    assert!(pid > 0, "fork failed");
    let code = exit_status(pid);
    assert_ne!(code, 3, "the child's second-tier code gave wrong answers");
    assert_eq!(code, 0, "what the parent had queued stayed at the first tier in the child");
    jit.end().unwrap();
}
