//! Profiling JIT'd code: under `perf record`, `orcjit run --perf-map` writes the perf map that
//! `perf report` uses to name samples in JIT'd functions (the test says it is skipped, and
//! passes, where `perf record` is not installed or not permitted).

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
    let bc = tmp.path().join("hot.bc");
    std::fs::write(&src, HOT).unwrap();
    let cc = Command::new("clang-19").args(["-O1", "-c", "-emit-llvm"]).arg(&src).arg("-o").arg(&bc).output().unwrap();
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let data = tmp.path().join("perf.data");
    let (data, bc) = (data.to_str().unwrap(), bc.to_str().unwrap());
    let recorded = run("perf", &["record", "-q", "-o", data, "--", ORCJIT, "run", "--perf-map", bc]);
    assert!(recorded.status.success(), "perf record: {}", String::from_utf8_lossy(&recorded.stderr));
    assert_eq!(String::from_utf8_lossy(&recorded.stdout).trim(), "98.696014");
    let report = run("perf", &["report", "-i", data, "--stdio", "--sort", "dso,sym"]);
    let text = String::from_utf8_lossy(&report.stdout);
    let line = text.lines().find(|l| l.contains("spin_for_a_while"));
    assert!(line.is_some_and(|l| l.contains("[JIT]")), "perf report names no JIT'd spin_for_a_while:\n{text}");
}
