//! The IR layers with real LLVM: bitcode from clang-19, textual IR and modules built on the
//! compile thread compile and run; bad input is reported with LLVM's diagnostic and the session
//! keeps working; transforms run; one definition wins among linkonce copies.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::TargetMachine;
use jit_core::{Interface, SymbolFlags};
use jit_layers::{IrModule, IrTransform, Jit};

fn bitcode(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    let bc = dir.join(format!("{name}.bc"));
    std::fs::write(&src, source).unwrap();
    let out = Command::new("clang-19")
        .args(["-c", "-emit-llvm", "-O1", "-fPIC"])
        .arg(&src)
        .arg("-o")
        .arg(&bc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(bc).unwrap()
}

fn jit() -> Jit {
    Jit::builder().threads(2).build().unwrap()
}

#[test]
fn bitcode_from_clang_compiles_links_and_runs_across_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let jit = jit();
    jit.add_ir(IrModule::bitcode(
        "a.bc",
        bitcode(tmp.path(), "a", "int sq(int); int sum_sq(int a, int b) { return sq(a) + sq(b); }"),
    ))
    .unwrap();
    jit.add_ir(IrModule::bitcode("b.bc", bitcode(tmp.path(), "b", "int sq(int x) { return x * x; }"))).unwrap();
    let f = jit.lookup::<unsafe extern "C" fn(i32, i32) -> i32>("sum_sq").unwrap();
    // SAFETY: sum_sq is int(int, int).
    assert_eq!(unsafe { f(3, 4) }, 25);
}

#[test]
fn textual_ir_compiles_and_runs() {
    let jit = jit();
    let ir = "define i64 @triple(i64 %x) {\n  %r = mul i64 %x, 3\n  ret i64 %r\n}\n";
    jit.add_ir(IrModule::text("triple.ll", ir)).unwrap();
    let f = jit.lookup::<unsafe extern "C" fn(i64) -> i64>("triple").unwrap();
    // SAFETY: triple is i64(i64).
    assert_eq!(unsafe { f(14) }, 42);
}

#[test]
fn a_module_built_on_the_compile_thread_is_built_only_when_needed() {
    let jit = jit();
    let built = Arc::new(AtomicUsize::new(0));
    let b = built.clone();
    let interface =
        Interface::new().with(jit.session().intern("answer"), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE);
    jit.add_ir(IrModule::built(
        "built",
        interface,
        Box::new(move |context: &Context| {
            b.fetch_add(1, Ordering::SeqCst);
            let module = context.create_module("built");
            let i32t = context.i32_type();
            let f = module.add_function("answer", i32t.fn_type(&[], false), None);
            let builder = context.create_builder();
            builder.position_at_end(context.append_basic_block(f, "entry"));
            builder.build_return(Some(&i32t.const_int(42, false))).map_err(|e| e.to_string())?;
            Ok(module)
        }),
    ))
    .unwrap();
    assert_eq!(built.load(Ordering::SeqCst), 0, "nothing is built before a lookup");
    let f = jit.lookup::<unsafe extern "C" fn() -> i32>("answer").unwrap();
    // SAFETY: answer is int(void).
    assert_eq!(unsafe { f() }, 42);
    assert_eq!(built.load(Ordering::SeqCst), 1);
}

#[test]
fn malformed_input_gives_llvm_s_diagnostic_and_the_session_keeps_working() {
    let jit = jit();
    let err = jit.add_ir(IrModule::bitcode("junk.bc", b"BC\xC0\xDEthis is not bitcode".to_vec())).unwrap_err();
    assert!(err.to_string().starts_with("junk.bc: invalid bitcode: "), "{err}");
    let err = jit.add_ir(IrModule::text("bad.ll", "define i32 @f( {\n")).unwrap_err().to_string();
    assert!(err.starts_with("bad.ll: invalid IR: bad.ll:2:"), "the diagnostic names the place: {err}");
    let err =
        jit.add_ir(IrModule::text("unverified.ll", "define i32 @g() {\n  ret i64 0\n}\n")).unwrap_err().to_string();
    assert!(err.contains("unverified.ll"), "{err}");
    // A module that parses but does not verify is refused when it is compiled.
    let self_ref = "define i32 @h() {\n  %x = add i32 %x, 1\n  ret i32 %x\n}\n";
    jit.add_ir(IrModule::text("selfref.ll", self_ref)).unwrap();
    let err = jit.lookup_address("h").unwrap_err().to_string();
    assert!(err.contains("selfref.ll: invalid module"), "{err}");
    jit.add_ir(IrModule::text("good.ll", "define i32 @good() {\n  ret i32 7\n}\n")).unwrap();
    let f = jit.lookup::<unsafe extern "C" fn() -> i32>("good").unwrap();
    // SAFETY: good is int(void).
    assert_eq!(unsafe { f() }, 7);
}

