//! `orcjit run --board FILE.html`: the page opens in headless Chromium (Debian's `chromium`)
//! without errors and shows one square per module, each in the state the run left it in: every
//! module of a real multi-module C program ready (and its output unchanged), and the module of a program
//! whose link fails shown failed. A screenshot is taken too, as a person would see the page.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");
const STATES: [&str; 8] = ["none", "added", "queued", "compiling", "resolved", "emitted", "ready", "failed"];

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)
}

/// Runs a command under coreutils' `timeout`, so that a hang fails the test, not CI.
fn run(program: &str, args: &[String]) -> Output {
    Command::new("timeout").arg("120").arg(program).args(args).output().unwrap()
}

fn chromium() -> &'static str {
    let found = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "chromium is not installed: apt-get install -y chromium (as .ci/run does)");
    "chromium"
}

/// Chromium's DOM of `page` after its scripts ran, and what it printed to stderr.
fn dump_dom(page: &Path) -> (String, String) {
    let args = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom"];
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push(format!("file://{}", page.display()));
    let out = run(chromium(), &all);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn screenshot(page: &Path, png: &Path) {
    let args = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,800"];
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push(format!("--screenshot={}", png.display()));
    all.push(format!("file://{}", page.display()));
    let out = run(chromium(), &all);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a {} byte screenshot cannot show the board", bytes.len());
}

/// The value of attribute `name` in the first tag of `html` containing `tag_start`.
fn attribute<'a>(html: &'a str, tag_start: &str, name: &str) -> Option<&'a str> {
    let tag = &html[html.find(tag_start)?..];
    let tag = &tag[..tag.find('>')?];
    let value = &tag[tag.find(&format!(" {name}=\""))? + name.len() + 3..];
    Some(&value[..value.find('"')?])
}

/// The page's squares: (module, state), in order.
fn squares(dom: &str) -> Vec<(String, String)> {
    dom.match_indices("<div class=\"square ")
        .map(|(at, _)| {
            let tag = &dom[at..];
            let module = attribute(tag, "<div", "data-module").expect("data-module").to_string();
            let state = attribute(tag, "<div", "data-state").expect("data-state").to_string();
            (module, state)
        })
        .collect()
}

/// Opens `page` and checks what every board must show; returns the squares.
fn open_board(page: &Path, modules: &[String]) -> Vec<(String, String)> {
    let (dom, stderr) = dump_dom(page);
    let status = attribute(&dom, "<body", "data-status").unwrap_or("missing");
    assert_eq!(status, "ok", "the page's script did not finish cleanly");
    let console_errors: Vec<&str> =
        stderr.lines().filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error"))).collect();
    assert!(console_errors.is_empty(), "console errors: {console_errors:#?}");
    let squares = squares(&dom);
    let shown: Vec<&str> = squares.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(shown, modules.iter().map(String::as_str).collect::<Vec<_>>(), "one square per module, in order");
    for (module, state) in &squares {
        assert!(STATES.contains(&state.as_str()), "{module}: unknown state {state}");
    }
    screenshot(page, &page.with_extension("png"));
    squares
}

/// Compiles C `sources` to bitcode in `dir`; the first is the main module.
fn bitcode(dir: &Path, sources: &[PathBuf]) -> Vec<String> {
    sources
        .iter()
        .map(|src| {
            let bc = dir.join(src.file_stem().unwrap()).with_extension("bc");
            let c = Command::new("clang-19").args(["-O1", "-emit-llvm", "-c"]).arg(src).arg("-o").arg(&bc).output();
            let c = c.unwrap();
            assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
            bc.to_str().unwrap().to_string()
        })
        .collect()
}

/// `orcjit run --board PAGE OPTIONS --extra-module=... MAIN`; the board lists the extra modules
/// first, then the main one.
fn run_with_board(page: &Path, modules: &[String], options: &[&str]) -> (Output, Vec<String>) {
    let mut args: Vec<String> = vec!["run".into(), "--board".into(), page.to_str().unwrap().into()];
    args.extend(options.iter().map(|o| o.to_string()));
    args.extend(modules[1..].iter().map(|m| format!("--extra-module={m}")));
    args.push(modules[0].clone());
    let mut order = modules[1..].to_vec();
    order.push(modules[0].clone());
    (run(ORCJIT, &args), order)
}

#[test]
fn every_module_of_a_multi_module_run_ends_ready_lazily_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data("lazy/threads");
    let sources: Vec<PathBuf> = ["main.c", "arith.c", "table.c", "text.c"].iter().map(|s| dir.join(s)).collect();
    let modules = bitcode(tmp.path(), &sources);
    for (lazy, threads) in [("--lazy=function", "2"), ("--lazy=none", "1")] {
        let page = tmp.path().join(format!("board{}.html", &lazy[7..]));
        let mut plain: Vec<String> = vec!["run".into(), lazy.into(), "--threads".into(), threads.into()];
        plain.extend(modules[1..].iter().map(|m| format!("--extra-module={m}")));
        plain.push(modules[0].clone());
        let expected = run(ORCJIT, &plain);
        let (out, order) = run_with_board(&page, &modules, &[lazy, "--threads", threads]);
        assert_eq!(out.stdout, expected.stdout, "{lazy}: the board changes what the program prints");
        assert_eq!(out.status.code(), expected.status.code(), "{lazy}: {}", String::from_utf8_lossy(&out.stderr));
        let squares = open_board(&page, &order);
        for (module, state) in &squares {
            assert_eq!(state, "ready", "{lazy}: {module} is called by the program, so it ends ready");
        }
    }
}

#[test]
fn a_module_that_cannot_link_is_shown_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let needy = tmp.path().join("needy.ll");
    std::fs::write(
        &needy,
        "declare i32 @not_anywhere()\ndefine i32 @main() {\n  %r = call i32 @not_anywhere()\n  ret i32 %r\n}\n",
    )
    .unwrap();
    let unused = tmp.path().join("unused.ll");
    std::fs::write(&unused, "define i32 @never_called() {\n  ret i32 7\n}\n").unwrap();
    let modules = [needy.to_str().unwrap().to_string(), unused.to_str().unwrap().to_string()];
    let page = tmp.path().join("failed.html");
    let (out, order) = run_with_board(&page, &modules, &["--lazy=none", "--threads", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let squares = open_board(&page, &order);
    let state = |m: &Path| squares.iter().find(|(n, _)| n == m.to_str().unwrap()).map(|(_, s)| s.as_str());
    assert_eq!(state(&needy), Some("failed"));
    assert_eq!(state(&unused), Some("added"), "nothing asked for it");
}
