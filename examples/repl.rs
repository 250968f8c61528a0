//! A lazy REPL: a small language in the spirit of LLVM's Kaleidoscope, compiled by orcjit one
//! function at a time, each the first time it is called.
//!
//! What it shows:
//! - **Laziness.** Each `def` becomes a materialization unit that keeps the syntax tree; its
//!   IR is generated and compiled only when the function is first called, on the JIT's pool
//!   of two threads, behind a lazy stub (`LazyReexports`). A function never called is never
//!   compiled (`:stats` tells which were).
//! - **Redefinition.** Defining a function again adds the new body behind a stub of its own and
//!   redirects the function's stub there, so every caller compiled earlier reaches the new body.
//! - **Eager expressions.** A top-level expression is compiled at once, run, and its code
//!   removed with its resource tracker.
//! - **Errors as values.** A syntax error, an undefined function or a wrong number of
//!   arguments is reported and the session goes on.
//!
//! Run it with `cargo run --release --example repl`, then for instance:
//!
//! ```text
//! ready> def fib(n) if n < 2 then n else fib(n - 1) + fib(n - 2)
//! ready> fib(30)
//! ready> def even(n) if n == 0 then 1 else odd(n - 1)      # odd is defined below
//! ready> def odd(n) if n == 0 then 0 else even(n - 1)
//! ready> even(10)
//! ready> extern sqrt(x); sqrt(2)
//! ready> for i = 1, i < 4 in printd(i * i)
//! ready> :stats
//! ```
//!
//! The language (see `repl/syntax.rs`): every value is an f64; `+ - * / < > ==`, unary `-`,
//! `a : b` (both, the value of `b`), `if c then a else b`, `for i = start, cond[, step] in
//! body` (a while loop; its value is 0), calls, `def name(params) body`, `extern name(params)`
//! for a function of this process (libm's `sin`, `sqrt`...). `printd(x)` prints a number and
//! `putchard(c)` a character. A `;` or the end of the line ends a statement; `#` starts a comment.
//! A definition may call a function defined later (mutual recursion): the first call fixes its
//! number of arguments, and an expression that could reach it runs only once it is defined.
//! Commands: `:stats`, `:help`, `:quit` (or Ctrl-D). Input that is not a terminal is read line by
//! line, without prompts.

#[path = "repl/codegen.rs"]
mod codegen;
#[path = "repl/engine.rs"]
mod engine;
#[path = "repl/syntax.rs"]
mod syntax;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use orcjit::core::ExecutorAddr;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use engine::{Engine, HostFunction};
use syntax::Statement;

const PROMPT: &str = "ready> ";

const HELP: &str = "\
statements (end with ';' or the line):
  def name(a, b) expr      define (or redefine) a function; compiled when first called
  extern name(a)           a function of this process, e.g. extern sin(x)
  expr                     evaluate at once, e.g. fib(10)
expressions: numbers, variables, + - * / < > ==, unary -, a : b, calls,
  if c then a else b, for i = start, cond[, step] in body
built in: printd(x) prints x, putchard(c) prints the character c
commands: :stats  :help  :quit";

/// Whether JIT'd code left a line unfinished (so the REPL's next message starts a new one).
static MID_LINE: AtomicBool = AtomicBool::new(false);

/// Prints `x` on a line of its own; returns 0. Called from JIT'd code: must not unwind.
extern "C" fn printd(x: f64) -> f64 {
    let mut out = std::io::stdout().lock();
    if MID_LINE.swap(false, Ordering::Relaxed) {
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "{x}");
    0.0
}

/// Prints the character whose code is `c` (as a byte); returns 0. Must not unwind.
extern "C" fn putchard(c: f64) -> f64 {
    let byte = c as u8;
    let _ = std::io::stdout().lock().write_all(&[byte]);
    MID_LINE.store(byte != b'\n', Ordering::Relaxed);
    0.0
}

fn main() -> ExitCode {
    let host = [
        HostFunction { name: "printd", params: &["x"], addr: ExecutorAddr::from_ptr(printd as *const ()) },
        HostFunction { name: "putchard", params: &["c"], addr: ExecutorAddr::from_ptr(putchard as *const ()) },
    ];
    let mut engine = match Engine::new(&host) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("repl: cannot start the JIT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("repl: cannot read input: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("orcjit lazy REPL; :help for help, :quit to leave");
    loop {
        // Output of JIT'd code (putchard) may still sit in stdout's buffer; the prompt must
        // come after it.
        let _ = std::io::stdout().flush();
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("repl: cannot read input: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        match line.trim() {
            ":quit" | ":q" => break,
            ":stats" => println!("{}", engine.stats()),
            ":help" => println!("{HELP}"),
            command if command.starts_with(':') => eprintln!("error: unknown command '{command}' (try :help)"),
            _ => run_line(&mut engine, &line),
        }
    }
    if let Err(e) = engine.end() {
        eprintln!("repl: ending the JIT session: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs the statements of one line in order, stopping at the first error.
fn run_line(engine: &mut Engine, line: &str) {
    let statements = match syntax::parse_line(line) {
        Ok(statements) => statements,
        Err(e) => return eprintln!("error: {e}"),
    };
    for statement in statements {
        let outcome = match statement {
            Statement::Def(proto, body) => engine.define(proto, body),
            Statement::Extern(proto) => engine.declare_extern(proto),
            Statement::Expr(expr) => engine.evaluate(expr).map(|value| format!("=> {value}")),
        };
        if MID_LINE.swap(false, Ordering::Relaxed) {
            println!();
        }
        match outcome {
            Ok(message) => println!("{message}"),
            Err(e) => return eprintln!("error: {e}"),
        }
    }
}
