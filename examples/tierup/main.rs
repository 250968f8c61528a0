//! Tier-up: a bytecode interpreter that compiles its hot functions in the background.
//!
//! A small language (64-bit integers, functions, `let`, `if`, `while`, `print`; see
//! `lang.rs`) is compiled to stack bytecode and interpreted. The interpreter counts calls;
//! when a function reaches the threshold it defines an IR module for it in the JIT (built
//! from the bytecode with inkwell later, on the compile thread) and issues an *asynchronous*
//! lookup of its entry, then goes straight back to interpreting. The lookup's callback, on the
//! JIT's pool, publishes the native address in the function's slot; from the next call on the
//! interpreter calls native code instead. Native code calls itself, and functions requested
//! before it, directly (the JIT links those calls); any other callee it calls through the
//! callee's slot if that is set by then, and otherwise through the host (`tierup_call`), which
//! interprets the callee.
//!
//! At the end it prints where the time went (on stderr): interpreting vs native code, the
//! tier-up requests and the longest pause one caused the interpreter, and for each compiled
//! function the time from request to native code ready.
//!
//! ```sh
//! cargo run --release --example tierup                       # fib(32), tiered
//! cargo run --release --example tierup -- --interpret-only   # the same, interpreted only
//! cargo run --release --example tierup -- --threshold 100 evenodd 50000
//! cargo run --release --example tierup -- --list             # the built-in programs
//! cargo run --release --example tierup -- my_program.tl 10   # a file of one's own
//! ```

mod lang;
mod native;
mod programs;
mod vm;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use vm::{Config, Report, Tier, Vm};

/// A bytecode interpreter that compiles hot functions with orcjit in the background.
#[derive(Parser)]
#[command(name = "tierup", allow_negative_numbers = true)]
struct Args {
    /// Interpreted calls after which a function is compiled.
    #[arg(long, default_value_t = 1000)]
    threshold: u64,
    /// Never compile: run the interpreter alone.
    #[arg(long)]
    interpret_only: bool,
    /// Compile threads (default: one per CPU but the interpreter's, at least one).
    #[arg(long)]
    threads: Option<usize>,
    /// List the built-in programs.
    #[arg(long)]
    list: bool,
    /// A built-in program, or a source file.
    #[arg(default_value = "fib")]
    program: String,
    /// The argument of `main` (default: the built-in program's own, or 0).
    arg: Option<i64>,
}

/// The interpreter's thread's stack: native code recurses on it.
const STACK_BYTES: usize = 256 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for p in &programs::PROGRAMS {
            println!("{:<8} {} (default argument {})", p.name, p.about, p.arg);
        }
        return ExitCode::SUCCESS;
    }
    let run = std::thread::Builder::new().name("interpreter".into()).stack_size(STACK_BYTES).spawn(move || run(&args));
    match run.map_err(|e| e.to_string()).and_then(|t| t.join().map_err(|_| "the interpreter panicked".to_string())) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => {
            eprintln!("tierup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let (source, default_arg) = match programs::find(&args.program) {
        Some(p) => (p.source.to_string(), p.arg),
        None => {
            let source = std::fs::read_to_string(&args.program).map_err(|e| {
                format!("'{}' is neither a built-in program (see --list) nor a readable file: {e}", args.program)
            })?;
            (source, 0)
        }
    };
    let arg = args.arg.unwrap_or(default_arg);
    let program = lang::compile(&source).map_err(|e| format!("{}:{e}", args.program))?;
    let takes_arg = program.functions[program.main].arity == 1;
    let front_end = started.elapsed();

    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() - 1).max(1));
    let config = Config { threshold: args.threshold.max(1), tier_up: !args.interpret_only, threads };
    let setup = Instant::now();
    let vm = Vm::new(program, config, Box::new(std::io::stdout()))?;
    let setup = setup.elapsed();

    let running = Instant::now();
    let result = vm.run_main(arg)?;
    let running = running.elapsed();
    let wall = started.elapsed();
    println!("main({}) = {result}", if takes_arg { arg.to_string() } else { String::new() });

    // The report waits for compiles still in flight, to show their latency too.
    let at_end = vm.report();
    let waiting = Instant::now();
    vm.wait_for_compiles();
    let times = Times { wall, front_end, setup, running, waited: waiting.elapsed() };
    let mode = if args.interpret_only {
        "interpreted only".to_string()
    } else {
        format!("threshold {} calls, {threads} compile thread(s)", config.threshold)
    };
    eprintln!("tierup: {}({arg}), {mode}", args.program);
    print_report(&vm.report(), &at_end, &times, args.interpret_only);
    Ok(())
}

/// Where the wall time went, outside the interpreter.
struct Times {
    wall: Duration,
    front_end: Duration,
    setup: Duration,
    running: Duration,
    /// After the program, for compiles still in flight.
    waited: Duration,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `report` is final; `at_end` was taken when the program ended.
fn print_report(report: &Report, at_end: &Report, times: &Times, interpret_only: bool) {
    let setup = if interpret_only { String::new() } else { format!(" + JIT setup {}", ms(times.setup)) };
    eprintln!(
        "  wall time     {:>12} = parse + bytecode {}{setup} + program {}",
        ms(times.wall),
        ms(times.front_end),
        ms(times.running)
    );
    eprintln!(
        "  program       {:>12} = interpreting {} + native code {}",
        ms(times.running),
        ms(report.interpreting),
        ms(report.native)
    );
    eprintln!(
        "                               (split by reading the clock at each of the {} switches)",
        report.switches
    );
    if interpret_only {
        return;
    }
    eprintln!(
        "  tier-up requests {:>9}   longest interpreter pause {} (all requests {})",
        report.requests,
        ms(report.longest_pause),
        ms(report.total_pause)
    );
    eprintln!(
        "  calls into native code: {} from the interpreter; {} left native code for an interpreted function",
        report.calls_into_native, report.host_calls
    );
    eprintln!(
        "  compiled {} of {} functions (time from request to native code ready, compiled on the pool while the \
         interpreter went on):",
        report.compiled(),
        report.functions.len()
    );
    for (f, then) in report.functions.iter().zip(&at_end.functions) {
        let tier = match (&f.tier, &then.tier) {
            (Tier::Interpreted, _) => "never hot".to_string(),
            (Tier::Compiling, _) => "still compiling".to_string(),
            (Tier::Native { latency }, Tier::Compiling) => format!("native after {} (after the program)", ms(*latency)),
            (Tier::Native { latency }, _) => format!("native after {}", ms(*latency)),
            (Tier::Failed(e), _) => format!("compile failed: {e}"),
        };
        eprintln!("    {:<12} {:>9} interpreted calls, {tier}", f.name, f.interpreted_calls);
    }
    if times.waited > Duration::from_micros(100) {
        eprintln!("  (then waited {} for compiles in flight)", ms(times.waited));
    }
}
