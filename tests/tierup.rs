//! The `tierup` example's interpreter (examples/tierup/, compiled in here) gives the same
//! answers interpreted and tiered: its built-in programs and a program of edge cases print and
//! return the same with tier-up off, while functions are being compiled, and once they run
//! natively; native code reaches an interpreted function through the host.
//!
//! Each run happens on a thread of its own under a watchdog, so a hang fails the test instead
//! of stalling it; nothing here depends on timing.

#[path = "../examples/tierup/lang.rs"]
mod lang;
#[path = "../examples/tierup/native.rs"]
mod native;
// The example reads what these tests do not: the report's times, the programs' blurbs.
#[allow(dead_code)]
#[path = "../examples/tierup/programs.rs"]
mod programs;
#[allow(dead_code)]
#[path = "../examples/tierup/vm.rs"]
mod vm;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use vm::{Config, Report, Tier, Vm};

/// What a run printed, then what `main` returned.
type Outcome = (String, i64);

/// The `print` output of a VM.
#[derive(Clone, Default)]
struct Capture(Rc<RefCell<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.borrow_mut())).into_owned()
    }
}

/// Runs `f` on a thread with room for deep recursion; fails if it does not finish in time.
fn with_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_string())
        .stack_size(64 << 20)
        .spawn(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })
        .expect("spawn the program's thread");
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not finish within 120 s"),
    }
}

fn interpreted(source: &str, arg: i64) -> Outcome {
    let out = Capture::default();
    let program = lang::compile(source).expect("the program compiles");
    let config = Config { threshold: 1, tier_up: false, threads: 1 };
    let vm = Vm::new(program, config, Box::new(out.clone())).expect("a VM");
    let result = vm.run_main(arg).expect("the program runs");
    (out.take(), result)
}

/// Runs `main` twice in one tiering VM: first while hot functions compile (the interpreter
/// does not wait), then, after waiting for the compiles, with them native.
fn tiered(source: &str, arg: i64, threshold: u64) -> (Outcome, Outcome, Report) {
    let (first, second, _, report) = tiered_in_two_runs(source, arg, threshold);
    (first, second, report)
}

/// As `tiered`, also giving the report as it stood before the second run.
fn tiered_in_two_runs(source: &str, arg: i64, threshold: u64) -> (Outcome, Outcome, Report, Report) {
    let out = Capture::default();
    let program = lang::compile(source).expect("the program compiles");
    let config = Config { threshold, tier_up: true, threads: 1 };
    let vm = Vm::new(program, config, Box::new(out.clone())).expect("a VM with a JIT");
    let first = vm.run_main(arg).expect("the first run");
    let first = (out.take(), first);
    vm.wait_for_compiles();
    let before_second = vm.report();
    let second = vm.run_main(arg).expect("the second run");
    (first, (out.take(), second), before_second, vm.report())
}

fn tier_of<'r>(report: &'r Report, name: &str) -> &'r Tier {
    &report.functions.iter().find(|f| f.name == name).expect("the function is reported").tier
}

#[test]
fn each_built_in_program_gives_the_same_result_interpreted_and_tiered() {
    // Smaller than the defaults, still long enough to be mid-run when code becomes Ready.
    for (name, arg, expected) in
        [("fib", 25, 75025), ("sum", 1500, -245_396_145), ("evenodd", 5000, 2500), ("collatz", 30000, 307)]
    {
        let source = programs::find(name).expect("a built-in program").source;
        let (alone, (while_compiling, native, report)) =
            with_watchdog(name, move || (interpreted(source, arg), tiered(source, arg, 10)));
        assert_eq!(alone.1, expected, "{name}({arg}) interpreted");
        assert_eq!(while_compiling, alone, "{name}({arg}) while compiling");
        assert_eq!(native, alone, "{name}({arg}) with hot functions native");
        assert!(report.compiled() >= 1, "{name}: nothing was compiled: {report:#?}");
        assert_eq!(report.requests as usize, report.compiled(), "{name}: every request compiled: {report:#?}");
        assert!(report.calls_into_native >= 1, "{name}: native code never ran: {report:#?}");
        assert!(report.longest_pause > Duration::ZERO, "{name}: the tier-up pause is measured");
        let main = report.functions.iter().find(|f| f.name == "main").expect("main is reported");
        assert_eq!((main.interpreted_calls, &main.tier), (2, &Tier::Interpreted), "{name}: main is never hot");
    }
}

