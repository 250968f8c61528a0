//! `orcjit-link [--threads N] [--dlopen LIB]... a.o b.o ... [-- args]`: `orcjit link` in a
//! binary of its own. Linking needs no LLVM, and this binary does not load libLLVM, which
//! `orcjit` (for `orcjit run`) does at start-up: about 14 ms on the project's VM, more than
//! linking and starting Lua takes. The counterpart of `llvm-jitlink`.

#[path = "../cmd/link.rs"]
mod link;
#[path = "../cmd/program.rs"]
mod program;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "orcjit-link", version, about = "Link relocatable ELF objects into this process and run main")]
struct Cli {
    #[command(flatten)]
    link: link::LinkArgs,
}

orcjit::layers::vfork_is_fork!();

fn main() -> ExitCode {
    link::run(Cli::parse().link)
}
