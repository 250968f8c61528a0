//! The speculation lab: runs one multi-module program under each laziness and speculation
//! policy, with 1 and 2 compile threads, and shows what each did.
//!
//! ```sh
//! cargo run --release --example speclab                      # Lua 5.4 on tests/data/lua/programs.lua
//! cargo run --release --example speclab -- --runs 5 --script bench.lua arg1
//! ```
//!
//! What it shows:
//! - how a host configures orcjit's laziness (`Laziness`) and speculation (`Speculation`:
//!   none, the IR call graph's direct callees, or a replay of the first-call order an earlier
//!   run recorded with `record_first_calls`), and reads back what happened (`CodStats`,
//!   `SpeculationStats`);
//! - a table per policy and thread count: median wall time, median time to the program's first
//!   output, functions compiled, guesses queued, guesses the program then called (hits) and
//!   guesses it never called (waste);
//! - a module board page per configuration (`orcjit::board`), in `target/speclab/`: open one
//!   in a browser and press Play to watch the modules move through their states.
//!
//! The program is the Lua interpreter from the `lua-src` crate's sources (a dev-dependency),
//! compiled to bitcode with clang-19 (one module per C file, cached in `target/speclab/`), with
//! `tests/data/lua/host.c` as `main`. Each run is a fresh process (this example started again
//! with `SPECLAB_CHILD` set): cold, like a user's first run, and a program's `exit` ends only it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orcjit::board::Board;
use orcjit::layers::{Jit, Laziness, ReplayProfile, Speculation, at_exit};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One configuration of a run.
#[derive(Clone)]
struct Config {
    lazy: &'static str,
    speculate: &'static str,
    threads: usize,
}

impl Config {
    fn name(&self) -> String {
        format!("lazy={} speculate={} threads={}", self.lazy, self.speculate, self.threads)
    }

    fn file_stem(&self) -> String {
        format!("board-{}-{}-t{}", self.lazy, self.speculate, self.threads)
    }
}

/// What the parent tells a child run (as JSON in `SPECLAB_CHILD`).
fn child_request(cfg: &Config, modules: &[PathBuf], args: &[String], files: &RunFiles) -> Value {
    json!({
        "lazy": cfg.lazy, "speculate": cfg.speculate, "threads": cfg.threads,
        "modules": modules, "args": args,
        "profile": files.profile, "record": files.record, "board": files.board, "stats": files.stats,
        "title": cfg.name(),
    })
}

#[derive(Default)]
struct RunFiles {
    profile: Option<PathBuf>,
    record: Option<PathBuf>,
    board: Option<PathBuf>,
    stats: PathBuf,
}

fn main() {
    if let Ok(request) = std::env::var("SPECLAB_CHILD") {
        let request: Value = serde_json::from_str(&request).expect("SPECLAB_CHILD is JSON");
        child(&request);
    }
    if let Err(e) = lab() {
        eprintln!("speclab: {e}");
        std::process::exit(1);
    }
}

// ---- the parent: build the program, run every configuration, print the table ----------------

