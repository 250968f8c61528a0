//! Profiling and debugging JIT'd code: under `perf record`, `orcjit run --perf-map` and
//! `orcjit link --perf-map` write the perf map that `perf report` uses to name samples in JIT'd
//! functions; under gdb, `--gdb` registers each object through GDB's JIT interface, so a crash's backtrace names the JIT'd
//! frames, lazily compiled or not; `--trace` writes a Chrome/Perfetto trace of each thread's
//! lookups, compiles and links. (The perf and gdb tests say they are skipped, and pass, where
//! their tool is not installed or not permitted.)

use std::path::Path;
use std::process::{Command, Output};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");

/// A hot function the profile must name.
const HOT: &str = r#"
#include <stdio.h>
__attribute__((noinline)) double spin_for_a_while(int n) {
    double x = 0;
    for (int i = 1; i < n; i++) x += 1.0 / ((double)i * i);
    return x;
}
int main(void) {
    double t = 0;
    for (int k = 0; k < 60; k++) t += spin_for_a_while(2000000);
    printf("%.6f\n", t);
    return 0;
}
"#;

/// Runs `cmd` under coreutils' `timeout`, so that a hang fails the test instead of CI.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn perf_record_works(dir: &Path) -> Result<(), String> {
    let data = dir.join("probe.data");
    match Command::new("perf").args(["record", "-q", "-o"]).arg(&data).args(["--", "true"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn perf_report_names_jit_d_functions_from_the_perf_map() {
    let tmp = tempfile::tempdir().unwrap();
    if let Err(why) = perf_record_works(tmp.path()) {
        eprintln!("skipped: perf record is not available here: {why}");
        return;
    }
    let src = tmp.path().join("hot.c");
    std::fs::write(&src, HOT).unwrap();
    // `orcjit run` on bitcode, and `orcjit link` on the object.
    for (flags, out, command) in [(&["-emit-llvm"][..], "hot.bc", "run"), (&["-fPIC"][..], "hot.o", "link")] {
        let input = tmp.path().join(out);
        let cc = Command::new("clang-19").args(["-O1", "-c"]).args(flags).arg(&src).arg("-o").arg(&input).output();
        let cc = cc.unwrap();
        assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
        let data = tmp.path().join(format!("{command}.data"));
        let (data, input) = (data.to_str().unwrap(), input.to_str().unwrap());
        let recorded = run("perf", &["record", "-q", "-o", data, "--", ORCJIT, command, "--perf-map", input]);
        assert!(recorded.status.success(), "perf record: {}", String::from_utf8_lossy(&recorded.stderr));
        assert_eq!(String::from_utf8_lossy(&recorded.stdout).trim(), "98.696014");
        let report = run("perf", &["report", "-i", data, "--stdio", "--sort", "dso,sym"]);
        let text = String::from_utf8_lossy(&report.stdout);
        let line = text.lines().find(|l| l.contains("spin_for_a_while"));
        assert!(line.is_some_and(|l| l.contains("[JIT]")), "{command}: perf report names no JIT'd function:\n{text}");
    }
}

/// A crash two JIT'd calls deep.
const CRASH: &str = r#"
#include <stdio.h>
__attribute__((noinline)) int crash_here(int *p) { return *p + 1; }
__attribute__((noinline)) int call_crash(int *p) { return crash_here(p) * 2; }
int main(void) { puts("about to crash"); fflush(stdout); return call_crash((int *)0); }
"#;

#[test]
fn gdb_backtraces_name_jit_d_frames_registered_through_its_jit_interface() {
    // gdb must be installed and allowed to trace (containers may forbid ptrace).
    match Command::new("gdb").args(["-batch", "-nx", "-ex", "run", "--args", "true"]).output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("exited normally") => {}
        Ok(out) => {
            eprintln!("skipped: gdb cannot run a program here: {}", String::from_utf8_lossy(&out.stderr).trim());
            return;
        }
        Err(e) => {
            eprintln!("skipped: gdb is not installed: {e}");
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("crash.c");
    let bc = tmp.path().join("crash.bc");
    std::fs::write(&src, CRASH).unwrap();
    let cc = Command::new("clang-19").args(["-O0", "-c", "-emit-llvm"]).arg(&src).arg("-o").arg(&bc).output().unwrap();
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let bc = bc.to_str().unwrap();
    let backtrace = |options: &[&str]| {
        let mut args = vec!["-batch", "-nx", "-ex", "run", "-ex", "bt", "--args", ORCJIT, "run"];
        args.extend_from_slice(options);
        args.push(bc);
        let out = run("gdb", &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("SIGSEGV"), "the program did not crash under gdb:\n{text}");
        text.lines().filter(|l| l.starts_with('#')).map(str::to_string).collect::<Vec<_>>()
    };
    for lazy in ["--lazy=function", "--lazy=none"] {
        let frames = backtrace(&["--gdb", lazy]);
        for (i, name) in ["crash_here", "call_crash", "main"].iter().enumerate() {
            assert!(
                frames.get(i).is_some_and(|f| f.contains(&format!(" in {name} ("))),
                "{lazy}: frame #{i} should be {name}:\n{}",
                frames.join("\n")
            );
        }
    }
    // Without the registration gdb has no name for the crashing frame.
    let frames = backtrace(&[]);
    assert!(frames.first().is_some_and(|f| f.contains("in ?? ()")), "{}", frames.join("\n"));
}

#[test]
fn a_trace_shows_each_thread_s_lookups_compiles_and_links_as_chrome_json() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hot.c");
    let bc = tmp.path().join("hot.bc");
    std::fs::write(&src, HOT.replace("k < 60", "k < 2")).unwrap();
    let cc = Command::new("clang-19").args(["-O1", "-c", "-emit-llvm"]).arg(&src).arg("-o").arg(&bc).output().unwrap();
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let trace = tmp.path().join("trace.json");
    let out = run(ORCJIT, &["run", "--threads", "2", "--trace", trace.to_str().unwrap(), bc.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let names: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    for name in ["lookup", "materialize", "prepare", "compile", "link", "lazy call"] {
        assert!(names.contains(name), "no '{name}' span in the trace: {names:?}");
    }
    // Work is seen on the program's thread and on the pool's.
    let threads: std::collections::BTreeSet<u64> = events.iter().filter_map(|e| e["tid"].as_u64()).collect();
    assert!(threads.len() >= 2, "{threads:?}");
}
