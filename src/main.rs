//! The `orcjit` command. `orcjit link` links relocatable objects and runs them, in this
//! process, which does not load libLLVM: loading it takes about 16 ms, more than linking and
//! starting Lua takes. For anything else (`run`, `demo`, `--help`, `--version`) this process
//! becomes `orcjit-llvm`, built beside it, with the same arguments.

#[path = "cmd/link.rs"]
mod link;
#[path = "cmd/program.rs"]
mod program;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The part of the command line this binary handles (`orcjit link ...`); `orcjit-llvm`
/// parses the whole of it, top-level `--help` and `--version` included.
#[derive(Parser)]
#[command(name = "orcjit")]
struct Cli {
    #[command(subcommand)]
    command: Linking,
}

#[derive(Subcommand)]
enum Linking {
    /// Link relocatable ELF objects into this process and run main, like `llvm-jitlink`.
    Link(link::LinkArgs),
}

orcjit::layers::vfork_is_fork!();

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("orcjit"));
    let rest: Vec<OsString> = args.collect();
    if rest.first().is_some_and(|command| command == "link") {
        let Cli { command: Linking::Link(args) } = Cli::parse();
        return link::run(args);
    }
    // The same arguments, and the same argv[0] (as `ps` shows it).
    program::exec_orcjit_llvm(argv0, &rest)
}
