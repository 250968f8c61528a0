//! A profile replayed from the start names promoted locals (`helper.orcjit.<tag>.body`),
//! which exist only once their module is read and split. The replay must not lose them: a
//! guess that finds its name absent waits for the split and is then compiled ahead, before
//! anything calls it. A module the profile found hot is read twice up front, so that two
//! workers compile its partitions from the start.

mod common;

use std::sync::Arc;

use common::drain;
use jit_layers::{IrModule, Jit, Laziness, ReplayProfile, Speculation, TierUp};

const MODULE: &str = r#"
define internal i32 @helper(i32 %x) {
  %y = mul i32 %x, 3
  ret i32 %y
}
define i32 @entry(i32 %x) {
  %y = call i32 @helper(i32 %x)
  ret i32 %y
}
"#;

/// The name the module's local `helper` gets once split.
fn promoted_helper_body() -> String {
    let jit = Jit::builder().threads(1).lazy(Laziness::Function).build().unwrap();
    jit.add_ir(IrModule::text("replay.ll", MODULE)).unwrap();
    let layer = jit.lazy_layer().expect("lazy");
    layer.record_call_graph();
    layer.compile_now(jit.main_dylib(), "entry").unwrap();
    let imp = layer.implementation_dylib(jit.main_dylib()).unwrap();
    let callees = layer.callees(&imp, &jit.session().intern("entry.body"));
    let name = callees.first().expect("entry calls helper").as_str().to_string();
    jit.end().unwrap();
    assert!(name.starts_with("helper.orcjit.") && name.ends_with(".body"), "{name}");
    name
}

#[test]
fn a_replayed_promoted_local_is_compiled_ahead_once_its_module_is_split() {
    let helper = promoted_helper_body();
    let profile = Arc::new(ReplayProfile::parse(&format!("main.impl\t{helper}\n")));
    let jit =
        Jit::builder().threads(1).lazy(Laziness::Function).speculation(Speculation::Profile(profile)).build().unwrap();
    jit.add_ir(IrModule::text("replay.ll", MODULE)).unwrap();
    let layer = jit.lazy_layer().expect("lazy").clone();
    let speculator = jit.speculator().expect("a profile speculates").clone();

    // Before the module is read, the guess names nothing: it waits.
    speculator.start();
    drain(&jit, 1);
    let stats = speculator.stats();
    assert_eq!((stats.queued, stats.waiting), (1, 1), "{stats}");
    assert_eq!(layer.stats().partitions_compiled, 0);

    // Calling into the module splits it; the guess is looked up again and compiles `helper`
    // although nothing has called it.
    layer.compile_now(jit.main_dylib(), "entry").unwrap();
    drain(&jit, 1);
    let stats = speculator.stats();
    assert_eq!((stats.waiting, stats.hits), (0, 0), "{stats}");
    assert_eq!(layer.stats().partitions_compiled, 2, "entry's partition and, ahead, helper's");

    let entry: unsafe extern "C" fn(i32) -> i32 = jit.lookup("entry").unwrap();
    // SAFETY: `entry` is `i32 (i32)`, compiled above.
    assert_eq!(unsafe { entry(5) }, 15);
    jit.end().unwrap();
}

/// With two workers, a module a profile found hot is read twice up front and its partitions
/// compile from both copies; with one, it is read once (a second read would only make the next
/// compile wait behind it).
#[test]
fn a_module_a_profile_found_hot_is_read_twice_and_compiles_from_both_copies_with_a_worker_to_spare() {
    let helper = promoted_helper_body();
    for (threads, reads) in [(2, 2), (1, 1)] {
        let profile = Arc::new(ReplayProfile::parse(&format!("main.impl\tentry.body\nmain.impl\t{helper}\thot\n")));
        let jit = Jit::builder()
            .threads(threads)
            .lazy(Laziness::Function)
            .tier_up(Some(TierUp::default()))
            .speculation(Speculation::Profile(profile))
            .build()
            .unwrap();
        jit.add_ir(IrModule::text("replay.ll", MODULE)).unwrap();
        let layer = jit.lazy_layer().expect("lazy").clone();
        jit.speculator().expect("a profile speculates").start();
        let entry: unsafe extern "C" fn(i32) -> i32 = jit.lookup("entry").unwrap();
        // SAFETY: `entry` is `i32 (i32)`.
        assert_eq!(unsafe { entry(7) }, 21);
        // Both guesses and any second read are done once the workers get through their queues.
        drain(&jit, threads);
        let stats = layer.stats();
        let expected = (reads, 2, 1);
        assert_eq!(
            (stats.modules_prepared, stats.partitions_compiled, stats.started_hot),
            expected,
            "{threads}: {stats}"
        );
        jit.end().unwrap();
    }
}
