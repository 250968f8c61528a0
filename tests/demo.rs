//! The README's first command (`cargo run --release`: `orcjit-llvm` with no arguments runs a
//! built-in IR program; so does `orcjit`, by running `orcjit-llvm`) and `orcjit demo` (the
//! execution session at work) work end to end.

use std::process::Command;

#[test]
fn orcjit_alone_compiles_and_runs_its_built_in_program() {
    for binary in [env!("CARGO_BIN_EXE_orcjit"), env!("CARGO_BIN_EXE_orcjit-llvm")] {
        let out = Command::new(binary).output().expect("run orcjit");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{binary} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("2262 primes below 20000, the largest 19997"), "{stdout}");
        assert!(stdout.contains("fib(40) = 102334155"), "{stdout}");
    }
}

/// `orcjit` runs every subcommand but `link` by becoming `orcjit-llvm`; without it beside
/// `orcjit`, it says where it looked and how to build it.
#[test]
fn orcjit_without_orcjit_llvm_beside_it_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("orcjit");
    std::fs::copy(env!("CARGO_BIN_EXE_orcjit"), &alone).unwrap();
    let out = Command::new(&alone).args(["run", "prog.bc"]).output().expect("run orcjit");
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("cannot run {}", tmp.path().join("orcjit-llvm").display());
    assert!(stderr.contains(&expected) && stderr.contains("cargo build --release"), "{stderr}");
}

#[test]
fn the_session_demo_shows_lazy_materialization_cycles_process_symbols_and_failures() {
    let out = Command::new(env!("CARGO_BIN_EXE_orcjit")).arg("demo").output().expect("run orcjit demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "orcjit failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "before lookup, 'even' is NeverSearched",
        "'even' is Ready at 0x1000; 'odd' is Ready; 'never_called' is NeverSearched",
        "'puts' from libc, found by the process-symbols generator, called through its JIT address",
        "failed to materialize 'main_loop' in 'main'; root cause: 'parse' in 'main': error: expected ';'",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("materializing 'never_called'"), "an unused unit must stay lazy:\n{stdout}");
}

#[test]
fn an_unknown_command_is_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_orcjit")).arg("frobnicate").output().expect("run orcjit");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'frobnicate'"));
}
