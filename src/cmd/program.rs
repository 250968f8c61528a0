//! Running JIT'd code as a C program: static constructors, `main`, and an exit through libc so
//! that `atexit` handlers, static destructors and `.fini_array` entries run in native order.
//! Shared by `orcjit run` and `orcjit link`.

use std::process::ExitCode;

use jit_core::Error;
use jit_layers::{Jit, at_exit};

/// Runs `main` of `jit`'s main dylib and exits the process with its status (or reports the
/// error and returns a failure status). `what` names the command in error messages;
/// `after_main` runs once main has returned (e.g. to report statistics).
pub fn run_and_exit(what: &str, jit: Jit, argv0: &str, args: &[String], after_main: impl FnOnce(&Jit)) -> ExitCode {
    match run(&jit, argv0, args) {
        Ok(status) => {
            after_main(&jit);
            at_exit::run_exit_sequence();
            // The code stays mapped until the process is gone: libc's exit may still run
            // handlers native code registered that call it.
            std::mem::forget(jit);
            at_exit::exit_process(status)
        }
        Err(e) => {
            eprintln!("orcjit {what}: {e}");
            // Exit hooks (a trace's end) run on this way out too.
            at_exit::run_exit_sequence();
            ExitCode::FAILURE
        }
    }
}

fn run(jit: &Jit, argv0: &str, args: &[String]) -> Result<i32, Error> {
    // Look main up first: a program that does not link should fail before anything runs.
    jit.lookup_address("main")?;
    let (layer, dylib) = (jit.object_layer().clone(), jit.main_dylib().id());
    at_exit::add_exit_hook(move || {
        if let Err(e) = layer.run_exit_finalizers(dylib) {
            eprintln!("orcjit: finalizers: {e}");
        }
    });
    jit.run_main(argv0, args)
}
