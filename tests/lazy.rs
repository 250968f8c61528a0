//! Lazy compilation (`orcjit run --lazy=function|module`, `Laziness::Function`) on real C
//! programs compiled by clang-19, against their native builds: eight threads of a program
//! racing into uncompiled functions of four modules (shared and per-thread functions, calls
//! through pointers, recursion across modules, a libc callback) get native results, and each
//! module is read and compiled once when compiled whole; a function has one address whichever
//! module or the host takes it, in code or in static data, before and after its body is
//! compiled; computed-goto and direct-threaded interpreters run as native; and sixteen host
//! threads making the first call of one function at once compile exactly its partition, once;
//! and hot functions (a computed-goto interpreter among them) move to their second tier
//! behind the address they had.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use jit_layers::{Jit, Laziness, TierUp};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");

/// A child process (compiler, native program, `orcjit run`) running longer than this hangs.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// An in-process JIT round running longer than this hangs.
const WATCHDOG: Duration = Duration::from_secs(60);

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/lazy").join(path)
}

/// Runs `cmd` to completion, its output captured; kills it and fails if it outlives
/// [`CHILD_TIMEOUT`].
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read both pipes meanwhile, so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).map(|_| bytes)
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap().unwrap_or_default();
            panic!("{cmd:?} hung (killed after {CHILD_TIMEOUT:?}); stderr:\n{}", String::from_utf8_lossy(&stderr));
        }
        // Polling, not timing: the deadline only bounds a hang.
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap().expect("child's stdout");
    let stderr = stderr.join().unwrap().expect("child's stderr");
    Output { status, stdout, stderr }
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Compiles C `src` with clang-19 and `flags` to `dir/<stem>.bc` (and, if `object`, to
/// `dir/<stem>.o`); returns the paths.
fn compile(dir: &Path, src: &Path, flags: &[&str], object: bool) -> (PathBuf, PathBuf) {
    let stem = src.file_stem().unwrap().to_str().unwrap();
    let bc = dir.join(format!("{stem}.bc"));
    let obj = dir.join(format!("{stem}.o"));
    check(
        &run(Command::new("clang-19").args(flags).args(["-c", "-emit-llvm"]).arg(src).arg("-o").arg(&bc)),
        "compile .bc",
    );
    if object {
        check(&run(Command::new("clang-19").args(flags).arg("-c").arg(src).arg("-o").arg(&obj)), "compile .o");
    }
    (bc, obj)
}

/// Compiles each source to bitcode and to an object in `dir`; links the objects natively.
fn build(dir: &Path, sources: &[PathBuf], flags: &[&str], libs: &[&str]) -> (Vec<PathBuf>, PathBuf) {
    let (bitcode, objects): (Vec<PathBuf>, Vec<PathBuf>) = sources.iter().map(|s| compile(dir, s, flags, true)).unzip();
    let exe = dir.join("native");
    check(&run(Command::new("clang-19").args(&objects).arg("-o").arg(&exe).args(libs)), "native link");
    (bitcode, exe)
}

/// `orcjit run [options] --extra-module=... main.bc` against the native run: orcjit's stderr,
/// or how the runs differ.
fn same_as_native(what: &str, bitcode: &[PathBuf], native: &Path, options: &[&str]) -> Result<String, String> {
    let expected = run(&mut Command::new(native));
    let mut cmd = Command::new(ORCJIT);
    cmd.arg("run").args(options);
    for extra in &bitcode[1..] {
        cmd.arg(format!("--extra-module={}", extra.display()));
    }
    let got = run(cmd.arg(&bitcode[0]));
    let (stdout, stderr) = (String::from_utf8_lossy(&got.stdout), String::from_utf8_lossy(&got.stderr));
    let native_stdout = String::from_utf8_lossy(&expected.stdout);
    if stdout != native_stdout || got.status.code() != expected.status.code() {
        let differ: Vec<String> = (stdout.lines().map(Some).chain(std::iter::repeat(None)))
            .zip(native_stdout.lines().map(Some).chain(std::iter::repeat(None)))
            .take_while(|pair| *pair != (None, None))
            .filter(|(got, native)| got != native)
            .map(|(got, native)| format!("  orcjit: {got:?}\n  native: {native:?}"))
            .collect();
        return Err(format!(
            "{what} {options:?}: status {:?} (native {:?}); lines that differ:\n{}\norcjit stderr:\n{stderr}",
            got.status.code(),
            expected.status.code(),
            differ.join("\n")
        ));
    }
    Ok(stderr.into_owned())
}

/// Fails with every mismatch, once all runs are done (one mismatch does not hide the others).
fn all_as_native<T>(results: Vec<Result<T, String>>) -> Vec<T> {
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {} runs differ from native:\n{}", failures.len(), results.len(), {
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    });
    results.into_iter().map(|r| r.unwrap_or_else(|_| unreachable!())).collect()
}

