//! The `orcjit` command: `orcjit` (or `orcjit demo`) runs a demo of the execution session;
//! `orcjit link` links relocatable objects into this process and runs their `main`, the
//! counterpart of `llvm-jitlink`.

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
    /// Show the execution session at work (the default).
    Demo,
    /// Link relocatable ELF objects into this process, run static constructors, call
    /// main(argc, argv, envp), run destructors and atexit handlers, and exit with main's status.
    Link(cmd::link::LinkArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => match cmd::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orcjit: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Link(args) => cmd::link::run(args),
    }
}
