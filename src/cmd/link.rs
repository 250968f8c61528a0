//! `orcjit link [--threads N] [--dlopen LIB]... [-L DIR]... [-l NAME]... [--argv0 NAME] a.o b.o
//! libc.a ... [-- args]`: links the objects into one dylib that searches the static libraries
//! given (a member is linked when a symbol it defines is needed, as a static linker does), the
//! shared libraries given, libm and the process, then runs them as a C program (see
//! `program.rs`): the counterpart of `llvm-jitlink`. `-l` finds libraries as a native link
//! does (see `jit_layers::find_library`). argv[0] is the first object, or `--argv0`.
//! Nothing here calls LLVM: the `orcjit` binary runs this command without libLLVM loaded.
//! Inputs that are LLVM bitcode (`clang -flto -c`) are handed, with the rest, to `orcjit run`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use jit_core::Error;
use jit_layers::{FoundLibrary, ObjectJit, PerfMap, StaticLibrary, find_library};
use jit_mem::{ManagerConfig, Placement};

#[derive(clap::Args)]
pub struct LinkArgs {
    /// Worker threads that link (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Load a shared library whose symbols the objects may use (libstdc++ is loaded when C++ code needs it).
    #[arg(long = "dlopen", value_name = "LIB")]
    dlopen: Vec<String>,
    /// Add DIR to the directories -l searches, before the system's (as a native link's -L).
    #[arg(short = 'L', value_name = "DIR")]
    library_dirs: Vec<PathBuf>,
    /// Link library NAME as a native link's -l does: the first libNAME.so (loaded, as with
    /// --dlopen) or libNAME.a (searched after the static libraries named as inputs) in the -L
    /// directories, then the system's; -l:FILE names the file itself.
    #[arg(short = 'l', value_name = "NAME")]
    libraries: Vec<String>,
    /// The program's argv[0] (default: the first object). A wrapper script that runs
    /// `orcjit link --argv0 "$0" ...` makes a program that runs itself again (Python's
    /// `sys.executable`, a shell's `$0`) run the wrapper.
    #[arg(long = "argv0", value_name = "NAME")]
    argv0: Option<String>,
    /// Write /tmp/perf-PID.map as code is linked, so that `perf report` names JIT'd functions
    /// (code then goes to anonymous mprotect slabs: perf reads the map only for those).
    #[arg(long = "perf-map")]
    perf_map: bool,
    /// Relocatable objects (.o) and static libraries (.a).
    #[arg(required = true, value_name = "OBJECT")]
    objects: Vec<String>,
    /// Arguments for main (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

pub fn run(args: LinkArgs) -> ExitCode {
    let libraries = match libraries(&args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("orcjit link: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_arguments(&args, &libraries) {
        Ok(None) => {}
        Ok(Some(run_args)) => {
            let argv0 = std::env::args_os().next().unwrap_or_else(|| "orcjit".into());
            return super::program::exec_orcjit_llvm(argv0, &run_args);
        }
        Err(e) => {
            eprintln!("orcjit link: {e}");
            return ExitCode::FAILURE;
        }
    }
    pad_heap_growth();
    let argv0 = args.argv0.as_ref().unwrap_or(&args.objects[0]);
    match super::program::set_program_name(argv0).and_then(|()| build(&args, &libraries)) {
        Ok(jit) => super::program::run_and_exit("link", jit, argv0, &args.args, |_| {}),
        Err(e) => {
            eprintln!("orcjit link: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the `-l` options found: shared libraries to load and static libraries to search.
#[derive(Default)]
struct Libraries {
    shared: Vec<String>,
    archives: Vec<String>,
}

fn libraries(args: &LinkArgs) -> Result<Libraries, Error> {
    if let Some(dir) = args.library_dirs.iter().find(|dir| !dir.is_dir()) {
        return Err(Error::msg(format!("-L {}: not a directory", dir.display())));
    }
    let mut found = Libraries::default();
    for name in &args.libraries {
        for library in find_library(name, &args.library_dirs).map_err(Error::msg)? {
            match library {
                FoundLibrary::Shared(path) => found.shared.push(path.display().to_string()),
                FoundLibrary::Static(path) => found.archives.push(path.display().to_string()),
            }
        }
    }
    Ok(found)
}

/// The arguments of `orcjit run` for a link some of whose inputs are LLVM bitcode (what
/// `clang -flto -c` writes as its objects), or `None` when none is. Bitcode needs LLVM, which
/// this command does not load: `orcjit run --lazy=none` compiles each module when it is first
/// looked up, as a link binds everything before main, and links the objects and static
/// libraries beside them, with the same argv[0], threads, libraries and arguments.
fn run_arguments(args: &LinkArgs, libraries: &Libraries) -> Result<Option<Vec<OsString>>, Error> {
    let (mut bitcode, mut rest) = (Vec::new(), Vec::new());
    for path in &args.objects {
        let mut magic = [0u8; 8];
        let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut magic));
        let n = read.map_err(|e| Error::msg(format!("cannot read '{path}': {e}")))?;
        if jit_link::is_llvm_bitcode(&magic[..n]) {
            bitcode.push(path);
        } else {
            let kind = if StaticLibrary::is_archive(&magic[..n]) { "--extra-archive" } else { "--extra-object" };
            rest.push(format!("{kind}={path}"));
        }
    }
    let Some((main, modules)) = bitcode.split_first() else { return Ok(None) };
    let mut run: Vec<OsString> = vec!["run".into(), "--lazy=none".into()];
    if let Some(n) = args.threads {
        run.push(format!("--threads={n}").into());
    }
    run.extend(args.dlopen.iter().chain(&libraries.shared).map(|lib| format!("--dlopen={lib}").into()));
    run.push(format!("--argv0={}", args.argv0.as_ref().unwrap_or(&args.objects[0])).into());
    if args.perf_map {
        run.push("--perf-map".into());
    }
    run.extend(modules.iter().map(|m| format!("--extra-module={m}").into()));
    run.extend(rest.into_iter().map(OsString::from));
    run.extend(libraries.archives.iter().map(|a| format!("--extra-archive={a}").into()));
    run.push(main.into());
    run.push("--".into());
    run.extend(args.args.iter().map(OsString::from));
    Ok(Some(run))
}

/// glibc grows a thread's malloc arena by little more than each request needs, and linking
/// grows the link workers' arenas in hundreds of small steps: 266 `mprotect` calls to link
/// and start Lua (strace), on the workers' critical path. Asking for 4 MiB of headroom per
/// growth (`M_TOP_PAD`) makes them 9; peak RSS stays within 0.2 MB, since headroom is only
/// resident once touched. The linked program shares the setting, as it shares the process.
fn pad_heap_growth() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator (valid values: any size);
    // glibc takes its own lock for it, and no memory changes hands.
    unsafe { libc::mallopt(libc::M_TOP_PAD, 4 << 20) };
}

/// The memory manager's setup for objects that take up to `needed` bytes once linked: the
/// default reservation, or, for a program with a large array, one with room for the objects
/// and a quarter more (for what is linked on demand: libgcc's objects, stubs), as far as
/// small-code-model references reach. (`llvm-jitlink` maps each allocation apart and links
/// such a program; a reservation too small for it was an error here.)
fn memory_config(needed: u64, placement: Placement) -> ManagerConfig {
    let most = match placement {
        // A Near reservation too large to lie near its anchor goes anywhere.
        Placement::Anywhere | Placement::Near(_) => jit_mem::MAX_RESERVATION,
        // Below 2 GiB, beside whatever the process mapped there already.
        Placement::Low => jit_mem::LOW_PLACEMENT_LIMIT / 8 * 7,
    };
    let wanted = needed.saturating_add(needed / 4).saturating_add(64 << 20).next_multiple_of(1 << 20);
    ManagerConfig::with_reservation(wanted.clamp(jit_mem::DEFAULT_RESERVATION, most)).with_placement(placement)
}

fn build(args: &LinkArgs, libraries: &Libraries) -> Result<ObjectJit, Error> {
    let mut objects = Vec::with_capacity(args.objects.len());
    let mut archives = Vec::new();
    for path in args.objects.iter().chain(&libraries.archives) {
        let bytes = super::program::read_input(path)?;
        if StaticLibrary::is_archive(&bytes) {
            archives.push(StaticLibrary::parse(path, bytes)?);
        } else {
            objects.push((path, bytes));
        }
    }
    super::program::warn_if_profile_instrumented(objects.iter().map(|(p, b)| (p.as_str(), &b[..])), "link");
    let low = objects.iter().any(|(_, bytes)| jit_link::needs_low_placement(bytes))
        || archives.iter().flat_map(|a| a.members()).any(|(_, bytes)| jit_link::needs_low_placement(bytes));
    // Otherwise near libc, so that PIE code reaching its variables directly (gcc's default for
    // optarg, environ) reaches them, as a native link's copy relocations let it.
    let placement = if low { Placement::Low } else { Placement::near_libc() };
    let needed = objects
        .iter()
        .map(|(_, bytes)| jit_link::memory_needed(bytes))
        .chain(archives.iter().flat_map(|a| a.members()).map(|(_, bytes)| jit_link::memory_needed(bytes)))
        .fold(0, u64::saturating_add);
    // The program runs among its own threads, as natively (and as under llvm-jitlink-19).
    let mut builder = ObjectJit::builder().program_threads_only(true);
    for archive in archives {
        builder = builder.static_library(archive);
    }
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    for lib in args.dlopen.iter().chain(&libraries.shared) {
        builder = builder.dlopen(lib);
    }
    // Non-PIC small-code-model objects take absolute 32-bit addresses, so their memory must
    // lie below 2 GiB; other programs keep the default placement.
    let memory = memory_config(needed, placement);
    if args.perf_map {
        // perf (6.1) credits samples in the dual-mapped slabs' memfd to the memfd, never to
        // the map; anonymous memory it looks up in the map.
        let memory = jit_mem::MprotectSlabManager::new(memory)
            .map_err(|e| Error::msg(format!("cannot set up JIT memory: {e}")))?;
        builder = builder.memory_manager(std::sync::Arc::new(memory));
    } else if memory != ManagerConfig::default() {
        builder = builder.memory_manager(jit_mem::default_manager(memory).map_err(Error::other)?);
    }
    // C programs may use libm as they use libc (llvm-jitlink has it in its own process).
    let jit = builder.dlopen("libm.so.6").build()?;
    if args.perf_map {
        let map = PerfMap::new().map_err(|e| Error::msg(format!("cannot write the perf map: {e}")))?;
        jit.object_layer().add_plugin(map);
    }
    jit.add_objects(objects.into_iter().map(|(path, bytes)| (path.clone(), bytes)).collect())?;
    Ok(jit)
}
