//! A profile replayed from the start names promoted locals (`helper.orcjit.<tag>.body`),
//! which exist only once their module is read and split. The replay must not lose them: a
//! guess that finds its name absent waits for the split and is then compiled ahead, before
//! anything calls it.

use std::sync::Arc;
use std::time::Duration;

use jit_core::{Priority, Task, TaskKind};
use jit_layers::{IrModule, Jit, Laziness, ReplayProfile, Speculation};

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

/// Waits until the only worker has run every speculative task queued so far (and the
/// demanded work they queued: it goes first), failing after a minute rather than hanging.
fn drain(jit: &Jit) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    jit.session().dispatch(Task::new(TaskKind::Other, Priority::Speculative, move || tx.send(()).unwrap()));
    rx.recv_timeout(Duration::from_secs(60)).expect("the worker did not get through its queue");
}

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
    drain(&jit);
    let stats = speculator.stats();
    assert_eq!((stats.queued, stats.waiting), (1, 1), "{stats}");
    assert_eq!(layer.stats().partitions_compiled, 0);

    // Calling into the module splits it; the guess is looked up again and compiles `helper`
    // although nothing has called it.
    layer.compile_now(jit.main_dylib(), "entry").unwrap();
    drain(&jit);
    let stats = speculator.stats();
    assert_eq!((stats.waiting, stats.hits), (0, 0), "{stats}");
    assert_eq!(layer.stats().partitions_compiled, 2, "entry's partition and, ahead, helper's");

    let entry: unsafe extern "C" fn(i32) -> i32 = jit.lookup("entry").unwrap();
    // SAFETY: `entry` is `i32 (i32)`, compiled above.
    assert_eq!(unsafe { entry(5) }, 15);
    jit.end().unwrap();
}