#[test]
fn mutually_recursive_functions_both_tier_up_and_call_each_other_natively() {
    let source = programs::find("evenodd").expect("evenodd").source;
    let (_, native, before, report) = with_watchdog("evenodd", move || tiered_in_two_runs(source, 3000, 10));
    assert_eq!(native.1, 1500);
    for name in ["is_even", "is_odd"] {
        assert!(matches!(tier_of(&before, name), Tier::Native { .. }), "{name}: {before:#?}");
    }
    // is_even was compiled first, reaching is_odd through its slot. While only is_even was
    // native, its calls of is_odd went through the host (how many depends on timing); in the
    // second run, with both native, no call left native code.
    assert_eq!(report.host_calls, before.host_calls, "{report:#?}");
    assert!(report.calls_into_native > before.calls_into_native, "the second run ran native code: {report:#?}");
}

/// Arithmetic at the edges (wrapping, division by 0 and -1), every operator, nesting,
/// shadowing, and calls of 0 to 6 arguments, run through `check` until it is native.
const EDGES: &str = "
fn none() { }
fn six(a, b, c, d, e, f) { return a - b * c + d / e % f; }
fn min() { return -9223372036854775807 - 1; }
fn classify(x) {
    if x < 0 { return -1; } else if x == 0 { return 0; } else if x > 1000 { return 2; } else { return 1; }
}
fn check(i) {
    let m = min();
    let h = 0;
    h = h * 31 + m / -1;
    h = h * 31 + m % -1;
    h = h * 31 + i / 0 + i % 0;
    h = h * 31 + (m - i) + (m * 3);
    h = h * 31 + (-i) / 3 + (-i) % 3 + i / -3 + i % -3;
    h = h * 31 + (i < 5) + (i <= 5) * 2 + (i > 5) * 4 + (i >= 5) * 8 + (i == 5) * 16 + (i != 5) * 32;
    h = h * 31 + !i + !!i * 2 + -(-i);
    h = h * 31 + classify(i - 10) + classify(i * 500);
    h = h * 31 + six(i, 2, 3, 4 + i, 1 + i % 3, 5) + none();
    let j = 0;
    while j < i % 4 {
        let k = j;
        while k > 0 { h = h + k; k = k - 1; }
        if j == 1 { let j = 100; h = h + j; }
        h = h + j * 3;
        j = j + 1;
    }
    if i % 25 == 0 { print(h); }
    return h;
}
fn main(n) {
    let acc = 0;
    let i = 0;
    while i < n { acc = acc * 7 + check(i); i = i + 1; }
    return acc;
}
";

#[test]
fn native_code_agrees_with_the_interpreter_on_edge_cases() {
    let (alone, (while_compiling, native, report)) =
        with_watchdog("edge cases", || (interpreted(EDGES, 100), tiered(EDGES, 100, 1)));
    assert_eq!(alone.0.lines().count(), 4, "check prints every 25th hash: {}", alone.0);
    assert_eq!(while_compiling, alone);
    assert_eq!(native, alone);
    for name in ["none", "six", "min", "classify", "check"] {
        assert!(matches!(tier_of(&report, name), Tier::Native { .. }), "{name}: {report:#?}");
    }
}

#[test]
fn native_code_calls_a_function_still_interpreted_through_the_host() {
    // `rare` is called once per run, so it never reaches the threshold; `often` is native by
    // the second run and reaches `rare` through `tierup_call`.
    let source = "
        fn rare(x) { print(x); return x * 2; }
        fn often(i) { if i == 40 { return rare(i); } return i; }
        fn main(n) { let s = 0; let i = 0; while i < n { s = s + often(i); i = i + 1; } return s; }
    ";
    let (alone, (while_compiling, native, report)) =
        with_watchdog("host calls", move || (interpreted(source, 50), tiered(source, 50, 5)));
    assert_eq!(alone, ("40\n".to_string(), 50 * 49 / 2 + 40));
    assert_eq!(while_compiling, alone);
    assert_eq!(native, alone);
    assert!(matches!(tier_of(&report, "often"), Tier::Native { .. }), "{report:#?}");
    assert_eq!(*tier_of(&report, "rare"), Tier::Interpreted, "{report:#?}");
    assert!(report.host_calls >= 1, "{report:#?}");
}

