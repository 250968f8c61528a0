//! Running JIT'd code as a C program: static constructors, `main`, and an exit through libc so
//! that `atexit` handlers, static destructors and `.fini_array` entries run in native order.
//! Shared by `orcjit run` and `orcjit link`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use jit_core::{Error, SymbolFlags};
use jit_layers::{ObjectBytes, ObjectJit, at_exit};

/// A JIT whose main dylib holds a C program: [`ObjectJit`], or a [`jit_layers::Jit`] (which
/// starts its speculator and compiles a lazy `main` before running it).
pub trait Program {
    fn objects(&self) -> &ObjectJit;
    fn run_main(&self, argv0: &str, args: &[String]) -> Result<i32, Error>;
}

impl Program for ObjectJit {
    fn objects(&self) -> &ObjectJit {
        self
    }
    fn run_main(&self, argv0: &str, args: &[String]) -> Result<i32, Error> {
        ObjectJit::run_main(self, argv0, args)
    }
}

/// Runs `main` of `jit`'s main dylib and exits the process with its status (or reports the
/// error and returns a failure status). `what` names the command in error messages;
/// `after_main` runs once main has returned (e.g. to report statistics).
pub fn run_and_exit<J: Program>(
    what: &str,
    jit: J,
    argv0: &str,
    args: &[String],
    after_main: impl FnOnce(&J),
) -> ExitCode {
    match run(&jit, argv0, what, args) {
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
            for symbol in undefined_symbols(&e) {
                if let Some(library) = jit_layers::shared_library_defining(&symbol) {
                    let name = library
                        .file_name()
                        .map_or_else(|| library.display().to_string(), |n| n.to_string_lossy().into());
                    // `orcjit link` also takes -l, the flag a native link had.
                    let flag = if what == "link" { link_flag_for(&library) } else { None };
                    let link_it = flag.map(|flag| format!("link it with {flag}, or ")).unwrap_or_default();
                    eprintln!(
                        "orcjit {what}: note: '{symbol}' is defined in {}: {link_it}load it with --dlopen {name}",
                        library.display()
                    );
                }
            }
            // Exit hooks (a trace's end) run on this way out too.
            at_exit::run_exit_sequence();
            ExitCode::FAILURE
        }
    }
}

/// The `-lNAME` that finds the shared library `library` (`-lz` for `libz.so.1`), if one does:
/// its development link (`libz.so`) must be installed and lead to it.
fn link_flag_for(library: &std::path::Path) -> Option<String> {
    let file = library.file_name()?.to_str()?;
    let name = file.strip_prefix("lib")?.split(".so").next()?;
    let found = jit_layers::find_library(name, &[]).ok()?;
    let same = |path: &std::path::Path| std::fs::canonicalize(path).ok() == std::fs::canonicalize(library).ok();
    matches!(&found[..], [jit_layers::FoundLibrary::Shared(path)] if same(path)).then(|| format!("-l{name}"))
}