fn lab() -> Result<(), String> {
    let mut runs = 3;
    let mut script = Path::new(ROOT).join("tests/data/lua/programs.lua");
    let mut script_args: Vec<String> = vec!["x".into(), "y".into()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).ok_or("--runs needs a number")?,
            "--script" => {
                script = args.next().ok_or("--script needs a file")?.into();
                script_args = args.by_ref().collect();
            }
            other => return Err(format!("unknown argument '{other}' (try --runs N, --script FILE [ARGS])")),
        }
    }
    let out = Path::new(ROOT).join("target/speclab");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let started = Instant::now();
    let modules = lua_bitcode(&out)?;
    println!("speclab: Lua 5.4, {} modules, built in {:.1} s", modules.len(), started.elapsed().as_secs_f64());
    let mut program_args = vec![script.display().to_string()];
    program_args.extend(script_args);

    // The profile the `profile` policy replays: the first calls of one plain lazy run.
    let profile = out.join("profile.txt");
    let record = Config { lazy: "function", speculate: "none", threads: 1 };
    let files = RunFiles { record: Some(profile.clone()), stats: out.join("stats.json"), ..RunFiles::default() };
    let reference = run_once(&record, &modules, &program_args, &files)?;

    let mut table = Vec::new();
    for threads in [1, 2] {
        for (lazy, speculate) in [
            ("none", "none"),
            ("module", "none"),
            ("function", "none"),
            ("function", "static"),
            ("function", "profile"),
        ] {
            let cfg = Config { lazy, speculate, threads };
            let mut results = Vec::new();
            for run in 0..runs {
                let files = RunFiles {
                    profile: (speculate == "profile").then(|| profile.clone()),
                    // The last run's board is kept.
                    board: (run + 1 == runs).then(|| out.join(cfg.file_stem()).with_extension("html")),
                    stats: out.join("stats.json"),
                    ..RunFiles::default()
                };
                let result = run_once(&cfg, &modules, &program_args, &files)?;
                if result.stdout != reference.stdout || result.status != reference.status {
                    return Err(format!("{}: the program's output or status changed", cfg.name()));
                }
                results.push(result);
            }
            table.push((cfg, results));
        }
    }
    print_table(&table);
    println!(
        "speclab: every run printed the same as the first; boards in {}; {:.1} s in all",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct RunResult {
    wall: Duration,
    first_output: Duration,
    stdout: Vec<u8>,
    status: Option<i32>,
    stats: Value,
}

/// Runs the program once in a fresh process under `cfg`.
fn run_once(cfg: &Config, modules: &[PathBuf], args: &[String], files: &RunFiles) -> Result<RunResult, String> {
    let _ = std::fs::remove_file(&files.stats);
    let request = child_request(cfg, modules, args, files).to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .env("SPECLAB_CHILD", request)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a run: {e}"))?;
    let mut pipe = child.stdout.take().expect("piped");
    let mut stdout = Vec::new();
    let mut first_output = None;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first_output.get_or_insert_with(|| start.elapsed());
                stdout.extend_from_slice(&buf[..n]);
            }
            Err(e) => return Err(format!("reading the program's output: {e}")),
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    let stats = std::fs::read_to_string(&files.stats)
        .map_err(|e| format!("{}: no statistics from the run ({e}); it ended {status}", cfg.name()))?;
    let stats = serde_json::from_str(&stats).map_err(|e| format!("{}: bad statistics: {e}", cfg.name()))?;
    Ok(RunResult { wall, first_output: first_output.unwrap_or(wall), stdout, status: status.code(), stats })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn print_table(table: &[(Config, Vec<RunResult>)]) {
    println!(
        "\n{:<9} {:<10} {:>7} {:>10} {:>13} {:>9} {:>7} {:>5} {:>6}",
        "lazy", "speculate", "threads", "wall ms", "first out ms", "compiled", "queued", "hits", "waste"
    );
    for (cfg, results) in table {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let wall = median(results.iter().map(|r| r.wall).collect());
        let first = median(results.iter().map(|r| r.first_output).collect());
        let last = &results[results.len() - 1].stats;
        let n = |key: &str| last[key].as_u64().unwrap_or(0);
        println!(
            "{:<9} {:<10} {:>7} {:>10.1} {:>13.1} {:>9} {:>7} {:>5} {:>6}",
            cfg.lazy,
            cfg.speculate,
            cfg.threads,
            ms(wall),
            ms(first),
            n("compiled"),
            n("queued"),
            n("hits"),
            n("queued").saturating_sub(n("hits")),
        );
    }
    println!(
        "(medians of {} runs; \"compiled\": functions (or, lazy=module, modules) compiled by LLVM, lazy=none: \
         modules; hits: guesses the program then called; waste: guesses it never called)",
        table.first().map_or(0, |(_, r)| r.len())
    );
}

/// Lua's C files (and the host's `main`) as bitcode, one module per file, built once.
fn lua_bitcode(out: &Path) -> Result<Vec<PathBuf>, String> {
    let src = lua_sources()?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .filter(|p| !matches!(p.file_name().and_then(|n| n.to_str()), Some("lua.c" | "luac.c" | "onelua.c")))
        .collect();
    sources.sort();
    sources.insert(0, Path::new(ROOT).join("tests/data/lua/host.c"));
    let bc_dir = out.join("lua-bc");
    std::fs::create_dir_all(&bc_dir).map_err(|e| e.to_string())?;
    let include = format!("-I{}", src.display());
    let compile = |source: &PathBuf| -> Result<PathBuf, String> {
        let bc = bc_dir.join(source.file_stem().unwrap()).with_extension("bc");
        if bc.exists() {
            return Ok(bc);
        }
        let flags = ["-O2", "-fPIC", "-std=gnu99", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-w", "-emit-llvm", "-c"];
        let c = Command::new("clang-19").args(flags).arg(&include).arg(source).arg("-o").arg(&bc).output();
        let c = c.map_err(|e| format!("cannot run clang-19 (apt-get install clang-19): {e}"))?;
        if !c.status.success() {
            return Err(format!("clang-19 {}: {}", source.display(), String::from_utf8_lossy(&c.stderr)));
        }
        Ok(bc)
    };
    // Two compilers at a time.
    let (even, odd): (Vec<_>, Vec<_>) = sources.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| even.iter().map(|(_, p)| compile(p)).collect::<Result<Vec<_>, _>>());
        let b = s.spawn(|| odd.iter().map(|(_, p)| compile(p)).collect::<Result<Vec<_>, _>>());
        (a.join().expect("compile thread"), b.join().expect("compile thread"))
    });
    let (a, b) = (a?, b?);
    // Back in source order: host.c's main module first.
    let mut modules = Vec::with_capacity(sources.len());
    for i in 0..sources.len() {
        modules.push(if i % 2 == 0 { a[i / 2].clone() } else { b[i / 2].clone() });
    }
    Ok(modules)
}