#[test]
fn syntax_errors_point_at_the_line_and_column() {
    let error = |source: &str| lang::compile(source).expect_err("an error").to_string();
    assert_eq!(error("fn main() {\n  let x = ;\n}"), "2:11: expected an expression, found ';'");
    assert_eq!(error("fn main() { return y; }"), "1:20: unknown variable 'y'");
    assert_eq!(error("fn f(a) { }\nfn main() { f(1, 2); }"), "2:13: 'f' takes 1 argument(s), given 2");
    assert_eq!(error("fn f() { }"), "1:1: no 'main'");
    assert_eq!(
        error("fn main() { let x = 99999999999999999999; }"),
        "1:21: bad integer literal '99999999999999999999'"
    );
}

/// Random expressions over every operator, the edge values of i64, and calls of earlier
/// expressions, evaluated on a grid of inputs.
fn random_program(seed: u64, functions: usize) -> String {
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            // xorshift64*: deterministic, and enough for picking shapes.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
        }
    }
    fn expr(rng: &mut Rng, depth: u32, callable: usize) -> String {
        // Variables twice as often as each constant.
        const LEAVES: &str = "a b c a b c 0 1 3 -7 1000003 9223372036854775807 (-9223372036854775807-1)";
        // Arithmetic twice as often as comparisons, which would otherwise make most values 0 or 1.
        const BINARY: [&str; 16] = ["+", "-", "*", "/", "%", "+", "-", "*", "/", "%", "<", "<=", ">", ">=", "==", "!="];
        match if depth == 0 { 0 } else { rng.below(8) } {
            0 | 1 => {
                let leaves: Vec<&str> = LEAVES.split(' ').collect();
                leaves[rng.below(leaves.len() as u64) as usize].to_string()
            }
            2 => format!("{}({})", ["-", "!"][rng.below(2) as usize], expr(rng, depth - 1, callable)),
            3 if callable > 0 => {
                let args: Vec<String> = (0..3).map(|_| expr(rng, depth - 1, callable)).collect();
                format!("e{}({})", rng.below(callable as u64), args.join(", "))
            }
            _ => {
                let op = BINARY[rng.below(BINARY.len() as u64) as usize];
                format!("({} {op} {})", expr(rng, depth - 1, callable), expr(rng, depth - 1, callable))
            }
        }
    }
    let mut rng = Rng(seed);
    let mut source = String::from(
        "fn val(i) {
            let k = i % 13;
            if k == 0 { return 0; } if k == 1 { return 1; } if k == 2 { return -1; } if k == 3 { return 2; }
            if k == 4 { return -3; } if k == 5 { return 1000003; } if k == 6 { return 9223372036854775807; }
            if k == 7 { return -9223372036854775807 - 1; }
            return i * 7919 - 40000;
        }\n",
    );
    for f in 0..functions {
        source += &format!("fn e{f}(a, b, c) {{ return {}; }}\n", expr(&mut rng, 4, f));
    }
    source += "fn main(n) {
    let i = 0;
    while i < n {
        let a = val(i);
        let b = val(i / 9 + 4);
        let c = val(i / 81 + 7);\n";
    for f in 0..functions {
        source += &format!("        print(e{f}(a, b, c));\n");
    }
    source += "        i = i + 1;\n    }\n    return n;\n}\n";
    source
}

#[test]
fn random_expressions_evaluate_the_same_natively() {
    let source = random_program(0x7133_0b5e_55ed_2024, 40);
    let (alone, (while_compiling, native, report)) =
        with_watchdog("random expressions", move || (interpreted(&source, 200), tiered(&source, 200, 1)));
    assert_eq!(alone.0.lines().count(), 200 * 40);
    assert_eq!(while_compiling, alone);
    assert_eq!(native, alone);
    // Every function was called at least once, so every function was compiled, main included.
    assert_eq!(report.compiled(), report.functions.len(), "{report:#?}");
}