/// The undefined symbols an error comes down to (a link's, through the failures it caused).
fn undefined_symbols(e: &Error) -> Vec<String> {
    match e {
        Error::FailedToMaterialize { cause, .. } => undefined_symbols(&cause.error),
        Error::Other(source) => match source.downcast_ref::<jit_link::LinkError>() {
            Some(jit_link::LinkError::UndefinedSymbol { symbol, .. }) => vec![symbol.to_string()],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn run(jit: &impl Program, argv0: &str, what: &str, args: &[String]) -> Result<i32, Error> {
    // Look main up first: a program that does not link should fail before anything runs.
    let objects = jit.objects();
    objects.lookup_address("main")?;
    warn_if_allocator_replaced(objects, what);
    let (layer, dylib) = (objects.object_layer().clone(), objects.main_dylib().id());
    at_exit::add_exit_hook(move || {
        if let Err(e) = layer.run_exit_finalizers(dylib) {
            eprintln!("orcjit: finalizers: {e}");
        }
    });
    // The program starts with the signal state of a native one, not the one Rust's runtime
    // set up for this process.
    jit_layers::restore_native_signals();
    jit.run_main(argv0, args)
}

unsafe extern "C" {
    static mut program_invocation_name: *mut std::ffi::c_char;
    static mut program_invocation_short_name: *mut std::ffi::c_char;
}

/// Names the process as the program's `argv[0]`, as an `exec` of it would: libc's `err`,
/// `warn` and `error` start their messages with `program_invocation_short_name` or
/// `program_invocation_name` (glibc sets both from `argv[0]` at start-up; they would say
/// `orcjit`). Called before anything is linked: jit-link copies these two variables into
/// non-PIC code's reach as it links (see `jit_link::process::STABLE_AFTER_STARTUP`). The
/// string lives until the process ends, as the program may print it then.
pub fn set_program_name(argv0: &str) -> Result<(), Error> {
    let name = std::ffi::CString::new(argv0)
        .map_err(|_| Error::msg(format!("argument '{argv0}' contains a NUL byte")))?
        .into_raw();
    let short = argv0.rfind('/').map_or(0, |slash| slash + 1);
    // SAFETY: both are libc's plain `char *` variables, written by this thread before the JIT
    // starts threads or links anything (its threads never read them). `name` is a NUL-terminated string never freed, and `short` is an offset within
    // it (just past its last '/', as glibc computes it).
    unsafe {
        program_invocation_name = name;
        program_invocation_short_name = name.add(short);
    }
    Ok(())
}

/// libc's allocator, which a native program replaces for every library by defining these (the
/// executable comes first in the loader's search order).
const ALLOCATOR: &[&str] =
    &["malloc", "free", "calloc", "realloc", "aligned_alloc", "memalign", "posix_memalign", "valloc", "pvalloc"];

/// Warns when the JIT'd program defines part of libc's allocator: its definitions serve JIT'd
/// code only. libc and shared libraries keep libc's, and cannot be switched now (memory
/// allocated before the program started would reach the program's `free`).
fn warn_if_allocator_replaced(jit: &ObjectJit, what: &str) {
    let jit_defined = |name: &str| {
        let flags = jit.main_dylib().symbol_flags(&jit.session().intern(name));
        flags.is_some_and(|f| f.contains(SymbolFlags::EXPORTED) && !f.contains(SymbolFlags::ABSOLUTE))
    };
    let defined: Vec<&str> = ALLOCATOR.iter().copied().filter(|n| jit_defined(n)).collect();
    if !defined.is_empty() {
        eprintln!(
            "orcjit {what}: warning: the program defines {}: only JIT'd code uses them; libc and shared \
             libraries keep libc's allocator, so memory passed between the two may be freed by the wrong one",
            defined.join(", ")
        );
    }
}

/// The object or static library at `path`, read once into memory that its members share (see
/// [`ObjectBytes`]). Not mapped: GNU `ar` rewrites a library in place, and a program that runs
/// on may pull a member after a rebuild truncated the file under the mapping.
pub fn read_input(path: &str) -> Result<ObjectBytes, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("cannot read '{path}': {e}")))?;
    Ok(ObjectBytes::from(bytes))
}

/// Warns when objects of the program were built with `-fprofile-instr-generate`: they run, but
/// no profile is written (see [`jit_link::profile_instrumented`]).
pub fn warn_if_profile_instrumented<'a>(objects: impl IntoIterator<Item = (&'a str, &'a [u8])>, what: &str) {
    let instrumented: Vec<&str> =
        objects.into_iter().filter(|(_, bytes)| jit_link::profile_instrumented(bytes)).map(|(name, _)| name).collect();
    if !instrumented.is_empty() {
        eprintln!(
            "orcjit {what}: warning: {} {} built with -fprofile-instr-generate: orcjit links no profile runtime, \
             so the program runs but writes no profile",
            instrumented.join(", "),
            if instrumented.len() == 1 { "was" } else { "were" }
        );
    }
}

/// Replaces this process with `orcjit-llvm` from this binary's directory (the `orcjit` binary
/// with libLLVM loaded), given `args` and `argv0` (as `ps` shows it). Returns only if that
/// fails, with the status a shell gives a command it cannot run.
pub fn exec_orcjit_llvm(argv0: OsString, args: &[OsString]) -> ExitCode {
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("orcjit-llvm"),
        Err(e) => {
            eprintln!("orcjit: cannot find this binary's directory, where orcjit-llvm is: {e}");
            return ExitCode::from(127);
        }
    };
    let e = Command::new(&path).arg0(argv0).args(args).exec();
    eprintln!(
        "orcjit: cannot run {} ({e}); every subcommand but `link` of objects runs there. \
         `cargo build --release` builds it beside orcjit",
        path.display()
    );
    ExitCode::from(127)
}
