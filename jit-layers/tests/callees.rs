//! The call graph the static speculation policy reads (`CompileOnDemandLayer::callees`): a
//! function's direct callees, most often called first by LLVM's static block frequencies, and
//! without those called only on an error path.

use jit_layers::{IrModule, Jit, Laziness};

const MODULE: &str = r#"
declare void @abort() noreturn
define void @hot(i32 %x) {
  ret void
}
define void @warm() {
  ret void
}
define i32 @f(i32 %n) {
entry:
  %bad = icmp slt i32 %n, 0
  br i1 %bad, label %error, label %loop
error:
  call void @abort()
  unreachable
loop:
  %i = phi i32 [ 0, %entry ], [ %next, %loop ]
  call void @hot(i32 %i)
  %next = add i32 %i, 1
  %done = icmp sge i32 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  call void @warm()
  ret i32 0
}
"#;

#[test]
fn callees_come_hottest_first_without_the_error_path() {
    let jit = Jit::builder().threads(1).lazy(Laziness::Function).build().unwrap();
    jit.add_ir(IrModule::text("callees.ll", MODULE)).unwrap();
    let layer = jit.lazy_layer().expect("lazy");
    layer.record_call_graph();
    layer.compile_now(jit.main_dylib(), "f").unwrap();
    let imp = layer.implementation_dylib(jit.main_dylib()).unwrap();
    let callees = layer.callees(&imp, &jit.session().intern("f.body"));
    let names: Vec<&str> = callees.iter().map(|c| c.as_str()).collect();
    // In order of first call: abort, hot, warm. The loop runs `hot` more often than `warm`
    // runs; `abort` is on a path LLVM estimates cold.
    assert_eq!(names, ["hot.body", "warm.body"]);
    jit.end().unwrap();
}
