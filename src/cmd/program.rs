//! Running JIT'd code as a C program: static constructors, `main`, and an exit through libc so
//! that `atexit` handlers, static destructors and `.fini_array` entries run in native order.
//! Shared by `orcjit run` and `orcjit link`.

use std::process::ExitCode;
use std::sync::OnceLock;

use jit_core::{DylibId, Error};
use jit_layers::{Jit, ObjectLinkingLayer};

/// The layer and dylib whose `.fini_array` entries run at exit.
static AT_EXIT: OnceLock<(ObjectLinkingLayer, DylibId)> = OnceLock::new();

extern "C" fn run_fini_arrays() {
    if let Some((layer, dylib)) = AT_EXIT.get() {
        if let Err(e) = layer.run_exit_finalizers(*dylib) {
            eprintln!("orcjit: finalizers: {e}");
        }
    }
}

/// Runs `main` of `jit`'s main dylib and exits the process with its status (or reports the
/// error and returns a failure status). `what` names the command in error messages;
/// `after_main` runs once main has returned (e.g. to report statistics).
pub fn run_and_exit(what: &str, jit: Jit, argv0: &str, args: &[String], after_main: impl FnOnce(&Jit)) -> ExitCode {
    match run(&jit, argv0, args) {
        Ok(status) => {
            after_main(&jit);
            // The code stays mapped until the process is gone: exit runs handlers that call it.
            std::mem::forget(jit);
            // SAFETY: exit runs the atexit handlers (the program's, then ours, registered before
            // its constructors and so run last) and flushes stdio.
            unsafe { libc::exit(status) }
        }
        Err(e) => {
            eprintln!("orcjit {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(jit: &Jit, argv0: &str, args: &[String]) -> Result<i32, Error> {
    // Look main up first: a program that does not link should fail before anything runs.
    jit.lookup_address("main")?;
    if AT_EXIT.set((jit.object_layer().clone(), jit.main_dylib().id())).is_ok() {
        // SAFETY: registers a plain extern "C" function that reads AT_EXIT, set just above.
        unsafe { libc::atexit(run_fini_arrays) };
    }
    jit.run_main(argv0, args)
}
