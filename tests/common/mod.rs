//! Helpers shared by the integration tests.

// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The directory of dev-dependency `name`'s sources (from `cargo metadata`): real C programs
/// (Lua in `lua-src`, SQLite in `libsqlite3-sys`) for the tests to compile.
pub fn crate_dir(name: &str) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let package = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).expect(name).clone();
    PathBuf::from(package["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf()
}

/// SQLite's amalgamation in the `libsqlite3-sys` crate: the directory (for `-I`), and the
/// sources of a program: the tests' driver (`tests/data/sqlite/driver.c`) and `sqlite3.c`.
pub fn sqlite_sources() -> (PathBuf, Vec<PathBuf>) {
    let dir = crate_dir("libsqlite3-sys").join("sqlite3");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sqlite/driver.c");
    let sources = vec![driver, dir.join("sqlite3.c")];
    (dir, sources)
}

/// Lua 5.4's sources in the `lua-src` crate: the directory (for `-I`) and its C files but the
/// stand-alone programs' (`lua.c`, `luac.c`, `onelua.c`), sorted.
pub fn lua_sources() -> (PathBuf, Vec<PathBuf>) {
    let dir = crate_dir("lua-src").join("lua-5.4.9");
    let is_library = |p: &Path| {
        p.extension().is_some_and(|e| e == "c")
            && !matches!(p.file_name().and_then(|n| n.to_str()), Some("lua.c" | "luac.c" | "onelua.c"))
    };
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| is_library(p)).collect();
    files.sort();
    (dir, files)
}

/// Runs `cmd` to completion, as `Command::output` does, but kills it (and fails the test)
/// if it has not exited within `limit`: for programs that could hang.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (exited, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = watch.recv_timeout(limit).is_err();
        if hung {
            // SAFETY: SIGKILL to the child spawned above, which has not been waited for yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        hung
    });
    let out = child.wait_with_output().expect("wait for the child");
    let _ = exited.send(());
    assert!(!watchdog.join().unwrap(), "{cmd:?} still ran after {limit:?}: killed");
    out
}

/// Runs `jit` (an orcjit command running a program) under a 120 s watchdog and requires the
/// native run's standard output and exit status; `what` names the case in failures.
pub fn assert_runs_as_native(what: &str, jit: &mut Command, native: &Output) {
    let got = output_within(jit, Duration::from_secs(120));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&native.stdout),
        "{what}: output differs; orcjit stderr:\n{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.status.code(), native.status.code(), "{what}: exit status");
}

/// Builds `sources` natively into the shared library `dir/name` (clang++-19 if any is C++).
pub fn shared_library(dir: &Path, name: &str, sources: &[PathBuf], flags: &[&str]) -> PathBuf {
    let lib = dir.join(name);
    let cc = if sources.iter().any(|s| s.extension().is_some_and(|e| e == "cpp")) { "clang++-19" } else { "clang-19" };
    let out = Command::new(cc).args(flags).args(["-fPIC", "-shared"]).args(sources).arg("-o").arg(&lib).output();
    let out = out.unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(out.status.success(), "{cc} -shared -o {name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    lib
}