/// The directory of Lua 5.4's C sources inside the `lua-src` crate.
fn lua_sources() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(ROOT)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let lua = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "lua-src"))
        .ok_or("cargo metadata does not list lua-src")?;
    let manifest = PathBuf::from(lua["manifest_path"].as_str().ok_or("lua-src has no manifest path")?);
    let dir = manifest.parent().ok_or("lua-src's manifest has no directory")?;
    std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("lua-5.4")))
        .ok_or_else(|| format!("no lua-5.4 sources in {}", dir.display()))
}

// ---- a child: one run of the program under one configuration --------------------------------

fn child(request: &Value) -> ! {
    let text = |key: &str| request[key].as_str().map(str::to_string);
    let path = |key: &str| request[key].as_str().map(PathBuf::from);
    let board = path("board").map(|file| {
        use tracing_subscriber::layer::SubscriberExt;
        let board = Board::new();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(board.layer()))
            .expect("no other subscriber");
        (board, file)
    });
    let speculation = match (text("speculate").as_deref(), path("profile")) {
        (Some("static"), _) => Speculation::Static,
        (Some("profile"), Some(file)) => match ReplayProfile::read(&file) {
            Ok(profile) => Speculation::Profile(Arc::new(profile)),
            Err(e) => fail(&format!("cannot read the profile {}: {e}", file.display())),
        },
        _ => Speculation::None,
    };
    let laziness = match text("lazy").as_deref() {
        Some("none") => Laziness::None,
        Some("module") => Laziness::Module,
        _ => Laziness::Function,
    };
    let threads = request["threads"].as_u64().unwrap_or(2) as usize;
    let jit = Jit::builder()
        .threads(threads)
        .lazy(laziness)
        .speculation(speculation)
        .record_first_calls(path("record").is_some())
        .dlopen("libm.so.6")
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot build the JIT: {e}")));
    let modules: Vec<PathBuf> = serde_json::from_value(request["modules"].clone()).expect("modules");
    for module in &modules {
        jit.add_ir_file(module).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let jit = Arc::new(jit);

    // Whichever way the program exits (main returns, or it calls exit), these run last.
    let shared = jit.clone();
    let (stats, record, title) = (path("stats").expect("stats"), path("record"), text("title").unwrap_or_default());
    let names: Vec<String> = modules.iter().map(|m| m.display().to_string()).collect();
    at_exit::add_exit_hook(move || {
        let jit = &shared;
        if let Err(e) = jit.object_layer().run_exit_finalizers(jit.main_dylib().id()) {
            eprintln!("speclab: finalizers: {e}");
        }
        let cod = jit.lazy_layer().map(|l| l.stats());
        let spec = jit.speculator().map(|s| s.stats());
        let compiled = match &cod {
            Some(c) => c.partitions_compiled,
            None => names.len() as u64,
        };
        let summary = json!({
            "compiled": compiled,
            "queued": spec.as_ref().map_or(0, |s| s.queued),
            "hits": spec.as_ref().map_or(0, |s| s.hits),
            "first_calls": spec.as_ref().map_or(0, |s| s.first_calls),
        });
        if let Err(e) = std::fs::write(&stats, summary.to_string()) {
            eprintln!("speclab: {}: {e}", stats.display());
        }
        if let (Some(file), Some(speculator)) = (&record, jit.speculator()) {
            if let Err(e) = std::fs::write(file, speculator.profile()) {
                eprintln!("speclab: {}: {e}", file.display());
            }
        }
        if let Some((board, file)) = &board {
            if let Err(e) = board.write_html(file, &title, &names) {
                eprintln!("speclab: {}: {e}", file.display());
            }
        }
    });
    // A pipe would make C's stdout fully buffered, and the first output arrive only at exit.
    // SAFETY: glibc's `stdout` is a valid stream, and nothing has written to it yet.
    unsafe { libc::setvbuf(c_stdout, std::ptr::null_mut(), libc::_IOLBF, 0) };
    let args: Vec<String> = serde_json::from_value(request["args"].clone()).expect("args");
    let argv0 = modules[0].display().to_string();
    let status = jit.run_main(&argv0, &args).unwrap_or_else(|e| fail(&e.to_string()));
    at_exit::run_exit_sequence();
    at_exit::exit_process(status)
}

unsafe extern "C" {
    /// C's standard output stream (glibc).
    #[link_name = "stdout"]
    static mut c_stdout: *mut libc::FILE;
}

fn fail(message: &str) -> ! {
    eprintln!("speclab (run): {message}");
    at_exit::run_exit_sequence();
    std::process::exit(1)
}
