//! The `orcjit` command with libLLVM loaded: `orcjit run` compiles LLVM IR and runs it (with
//! no arguments, a built-in demo program), `orcjit link` links relocatable objects and runs
//! them, `orcjit demo` shows the execution session at work. The `orcjit` binary (`src/main.rs`)
//! links objects itself, without libLLVM, and runs this one for everything else.

#[path = "../cmd/mod.rs"]
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "orcjit", version, about = "A JIT framework in the style of LLVM ORC v2 and JITLink")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Compile LLVM IR (.ll, .bc) on a thread pool, link it into this process and run main,
    /// like `lli`. With no module, runs a built-in demo program (also what `orcjit` alone does).
    Run(Box<cmd::run::RunArgs>),
    /// Link relocatable ELF objects into this process and run main, like `llvm-jitlink`.
    Link(cmd::link::LinkArgs),
    /// Show the execution session at work: lazy materialization, a dependency cycle, process
    /// symbols, a failure and its root cause.
    Demo,
}

orcjit::layers::vfork_is_fork!();

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => cmd::run::run(cmd::run::RunArgs::default()),
        Some(Command::Run(args)) => cmd::run::run(*args),
        Some(Command::Link(args)) => cmd::link::run(args),
        Some(Command::Demo) => match cmd::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orcjit: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
