//! `orcjit link [--threads N] [--dlopen LIB]... a.o b.o ... [-- args]`: links the objects into
//! one dylib that searches the process, the libraries given and libm, runs static constructors,
//! calls `main(argc, argv, envp)`, and exits with main's status through libc's `exit`, so that
//! `atexit` handlers, C++ static destructors and `.fini_array` entries run as in a native
//! program. argv[0] is the first object's path.

use std::ffi::{CString, c_char, c_int};
use std::process::ExitCode;
use std::sync::OnceLock;

use jit_core::{DylibId, DynamicLibraryGenerator, Error, ExecutionSession, ProcessSymbolsGenerator};
use jit_layers::{InitArgs, ObjectLinkingLayer};
use jit_mem::ManagerConfig;

#[derive(clap::Args)]
pub struct LinkArgs {
    /// Worker threads that link (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Load a shared library whose symbols the objects may use (e.g. libstdc++.so.6).
    #[arg(long = "dlopen", value_name = "LIB")]
    dlopen: Vec<String>,
    /// Relocatable objects (.o).
    #[arg(required = true, value_name = "OBJECT")]
    objects: Vec<String>,
    /// Arguments for main (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// What the `atexit` handler needs: the layer and dylib whose `.fini_array` entries to run.
static AT_EXIT: OnceLock<(ObjectLinkingLayer, DylibId)> = OnceLock::new();

extern "C" fn run_fini_arrays() {
    if let Some((layer, dylib)) = AT_EXIT.get() {
        if let Err(e) = layer.run_exit_finalizers(*dylib) {
            eprintln!("orcjit link: finalizers: {e}");
        }
    }
}

pub fn run(args: LinkArgs) -> ExitCode {
    match link_and_run(args) {
        Ok(status) => {
            // SAFETY: exit runs the atexit handlers (the program's, then ours, registered first
            // and so run last) and flushes stdio; the JIT'd code they call is still mapped.
            unsafe { libc::exit(status) }
        }
        Err(e) => {
            eprintln!("orcjit link: {e}");
            ExitCode::FAILURE
        }
    }
}

fn link_and_run(args: LinkArgs) -> Result<c_int, Error> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let es = ExecutionSession::with_threads(threads).map_err(Error::other)?;
    let memory = jit_mem::default_manager(ManagerConfig::default()).map_err(Error::other)?;
    let layer = ObjectLinkingLayer::new(&es, memory);
    let jd = es.create_dylib("main")?;
    for lib in &args.dlopen {
        jd.add_generator(DynamicLibraryGenerator::load(lib)?);
    }
    jd.add_generator(ProcessSymbolsGenerator::new());
    // C programs may use libm as they use libc (llvm-jitlink has it in its own process).
    jd.add_generator(DynamicLibraryGenerator::load("libm.so.6")?);
    for path in &args.objects {
        let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("cannot read '{path}': {e}")))?;
        layer.add(&jd, path, bytes)?;
    }

    // argv: the first object, then the program's arguments; envp: this process's environment.
    let mut argv_owned: Vec<CString> = Vec::with_capacity(args.args.len() + 1);
    for a in std::iter::once(&args.objects[0]).chain(&args.args) {
        argv_owned.push(CString::new(a.as_str()).map_err(|_| Error::msg(format!("argument '{a}' contains NUL")))?);
    }
    let mut argv: Vec<*mut c_char> = argv_owned.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    argv.push(std::ptr::null_mut());
    let argc = argv_owned.len() as c_int;
    // SAFETY: `environ` is libc's NULL-terminated environment, valid for the process's life.
    let envp = unsafe { environ };

    let main = jd.lookup("main")?;
    if AT_EXIT.set((layer.clone(), jd.id())).is_ok() {
        // SAFETY: registers a plain extern "C" function; it reads AT_EXIT, set just above.
        unsafe { libc::atexit(run_fini_arrays) };
    }
    let init_args = InitArgs { argc, argv: argv.as_ptr() as *const *const c_char, envp: envp as *const *const c_char };
    layer.initialize(&jd, init_args)?;
    // Through the gate: an exception escaping main terminates as in a native program.
    let gate = layer.entry_gate()?;
    // SAFETY: 'main' is the program's entry point, linked and Ready, with the C signature
    // int main(int, char **, char **); argv and envp outlive the call.
    let status = unsafe { gate.call(main.addr, argc as u64, argv.as_mut_ptr() as u64, envp as u64) } as c_int;
    // The code stays mapped until the process exits: the atexit handlers still run it.
    std::mem::forget(es);
    Ok(status)
}

unsafe extern "C" {
    static environ: *mut *mut c_char;
}
