//! `orcjit run` runs programs compiled to LLVM bitcode exactly as their native builds run:
//! C and C++ programs (exceptions across modules, COMDAT, static constructors, a module reached
//! only by its constructor, thread-local variables used from several threads) and the Lua 5.4
//! interpreter, at two code generation levels, with 1 and 2 threads, cold and with a warm
//! object cache. Bad input is reported with LLVM's diagnostic and a failure status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn is_cxx(src: &Path) -> bool {
    src.extension().is_some_and(|e| e == "cpp")
}

/// Compiles each source to bitcode and to an object in `dir`; links the objects natively.
fn build(dir: &Path, sources: &[PathBuf], flags: &[&str], libs: &[&str]) -> (Vec<PathBuf>, PathBuf) {
    let mut bitcode = Vec::new();
    let mut objects = Vec::new();
    for src in sources {
        let cc = if is_cxx(src) { "clang++-19" } else { "clang-19" };
        let stem = src.file_stem().unwrap().to_str().unwrap();
        let bc = dir.join(format!("{stem}.bc"));
        let obj = dir.join(format!("{stem}.o"));
        check(&run(Command::new(cc).args(flags).args(["-c", "-emit-llvm"]).arg(src).arg("-o").arg(&bc)), "compile .bc");
        check(&run(Command::new(cc).args(flags).arg("-c").arg(src).arg("-o").arg(&obj)), "compile .o");
        bitcode.push(bc);
        objects.push(obj);
    }
    let exe = dir.join("native");
    check(&run(Command::new("clang++-19").args(&objects).arg("-o").arg(&exe).args(libs)), "native link");
    (bitcode, exe)
}

/// `orcjit run [options] --extra-module=... main.bc args` against the native run.
fn same_as_native(what: &str, bitcode: &[PathBuf], native: &Path, options: &[&str], args: &[&str]) {
    let expected = run(Command::new(native).args(args));
    let mut cmd = Command::new(ORCJIT);
    cmd.arg("run").args(options);
    for extra in &bitcode[1..] {
        cmd.arg(format!("--extra-module={}", extra.display()));
    }
    let got = run(cmd.arg(&bitcode[0]).args(args));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&expected.stdout),
        "{what} {options:?}: output differs; orcjit stderr:\n{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.status.code(), expected.status.code(), "{what} {options:?}: exit status");
}

fn program(dir: &str, sources: &[&str], flags: &[&str], libs: &[&str], options: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let srcs: Vec<PathBuf> = sources.iter().map(|s| root().join(dir).join(s)).collect();
    let (bitcode, native) = build(tmp.path(), &srcs, flags, libs);
    for threads in ["1", "2"] {
        let mut opts = vec!["--threads", threads];
        opts.extend_from_slice(options);
        same_as_native(dir, &bitcode, &native, &opts, &["a", "b"]);
    }
}

#[test]
fn cxx_exceptions_comdat_and_static_objects_run_from_bitcode_as_native() {
    let p = &["-O1", "-fPIC"];
    program(
        "jit-link/tests/programs/cxx",
        &["main.cpp", "other.cpp"],
        p,
        &["-lstdc++"],
        &["--dlopen", "libstdc++.so.6"],
    );
}

#[test]
fn constructors_and_destructors_run_from_bitcode_in_native_order() {
    program("jit-link/tests/programs/ctors", &["main.c", "other.c"], &["-O1", "-fPIC"], &[], &[]);
}

#[test]
fn a_module_reached_only_by_its_static_constructor_is_compiled_and_initialized() {
    let p = &["-O1", "-fPIC"];
    program("tests/data/registry", &["main.cpp", "plugins.cpp"], p, &["-lstdc++"], &["--dlopen", "libstdc++.so.6"]);
}

#[test]
fn thread_local_variables_from_bitcode_work_from_several_threads() {
    program("jit-link/tests/programs/tls", &["main.c", "other.c"], &["-O1", "-fPIC", "-pthread"], &["-pthread"], &[]);
}

#[test]
fn malformed_bitcode_is_reported_with_llvm_s_diagnostic_and_a_failure_status() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.bc");
    std::fs::write(&bad, b"BC\xC0\xDE garbage").unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.bc: invalid bitcode"), "{stderr}");
    let text = tmp.path().join("bad.ll");
    std::fs::write(&text, "define i32 @main() {\n  ret i32 zero\n}\n").unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&text));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.ll: invalid IR: ") && stderr.contains("bad.ll:2:"), "{stderr}");
}

#[test]
fn a_missing_symbol_names_the_module_that_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ll = tmp.path().join("needy.ll");
    std::fs::write(
        &ll,
        "declare i32 @not_anywhere()\ndefine i32 @main() {\n  %r = call i32 @not_anywhere()\n  ret i32 %r\n}\n",
    )
    .unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&ll));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("undefined symbol 'not_anywhere' referenced from") && stderr.contains("needy.ll"),
        "{stderr}"
    );
}

/// The directory of Lua 5.4's C sources inside the `lua-src` crate (a dev-dependency).
fn lua_sources() -> PathBuf {
    let out = run(Command::new(env!("CARGO")).args(["metadata", "--format-version", "1"]).current_dir(root()));
    check(&out, "cargo metadata");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let lua = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == "lua-src").expect("lua-src").clone();
    PathBuf::from(lua["manifest_path"].as_str().unwrap()).parent().unwrap().join("lua-5.4.9")
}

#[test]
fn the_lua_interpreter_from_bitcode_runs_as_native_at_two_levels_threads_and_with_a_warm_cache() {
    let src = lua_sources();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .filter(|p| !matches!(p.file_name().and_then(|n| n.to_str()), Some("lua.c" | "luac.c" | "onelua.c")))
        .collect();
    sources.sort();
    sources.insert(0, root().join("tests/data/lua/host.c"));
    let include = format!("-I{}", src.display());
    let flags = ["-O1", "-fPIC", "-std=gnu99", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-w", &include];
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, native) = build(tmp.path(), &sources, &flags, &["-lm"]);
    let script = root().join("tests/data/lua/programs.lua");
    let args = [script.to_str().unwrap(), "x", "y"];
    for level in ["-O0", "-O2"] {
        for threads in ["1", "2"] {
            same_as_native("lua", &bitcode, &native, &[level, "--threads", threads], &args);
        }
    }
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    for round in ["cold", "warm"] {
        same_as_native(&format!("lua ({round} cache)"), &bitcode, &native, &["--cache", cache], &args);
    }
}