#[test]
fn a_missing_symbol_names_the_module_that_needs_it() {
    let jit = jit();
    let ir = "declare i32 @nowhere_to_be_found()\ndefine i32 @caller() {\n  %r = call i32 @nowhere_to_be_found()\n  ret i32 %r\n}\n";
    jit.add_ir(IrModule::text("needy.ll", ir)).unwrap();
    let err = jit.lookup_address("caller").unwrap_err().to_string();
    assert!(err.contains("undefined symbol 'nowhere_to_be_found' referenced from needy.ll"), "{err}");
}

struct Failing;
impl IrTransform for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn transform(&self, module: &Module<'_>, _: &TargetMachine) -> jit_core::Result<()> {
        if module.get_function("broken").is_some() { Err(jit_core::Error::msg("refusing 'broken'")) } else { Ok(()) }
    }
}

struct Counting(AtomicUsize);
impl IrTransform for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn transform(&self, module: &Module<'_>, _: &TargetMachine) -> jit_core::Result<()> {
        self.0.fetch_add(module.get_functions().count(), Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn transforms_run_before_code_generation_and_their_failure_fails_only_that_module() {
    let counting = Arc::new(Counting(AtomicUsize::new(0)));
    let jit = Jit::builder().threads(2).build().unwrap();
    let layer = jit
        .ir_layer()
        .clone()
        .with_pipeline("default<O2>")
        .with_transform(Arc::new(Failing))
        .with_transform(counting.clone());
    let main = jit.main_dylib();
    layer.add(main, IrModule::text("broken.ll", "define i32 @broken() {\n  ret i32 1\n}\n")).unwrap();
    layer.add(main, IrModule::text("fine.ll", "define i32 @fine() {\n  ret i32 2\n}\n")).unwrap();
    let err = jit.lookup_address("broken").unwrap_err().to_string();
    assert!(err.contains("broken.ll: failing: refusing 'broken'"), "{err}");
    let f = jit.lookup::<unsafe extern "C" fn() -> i32>("fine").unwrap();
    // SAFETY: fine is int(void).
    assert_eq!(unsafe { f() }, 2);
    assert!(counting.0.load(Ordering::SeqCst) >= 1);
}

#[test]
fn linkonce_definitions_in_two_modules_resolve_to_one_address() {
    let jit = jit();
    // Both modules carry the same inline function (linkonce_odr, as C++ inline functions are)
    // and return its address.
    let module = |name: &str, getter: &str| {
        format!(
            "$shared = comdat any\n\
             define linkonce_odr i32 @shared() comdat {{\n  ret i32 5\n}}\n\
             define ptr @{getter}() {{\n  ret ptr @shared\n}}\n"
        )
        .replace("{name}", name)
    };
    jit.add_ir(IrModule::text("one.ll", module("one", "addr_one"))).unwrap();
    jit.add_ir(IrModule::text("two.ll", module("two", "addr_two"))).unwrap();
    let one = jit.lookup::<unsafe extern "C" fn() -> usize>("addr_one").unwrap();
    let two = jit.lookup::<unsafe extern "C" fn() -> usize>("addr_two").unwrap();
    // SAFETY: both are ptr(void).
    let (a, b) = unsafe { (one(), two()) };
    assert_eq!(a, b, "function pointers taken in different modules compare equal");
    assert_eq!(a as u64, jit.lookup_address("shared").unwrap().0);
}

/// Counts the modules it sees: it runs only when a module is really compiled.
struct Compiled(AtomicUsize);
impl IrTransform for Compiled {
    fn name(&self) -> &str {
        "count compiled modules"
    }
    fn transform(&self, _: &Module<'_>, _: &TargetMachine) -> jit_core::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn cached_jit(dir: &Path, counter: &Arc<Compiled>) -> (Jit, jit_layers::IrTransformLayer) {
    let jit = Jit::builder().threads(2).cache(dir).build().unwrap();
    let layer = jit.ir_layer().clone().with_transform(counter.clone());
    (jit, layer)
}

fn call_i32(jit: &Jit, name: &str) -> i32 {
    let f = jit.lookup::<unsafe extern "C" fn() -> i32>(name).unwrap();
    // SAFETY: the tests' functions are int(void).
    unsafe { f() }
}

#[test]
fn a_warm_cache_skips_compilation_and_gives_the_same_code() {
    let tmp = tempfile::tempdir().unwrap();
    let ir = "define i32 @forty_two() {\n  ret i32 42\n}\n";
    let counter = Arc::new(Compiled(AtomicUsize::new(0)));
    for run in 0..3 {
        let (jit, layer) = cached_jit(tmp.path(), &counter);
        layer.add(jit.main_dylib(), IrModule::text("m.ll", ir)).unwrap();
        assert_eq!(call_i32(&jit, "forty_two"), 42);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "compiled once, then served by the cache (run {run})");
        let stats = jit.cache().unwrap().stats();
        if run > 0 {
            assert!(stats.hits > 0 && stats.misses == 0, "{stats}");
        }
    }
}

#[test]
fn modules_that_differ_only_in_local_names_share_one_cached_object() {
    let tmp = tempfile::tempdir().unwrap();
    let module = |local: &str| {
        format!(
            "define internal i32 @{local}(i32 %x) noinline {{\n  %y = mul i32 %x, 7\n  ret i32 %y\n}}\n\
             define i32 @api() {{\n  %r = call i32 @{local}(i32 6)\n  ret i32 %r\n}}\n"
        )
    };
    let counter = Arc::new(Compiled(AtomicUsize::new(0)));
    let (jit, layer) = cached_jit(tmp.path(), &counter);
    layer.add(jit.main_dylib(), IrModule::text("first.ll", module("helper_one"))).unwrap();
    assert_eq!(call_i32(&jit, "api"), 42);
    // A fresh JIT on the same cache: same code, another local name.
    let (jit, layer) = cached_jit(tmp.path(), &counter);
    layer.add(jit.main_dylib(), IrModule::text("second.ll", module("helper_two"))).unwrap();
    assert_eq!(call_i32(&jit, "api"), 42);
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the second module reused the first's object");
}

#[test]
fn a_corrupted_cache_entry_is_recompiled_and_replaced_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ir = "define i32 @seven() {\n  ret i32 7\n}\n";
    let counter = Arc::new(Compiled(AtomicUsize::new(0)));
    {
        let (jit, layer) = cached_jit(tmp.path(), &counter);
        layer.add(jit.main_dylib(), IrModule::text("m.ll", ir)).unwrap();
        assert_eq!(call_i32(&jit, "seven"), 7);
    }
    // Damage every entry: flip a byte in the middle of each file.
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&path, bytes).unwrap();
    }
    let (jit, layer) = cached_jit(tmp.path(), &counter);
    layer.add(jit.main_dylib(), IrModule::text("m.ll", ir)).unwrap();
    assert_eq!(call_i32(&jit, "seven"), 7);
    assert_eq!(counter.0.load(Ordering::SeqCst), 2, "recompiled");
    assert!(jit.cache().unwrap().stats().corrupt >= 1);
    let (jit, layer) = cached_jit(tmp.path(), &counter);
    layer.add(jit.main_dylib(), IrModule::text("m.ll", ir)).unwrap();
    assert_eq!(call_i32(&jit, "seven"), 7);
    assert_eq!(counter.0.load(Ordering::SeqCst), 2, "the replaced entries serve the next run");
}

#[test]
fn malformed_bitcode_after_a_valid_signature_is_an_error_not_an_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bc = bitcode(tmp.path(), "t", "int t(void) { return 3; }");
    bc.truncate(bc.len() / 2);
    let jit = jit();
    let err = jit.add_ir(IrModule::bitcode("half.bc", bc)).unwrap_err().to_string();
    assert!(err.starts_with("half.bc: invalid bitcode"), "{err}");
}
