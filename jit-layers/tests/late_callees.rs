//! Static speculation reads a module's call graph, which is filed only once the module is
//! read: after the first call into it (the first-call listener runs before the body is looked
//! up), and, with two tiers and a worker to spare, by a second read alongside the first. A
//! first call made before its call graph is filed still gets its callees compiled ahead, once
//! the graph is filed.

mod common;

use common::drain;
use jit_layers::{IrModule, Jit, Laziness, Speculation, TierUp};

/// `entry(0)` returns at once; `entry(n)` calls `left` and `right`, which live in another module.
const ENTRY: &str = r#"
declare i32 @left(i32)
declare i32 @right(i32)
define i32 @entry(i32 %n) {
start:
  %some = icmp sgt i32 %n, 0
  br i1 %some, label %call, label %none
call:
  %a = call i32 @left(i32 %n)
  %b = call i32 @right(i32 %a)
  ret i32 %b
none:
  ret i32 0
}
"#;

const LEAVES: &str = r#"
define i32 @left(i32 %x) {
  %y = add i32 %x, 1
  ret i32 %y
}
define i32 @right(i32 %x) {
  %y = mul i32 %x, 2
  ret i32 %y
}
"#;

/// A lazy JIT in two tiers with `threads` workers, speculating by the static call graph, with
/// `entry` and its callees added; `entry` is looked up (its stub) but nothing is read yet.
fn jit_with_entry(threads: usize) -> (Jit, unsafe extern "C" fn(i32) -> i32) {
    let jit = Jit::builder()
        .threads(threads)
        .lazy(Laziness::Function)
        .tier_up(Some(TierUp::default()))
        .speculation(Speculation::Static)
        .build()
        .unwrap();
    jit.add_ir(IrModule::text("entry.ll", ENTRY)).unwrap();
    jit.add_ir(IrModule::text("leaves.ll", LEAVES)).unwrap();
    let entry: unsafe extern "C" fn(i32) -> i32 = jit.lookup("entry").unwrap();
    assert_eq!(jit.lazy_layer().unwrap().stats().modules_prepared, 0);
    (jit, entry)
}

/// One worker: the first read files the call graph (a second read would only queue behind
/// it), after `entry`'s first call; `left` and `right` are then compiled ahead, before
/// anything calls them.
#[test]
fn a_first_call_before_its_call_graph_is_filed_gets_its_callees_compiled_ahead() {
    let (jit, entry) = jit_with_entry(1);
    let layer = jit.lazy_layer().unwrap().clone();
    let speculator = jit.speculator().expect("static speculates").clone();
    // SAFETY: `entry` is `i32 (i32)`; with 0 it calls nothing.
    assert_eq!(unsafe { entry(0) }, 0);
    drain(&jit, 1);
    let stats = speculator.stats();
    assert_eq!((stats.queued, stats.dropped, stats.asked_again, stats.unanswered), (2, 0, 1, 0), "{stats}");
    assert_eq!(layer.stats().modules_prepared, 2, "each module read once: {}", layer.stats());

    let compiled = layer.stats().partitions_compiled;
    // SAFETY: as above; `left` and `right` are `i32 (i32)`.
    assert_eq!(unsafe { entry(3) }, 8);
    assert_eq!(layer.stats().partitions_compiled, compiled, "left and right were compiled ahead");
    assert_eq!(speculator.stats().hits, 2);
    jit.end().unwrap();
}

/// Two workers: the call graph comes from the second copy, read alongside the first; `entry`'s
/// first call still gets its guesses once it is filed (each queued, or dropped where its
/// compile would have waited).
#[test]
fn with_a_worker_to_spare_the_call_graph_comes_from_a_second_read_and_still_answers() {
    let (jit, entry) = jit_with_entry(2);
    let speculator = jit.speculator().expect("static speculates").clone();
    // SAFETY: `entry` is `i32 (i32)`; with 0 it calls nothing.
    assert_eq!(unsafe { entry(0) }, 0);
    drain(&jit, 2);
    let stats = speculator.stats();
    assert_eq!((stats.queued + stats.dropped, stats.asked_again, stats.unanswered), (2, 1, 0), "{stats}");
    // SAFETY: as above; `left` and `right` are `i32 (i32)`.
    assert_eq!(unsafe { entry(3) }, 8);
    drain(&jit, 2);
    let layer = jit.lazy_layer().unwrap().stats();
    assert_eq!(layer.modules_prepared, 4, "each module read twice, up front: {layer}");
    jit.end().unwrap();
}

/// `sometimes(n)` calls `abs` (libc's, which the JIT does not compile) and, for n > 3, `rarely`.
const SOMETIMES: &str = r#"
declare i32 @abs(i32)
declare i32 @rarely(i32)
define i32 @sometimes(i32 %n) {
start:
  %a = call i32 @abs(i32 %n)
  %big = icmp sgt i32 %n, 3
  br i1 %big, label %call, label %done
call:
  %r = call i32 @rarely(i32 %a)
  ret i32 %r
done:
  ret i32 %a
}
"#;

/// `rarely` needs a function nothing defines, so its compile fails. It is alone in its module:
/// nothing else compiles there, so its guess never waits for another compile (and is never
/// dropped for that, see `Speculator::set_busy_check`).
const RARELY: &str = r#"
declare i32 @missing_function_nobody_defines(i32)
define i32 @rarely(i32 %x) {
  %y = call i32 @missing_function_nobody_defines(i32 %x)
  %z = add i32 %y, 1
  ret i32 %z
}
"#;

/// A first call's guess whose compile fails fails nothing but a later caller: with one or two
/// workers and one or two tiers, `sometimes`' first call guesses `rarely` (and not `abs`), its
/// speculative compile fails, and `sometimes` goes on running.
#[test]
fn a_guess_whose_compile_fails_is_counted_and_fails_nothing() {
    let _watchdog = common::watchdog("a failing speculative compile");
    for threads in [1, 2] {
        for tier_up in [None, Some(TierUp::default())] {
            let what = format!("{threads} workers, tier-up {tier_up:?}");
            let jit = Jit::builder()
                .threads(threads)
                .lazy(Laziness::Function)
                .tier_up(tier_up)
                .speculation(Speculation::Static)
                .build()
                .unwrap();
            jit.add_ir(IrModule::text("sometimes.ll", SOMETIMES)).unwrap();
            jit.add_ir(IrModule::text("rarely.ll", RARELY)).unwrap();
            let sometimes: unsafe extern "C" fn(i32) -> i32 = jit.lookup("sometimes").unwrap();
            // SAFETY: `sometimes` is `i32 (i32)`; with -2 it calls only `abs`.
            assert_eq!(unsafe { sometimes(-2) }, 2, "{what}");
            let speculator = jit.speculator().expect("static speculates").clone();
            // The guess is made once the call graph is filed (with two tiers and two workers,
            // by a second read), and its compile fails later still: each drain lets the
            // workers get through what is queued so far.
            while speculator.stats().failed == 0 {
                drain(&jit, threads);
            }
            let stats = speculator.stats();
            assert_eq!((stats.queued, stats.failed, stats.dropped, stats.hits), (1, 1, 0, 0), "{what}: {stats}");
            // SAFETY: as above.
            assert_eq!(unsafe { sometimes(3) }, 3, "{what}");
            jit.end().unwrap();
        }
    }
}