/// A run's options and what `--lazy-stats` printed.
type Stats = (String, LazyStats);

/// Counts from `--lazy-stats`.
#[derive(Debug, Default)]
struct LazyStats {
    modules_added: u64,
    modules_prepared: u64,
    partitions_compiled: u64,
    partitions_from_cache: u64,
}

/// Parses `orcjit: lazy: 3 modules added lazily, 2 prepared, 7 partitions compiled, 0 from
/// the cache; 12 stubs, 9 resolver entries` (by label: counts it does not know are skipped).
fn lazy_stats(stderr: &str) -> LazyStats {
    let line = stderr.lines().find_map(|l| l.strip_prefix("orcjit: lazy: ")).unwrap_or_else(|| panic!("{stderr}"));
    let mut stats = LazyStats::default();
    let mut seen = 0;
    for item in line.split([',', ';']) {
        let (count, label) = item.trim().split_once(' ').unwrap_or_else(|| panic!("unexpected lazy stats: {line}"));
        let count: u64 = count.parse().unwrap_or_else(|_| panic!("unexpected lazy stats: {line}"));
        let field = match label {
            "modules added lazily" => &mut stats.modules_added,
            "prepared" => &mut stats.modules_prepared,
            "partitions compiled" => &mut stats.partitions_compiled,
            "from the cache" => &mut stats.partitions_from_cache,
            _ => continue,
        };
        *field = count;
        seen += 1;
    }
    assert_eq!(seen, 4, "unexpected lazy stats: {line}");
    stats
}

/// Builds the program in `tests/data/lazy/<dir>` and runs it lazily per function and per
/// module, with 1 and 2 compile threads, `rounds` times each, against native; returns each
/// run's lazy statistics, or how it differed.
fn lazily_as_native(
    dir: &str,
    sources: &[&str],
    flags: &[&str],
    libs: &[&str],
    rounds: usize,
) -> Vec<Result<Stats, String>> {
    let tmp = tempfile::tempdir().unwrap();
    let sources: Vec<PathBuf> = sources.iter().map(|s| data(dir).join(s)).collect();
    let (bitcode, native) = build(tmp.path(), &sources, flags, libs);
    let mut runs = Vec::new();
    for lazy in ["--lazy=function", "--lazy=module"] {
        for threads in ["1", "2"] {
            for _ in 0..rounds {
                let options = [lazy, "--threads", threads, "--lazy-stats"];
                let run = same_as_native(&format!("{dir} {flags:?}"), &bitcode, &native, &options);
                runs.push(run.map(|stderr| (format!("{lazy} --threads {threads}"), lazy_stats(&stderr))));
            }
        }
    }
    runs
}

/// Aborts the process if not dropped within [`WATCHDOG`]: a hang fails fast.
struct Watchdog {
    _alive: mpsc::Sender<()>,
}

fn watchdog(what: String) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
            eprintln!("watchdog: {what} hung");
            std::process::abort();
        }
    });
    Watchdog { _alive: tx }
}

#[test]
fn threads_of_the_program_call_lazy_functions_concurrently_as_native() {
    let sources = ["main.c", "arith.c", "table.c", "text.c"];
    let flags = ["-O2", "-fPIC", "-pthread"];
    let stats = all_as_native(lazily_as_native("threads", &sources, &flags, &["-pthread"], 3));
    for (run, s) in &stats {
        assert_eq!((s.modules_added, s.partitions_from_cache), (4, 0), "{run}: {stats:?}");
        // However many threads race into a module, it is read, split and compiled once.
        if run.starts_with("--lazy=module") {
            assert_eq!((s.modules_prepared, s.partitions_compiled), (4, 4), "{run}: {stats:?}");
        }
    }
}

type Getter = unsafe extern "C" fn() -> usize;
type IntFn = unsafe extern "C" fn(i32) -> i32;
type Taker = unsafe extern "C" fn(i32) -> usize;

#[test]
fn function_pointers_taken_in_different_modules_compare_equal() {
    let sources: Vec<PathBuf> = ["main.c", "a.c", "b.c"].iter().map(|s| data("pointers").join(s)).collect();
    let mut ends = Vec::new();
    // With -fPIC addresses come from the GOT; without, from PC-relative instructions.
    for flags in [&["-O1", "-fPIC"][..], &["-O2"][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let (bitcode, native) = build(tmp.path(), &sources, flags, &[]);
        let mut runs = Vec::new();
        for lazy in ["--lazy=function", "--lazy=module"] {
            for threads in ["1", "2"] {
                runs.push(same_as_native(
                    &format!("pointers {flags:?}"),
                    &bitcode,
                    &native,
                    &[lazy, "--threads", threads],
                ));
            }
        }
        all_as_native(runs);
        ends.push((flags, host_and_jit_code_see_one_address_per_function(&bitcode, flags)));
    }
    // Checked last, so that a failure to end does not hide the checks above.
    let failed: Vec<String> =
        ends.iter().filter_map(|(f, end)| end.as_ref().err().map(|e| format!("{f:?}: {e:?}"))).collect();
    assert!(failed.is_empty(), "ending the lazy Jit failed: {failed:?}");
}

/// The host's lookup of `f` and JIT'd code taking `&f` get one address, before and after f's
/// body is compiled; so do both modules' tables and code for every function. Returns how
/// ending the Jit went.
fn host_and_jit_code_see_one_address_per_function(bitcode: &[PathBuf], flags: &[&str]) -> jit_core::Result<()> {
    let _w = watchdog(format!("pointers through the Jit API {flags:?}"));
    let jit = Jit::builder().threads(2).lazy(Laziness::Function).build().unwrap();
    for bc in bitcode {
        jit.add_ir_file(bc).unwrap();
    }
    let lazy = jit.lazy_layer().unwrap();
    let f = jit.lookup_address("f").unwrap().0 as usize;
    let get_f: Getter = jit.lookup("get_f").unwrap();
    // SAFETY: get_f is `fn (*get_f(void))(int)`.
    assert_eq!(unsafe { get_f() }, f, "{flags:?}: &f in JIT'd code is not the address the host looked up");
    assert_eq!(lazy.stats().partitions_compiled, 1, "{flags:?}: taking &f compiles get_f alone");
    let call_f: IntFn = jit.lookup("f").unwrap();
    // SAFETY: f is `int f(int)`.
    assert_eq!(unsafe { call_f(5) }, 16);
    assert_eq!(lazy.stats().partitions_compiled, 2, "{flags:?}: calling f compiles its body");
    // SAFETY: as above.
    assert_eq!(unsafe { get_f() }, f, "{flags:?}: &f changed once f's body was compiled");
    assert_eq!(jit.lookup_address("f").unwrap().0 as usize, f, "{flags:?}: f's address changed");

    let get_a_hidden: Getter = jit.lookup("get_a_hidden").unwrap();
    let b_fill: unsafe extern "C" fn() = jit.lookup("b_fill").unwrap();
    let a_code_pointer: Taker = jit.lookup("a_code_pointer").unwrap();
    let b_code_pointer: Taker = jit.lookup("b_code_pointer").unwrap();
    let table = |name: &str| {
        let addr = jit.lookup_address(name).unwrap().0 as *const usize;
        // SAFETY: a_table and b_table are arrays of FUNCTIONS (5) function pointers.
        unsafe { std::slice::from_raw_parts(addr, 5) }.to_vec()
    };
    // SAFETY: b_fill is `void b_fill(void)`; get_a_hidden is `fn (*get_a_hidden(void))(int)`.
    let hidden = unsafe {
        b_fill();
        get_a_hidden()
    };
    let names = ["f", "a_fn", "", "b_fn", "main_fn"];
    let (a_table, b_table) = (table("a_table"), table("b_table"));
    for (i, name) in names.iter().enumerate() {
        let expected = if name.is_empty() { hidden } else { jit.lookup_address(name).unwrap().0 as usize };
        // SAFETY: a_code_pointer and b_code_pointer are `fn (*x_code_pointer(int))(int)`.
        let (a_code, b_code) = unsafe { (a_code_pointer(i as i32), b_code_pointer(i as i32)) };
        let seen = [a_table[i], b_table[i], a_code, b_code];
        assert_eq!(seen, [expected; 4], "{flags:?}: function {i} ({name}): A's data, B's data, A's code, B's code");
    }
    // SAFETY: `hidden` is a_hidden, `int a_hidden(int)`, a static function of a.c.
    let a_hidden = unsafe { std::mem::transmute::<usize, IntFn>(hidden) };
    // SAFETY: as above.
    assert_eq!(unsafe { a_hidden(1) }, (1 ^ 0x55) + 2);
    // SAFETY: as above.
    assert_eq!(unsafe { get_a_hidden() }, hidden, "{flags:?}: a_hidden moved once compiled");
    jit.end()
}

#[test]
fn computed_goto_dispatch_runs_lazily() {
    let sources = ["main.c", "interp.c", "threaded.c"];
    let flags = [&["-O1", "-fPIC"][..], &["-O2"][..]];
    let runs = flags.into_iter().flat_map(|flags| lazily_as_native("goto", &sources, flags, &[], 1)).collect();
    all_as_native(runs);
}

/// What `work` in `once/work.c` computes.
fn work_expected(n: i32) -> i32 {
    let mut h: u32 = 2166136261;
    for i in 0..n as u32 {
        h ^= i.wrapping_mul(2654435761);
        h = h.rotate_left(13).wrapping_mul(16777619);
        if h & 1 != 0 {
            h = h.wrapping_add(i);
        } else {
            h ^= h >> 7;
        }
    }
    (h & 0x7fff_ffff) as i32
}

#[test]
fn many_threads_calling_one_uncompiled_function_compile_it_once() {
    const CALLERS: usize = 16;
    const ROUNDS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let (bc, _) = compile(tmp.path(), &data("once/work.c"), &["-O1", "-fPIC"], false);
    let mut failed_ends = Vec::new();
    for round in 0..ROUNDS {
        let _w = watchdog(format!("round {round} of {CALLERS} first calls"));
        let jit = Jit::builder().threads(2).lazy(Laziness::Function).build().unwrap();
        jit.add_ir_file(&bc).unwrap();
        let lazy = jit.lazy_layer().unwrap();
        // Looking up a function gives its stub: nothing is read or compiled yet.
        let work: IntFn = jit.lookup("work").unwrap();
        let before = lazy.stats();
        assert_eq!((before.modules_added, before.modules_prepared, before.partitions_compiled), (1, 0, 0));
        let barrier = Arc::new(Barrier::new(CALLERS));
        let callers: Vec<_> = (0..CALLERS)
            .map(|i| {
                let barrier = barrier.clone();
                let n = 1000 + i as i32;
                std::thread::spawn(move || {
                    barrier.wait();
                    // SAFETY: work is `int work(int)`.
                    (n, unsafe { work(n) })
                })
            })
            .collect();
        for caller in callers {
            let (n, got) = caller.join().unwrap();
            assert_eq!(got, work_expected(n), "round {round}: work({n})");
        }
        let after = lazy.stats();
        assert_eq!(
            (after.modules_prepared, after.partitions_compiled - before.partitions_compiled),
            (1, 1),
            "round {round}: {CALLERS} first calls of work read the module once and compile work once: {after:?}"
        );
        let entries = jit.lazy_reexports().unwrap().stats().resolver_entries;
        assert!((1..=CALLERS as u64).contains(&entries), "round {round}: {entries} resolver entries");
        // `other` was left uncompiled: its first call compiles one more partition, once.
        let other: IntFn = jit.lookup("other").unwrap();
        // SAFETY: other is `int other(int)`; work as above.
        let (o, w) = unsafe { (other(20), work(7)) };
        assert_eq!((o, w), (41, work_expected(7)));
        assert_eq!(lazy.stats().partitions_compiled, 2, "round {round}: other compiled on its first call only");
        if let Err(e) = jit.end() {
            failed_ends.push(format!("round {round}: {e:?}"));
        }
    }
    // Checked last, so that a failure to end does not stop the rounds.
    assert!(
        failed_ends.is_empty(),
        "ending the lazy Jit failed in {} of {ROUNDS} rounds, first {}",
        failed_ends.len(),
        failed_ends[0]
    );
}

type InterpretFn = unsafe extern "C" fn(*const i64, *mut i64, *mut i32) -> i64;

/// Sum of 1..100 in interp.c's bytecode (see goto/main.c): outputs 5050, returns 5050.
const SUM: [i64; 18] = [0, 0, 0, 100, 5, 6, 1, 5, 0, 1, 2, 4, 8, 4, 7, 4, 9, 10];

fn interpret_sum(interpret: InterpretFn) -> (i64, i64) {
    let (mut out, mut n) = ([0i64; 64], 0i32);
    // SAFETY: interpret is interp.c's `long interpret(const long *, long *, int *)`; SUM is a
    // whole program that outputs one value.
    let r = unsafe { interpret(SUM.as_ptr(), out.as_mut_ptr(), &mut n) };
    assert_eq!(n, 1);
    (r, out[0])
}

#[test]
fn hot_functions_move_to_their_second_tier_behind_the_same_address() {
    let _w = watchdog("tier-up of hot functions".into());
    let tmp = tempfile::tempdir().unwrap();
    let (work_bc, _) = compile(tmp.path(), &data("once/work.c"), &["-O1", "-fPIC"], false);
    let (interp_bc, _) = compile(tmp.path(), &data("goto/interp.c"), &["-O1", "-fPIC"], false);
    let tier = TierUp { first_opt_level: 0, calls: 50 };
    let jit = Jit::builder().threads(2).lazy(Laziness::Function).tier_up(Some(tier)).build().unwrap();
    jit.add_ir_file(&work_bc).unwrap();
    jit.add_ir_file(&interp_bc).unwrap();
    let (lazy, stubs, main) = (jit.lazy_layer().unwrap(), jit.lazy_reexports().unwrap(), jit.main_dylib());
    let names = ["work", "interpret"].map(|n| jit.session().intern(n));
    let addresses = names.clone().map(|n| jit.lookup_address(n.as_str()).unwrap());
    let work: IntFn = jit.lookup("work").unwrap();
    let interpret: InterpretFn = jit.lookup("interpret").unwrap();

    // Below the threshold: first-tier code, nothing tiered up.
    // SAFETY: work is `int work(int)`.
    let first: Vec<i32> = (0..10).map(|n| unsafe { work(n) }).collect();
    assert_eq!(interpret_sum(interpret), (5050, 5050));
    let first_tier = names.clone().map(|n| stubs.stub_status(main, &n).and_then(|s| s.target));
    assert!(first_tier.iter().all(Option::is_some), "both stubs resolved: {first_tier:?}");
    assert_eq!(lazy.stats().tiered_up, 0);

    // Hot: both partitions (interpret's is partition 0, with its computed-goto table) are
    // compiled again in the background, and their stubs moved there.
    for n in 0..100 {
        // SAFETY: as above.
        assert_eq!(unsafe { work(n % 10) }, first[(n % 10) as usize]);
        assert_eq!(interpret_sum(interpret), (5050, 5050));
    }
    while lazy.stats().tiered_up < 2 {
        // Waits for the background compiles (the watchdog fails a hang); nothing is timed.
        std::thread::sleep(Duration::from_millis(1));
    }
    let second_tier = names.clone().map(|n| stubs.stub_status(main, &n).and_then(|s| s.target));
    for i in 0..2 {
        assert!(second_tier[i].is_some() && second_tier[i] != first_tier[i], "{}: {second_tier:?}", names[i]);
        assert_eq!(jit.lookup_address(names[i].as_str()).unwrap(), addresses[i], "{}: one address", names[i]);
    }
    // SAFETY: as above.
    assert_eq!((0..10).map(|n| unsafe { work(n) }).collect::<Vec<_>>(), first);
    assert_eq!(interpret_sum(interpret), (5050, 5050));
    let stats = lazy.stats();
    assert_eq!(stats.partitions_compiled, 2, "{stats:?}");
    jit.end().unwrap();
}
