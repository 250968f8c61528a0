//! `orcjit run [-O0..3] [--lazy=none|module|function] [--threads N] [--cache DIR]
//! [--extra-module F]... [--extra-object F]... [--extra-archive F]... [--dlopen LIB]... MAIN [args]`: compiles LLVM IR (the main module and
//! extra modules: by default each function when first called; with `--lazy=module` each module
//! when one of its functions is first called; with `--lazy=none` each module when first
//! looked up), on the pool, links it into this process and runs it as a C program (see
//! `program.rs`): the counterpart of `lli -jit-kind=orc-lazy` (and, with `--lazy=none`, of
//! `lli -jit-kind=orc`), with lli's option names where they mean the same. Everything after
//! MAIN (or after `--`) is the program's arguments; argv[0] is MAIN. With no MAIN, runs a
//! built-in demo program.

use std::process::ExitCode;

use jit_core::Error;
use jit_layers::{
    GdbRegistration, IrModule, Jit, Laziness, ObjectBytes, ObjectJit, PerfMap, ReplayProfile, Speculation,
    StaticLibrary, TierUp,
};

use super::program::{Program, read_input};

/// `--speculate`'s values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Speculate {
    /// Compile nothing ahead.
    #[default]
    None,
    /// When a function is first called, compile its direct callees ahead.
    Static,
    /// Replay the first-call order of --profile FILE from the start.
    Profile,
}

/// `--lazy`'s values.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Lazy {
    /// Each module when one of its symbols is first looked up (as lli -jit-kind=orc).
    None,
    /// Each module when one of its functions is first called.
    Module,
    /// Each function when it is first called.
    #[default]
    Function,
}

#[derive(clap::Args, Default)]
pub struct RunArgs {
    /// Code generation optimization level, as lli's -O (default 2).
    #[arg(short = 'O', value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=3))]
    opt: Option<u8>,
    /// When code is compiled: each function when first called, each module when one of its
    /// functions is first called, or each module when first looked up.
    #[arg(long, value_enum, default_value_t = Lazy::Function)]
    lazy: Lazy,
    /// Lazy code in two tiers: first compiled at -O0 (quick), then, in the background, at -O
    /// for functions called this many times (0: one compile, at -O). Default 10000 with
    /// --lazy=function and -O1 or above; otherwise 0.
    #[arg(long = "tier-up", value_name = "CALLS")]
    tier_up: Option<u32>,
    /// What to compile ahead of the program, on workers it does not wait for (lazy only).
    #[arg(long, value_enum, default_value_t = Speculate::None)]
    speculate: Speculate,
    /// The profile --speculate=profile replays (implies it).
    #[arg(long, value_name = "FILE")]
    profile: Option<String>,
    /// Write the order of first calls to FILE when the program exits (a profile).
    #[arg(long = "record-profile", value_name = "FILE")]
    record_profile: Option<String>,
    /// Worker threads that compile and link (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// An LLVM IR pipeline to run before code generation, e.g. 'default<O2>' (lli runs none).
    #[arg(long, value_name = "PIPELINE")]
    passes: Option<String>,
    /// Another module (.bc or .ll) to add.
    #[arg(long = "extra-module", value_name = "FILE")]
    extra_modules: Vec<String>,
    /// A relocatable object (.o) to link in, as lli's -extra-object.
    #[arg(long = "extra-object", value_name = "FILE")]
    extra_objects: Vec<String>,
    /// A static library (.a of objects) whose members are linked when the program needs a
    /// symbol they define, as lli's -extra-archive.
    #[arg(long = "extra-archive", value_name = "FILE")]
    extra_archives: Vec<String>,
    /// Load a shared library whose symbols the program may use (e.g. libstdc++.so.6).
    #[arg(long = "dlopen", value_name = "LIB")]
    dlopen: Vec<String>,
    /// The program's argv[0] (default: MAIN); see `orcjit link --argv0`.
    #[arg(long = "argv0", value_name = "NAME")]
    argv0: Option<String>,
    /// Keep compiled objects in DIR and reuse them when the same IR is compiled again with
    /// the same settings (shared safely by concurrent runs).
    #[arg(long, value_name = "DIR")]
    cache: Option<String>,
    /// Print the object cache's hit, miss and store counts to stderr when main returns.
    #[arg(long = "cache-stats")]
    cache_stats: bool,
    /// Print what lazy compilation did (modules split, partitions compiled or cached, stub
    /// first calls) to stderr when main returns.
    #[arg(long = "lazy-stats")]
    lazy_stats: bool,
    /// Write /tmp/perf-PID.map as code is linked, so that `perf report` names JIT'd functions
    /// (code then goes to anonymous mprotect slabs: perf reads the map only for those).
    #[arg(long = "perf-map")]
    perf_map: bool,
    /// Write a Chrome/Perfetto trace of what each thread did (lookups, materializations,
    /// module reads, compiles, links, tier-ups, lazy calls) to FILE (open it in
    /// ui.perfetto.dev or chrome://tracing).
    #[arg(long, value_name = "FILE")]
    trace: Option<String>,
    /// Write a page to FILE (HTML, self-contained) that replays the run: a square per module
    /// moving through its states (added, queued, compiling, resolved, ready, failed), what each
    /// worker thread worked on, and a time slider.
    #[arg(long, value_name = "FILE")]
    board: Option<String>,
    /// Register each linked object with GDB's JIT interface, so that backtraces under gdb name
    /// JIT'd functions.
    #[arg(long)]
    gdb: bool,
    /// The main module (.bc or .ll), then the program's arguments.
    #[arg(value_name = "MAIN")]
    main: Option<String>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

const DEMO_MAIN: &str = include_str!("builtin/demo_main.ll");
const DEMO_LIB: &str = include_str!("builtin/demo_lib.ll");

/// Starts the `--trace` and `--board` subscribers; their files are written when the program
/// exits (however it exits).
fn start_recording(args: &RunArgs) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    if args.trace.is_none() && args.board.is_none() {
        return;
    }
    let (chrome, guard) = match &args.trace {
        Some(path) => {
            let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new().file(path).include_args(true).build();
            (Some(layer.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)), Some(guard))
        }
        None => (None, None),
    };
    let board = args.board.as_ref().map(|_| orcjit::board::Board::new());
    let subscriber = tracing_subscriber::registry().with(chrome).with(board.as_ref().map(|b| b.layer()));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("orcjit: --trace/--board: a tracing subscriber is already installed");
        return;
    }
    // The guard writes the trace's end when dropped.
    let guard = std::sync::Mutex::new(guard);
    jit_layers::at_exit::add_exit_hook(move || drop(guard.lock().ok().and_then(|mut g| g.take())));
    if let (Some(board), Some(path)) = (board, args.board.clone()) {
        let mut modules: Vec<String> = args.extra_modules.clone();
        modules.extend(args.main.clone());
        let title = board_title(&modules);
        jit_layers::at_exit::add_exit_hook(move || {
            if let Err(e) = board.write_html(std::path::Path::new(&path), &title, &modules) {
                eprintln!("orcjit: --board: cannot write {path}: {e}");
            }
        });
    }
}

/// The command line without the module paths, which the board shows as squares.
fn board_title(modules: &[String]) -> String {
    let options: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--extra-module") && !modules.contains(a)).collect();
    format!("orcjit {} ({} modules)", options.join(" "), modules.len())
}

impl Program for Jit {
    fn objects(&self) -> &ObjectJit {
        self.object_jit()
    }
    fn run_main(&self, argv0: &str, args: &[String]) -> Result<i32, Error> {
        Jit::run_main(self, argv0, args)
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    start_recording(&args);
    let argv0 = args.argv0.clone().or_else(|| args.main.clone()).unwrap_or_else(|| "orcjit-demo".to_string());
    let program_args: Vec<String> = args.args.iter().skip_while(|a| *a == "--").cloned().collect();
    match super::program::set_program_name(&argv0).and_then(|()| build(&args)) {
        Ok(jit) => {
            let (cache_stats, lazy_stats) = (args.cache_stats, args.lazy_stats);
            super::program::run_and_exit("run", jit, &argv0, &program_args, move |jit| {
                if let (true, Some(cache)) = (cache_stats, jit.cache()) {
                    eprintln!("orcjit: object cache {}: {}", cache.dir().display(), cache.stats());
                }
                if let (true, Some(layer), Some(stubs)) = (lazy_stats, jit.lazy_layer(), jit.lazy_reexports()) {
                    let s = stubs.stats();
                    eprintln!(
                        "orcjit: lazy: {}; {} stubs, {} resolver entries",
                        layer.stats(),
                        s.live_stubs,
                        s.resolver_entries
                    );
                    if let Some(speculator) = jit.speculator() {
                        eprintln!("orcjit: speculation: {}", speculator.stats());
                    }
                }
            })
        }
        Err(e) => {
            eprintln!("orcjit run: {e}");
            // Exit hooks (the trace's end) run on this way out too.
            jit_layers::at_exit::run_exit_sequence();
            ExitCode::FAILURE
        }
    }
}

fn build(args: &RunArgs) -> Result<Jit, Error> {
    let laziness = match args.lazy {
        Lazy::None => Laziness::None,
        Lazy::Module => Laziness::Module,
        Lazy::Function => Laziness::Function,
    };
    let opt = args.opt.unwrap_or(2);
    let calls = args.tier_up.unwrap_or(match laziness {
        Laziness::Function if opt > 0 => TierUp::default().calls,
        _ => 0,
    });
    let tier = (calls > 0 && opt > 0).then_some(TierUp { calls, ..TierUp::default() });
    let speculation = match (args.speculate, &args.profile) {
        (Speculate::Profile, None) => return Err(Error::msg("--speculate=profile needs --profile FILE")),
        (_, Some(path)) => {
            let profile = ReplayProfile::read(std::path::Path::new(path))
                .map_err(|e| Error::msg(format!("cannot read the profile {path}: {e}")))?;
            Speculation::Profile(std::sync::Arc::new(profile))
        }
        (Speculate::Static, None) => Speculation::Static,
        (Speculate::None, None) => Speculation::None,
    };
    let mut builder = Jit::builder()
        .opt_level(opt)
        .lazy(laziness)
        .tier_up(tier)
        .speculation(speculation)
        .record_first_calls(args.record_profile.is_some());
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    if let Some(p) = &args.passes {
        builder = builder.ir_pipeline(p);
    }
    for lib in &args.dlopen {
        builder = builder.dlopen(lib);
    }
    let objects: Vec<(&String, ObjectBytes)> =
        args.extra_objects.iter().map(|p| Ok((p, read_input(p)?))).collect::<Result<_, Error>>()?;
    super::program::warn_if_profile_instrumented(objects.iter().map(|(p, b)| (p.as_str(), &b[..])), "run");
    let mut low = objects.iter().any(|(_, bytes)| jit_link::needs_low_placement(bytes));
    for path in &args.extra_archives {
        let library = StaticLibrary::parse(path, read_input(path)?)?;
        low |= library.members().any(|(_, bytes)| jit_link::needs_low_placement(bytes));
        builder = builder.static_library(library);
    }
    if let Some(dir) = &args.cache {
        builder = builder.cache(dir);
    }
    // Non-PIC small-code-model objects take absolute 32-bit addresses, so their memory must
    // lie below 2 GiB (as for `orcjit link`). Other programs get the largest reservation that
    // rel32 references span: what a program compiles is known only as it runs, and one with a
    // large array needs more than the default (lli runs such a program). It is address space,
    // not memory: only what is used becomes memory.
    let memory = if low {
        jit_mem::ManagerConfig::default().with_placement(jit_mem::Placement::Low)
    } else {
        jit_mem::ManagerConfig::with_reservation(jit_mem::MAX_RESERVATION)
    };
    let memory: std::sync::Arc<dyn jit_mem::MemoryManager> = if args.perf_map {
        // perf (6.1) credits samples in the dual-mapped slabs' memfd to the memfd, never to
        // the map; anonymous memory it looks up in the map.
        let memory = jit_mem::MprotectSlabManager::new(memory)
            .map_err(|e| Error::msg(format!("cannot set up JIT memory: {e}")))?;
        std::sync::Arc::new(memory)
    } else {
        jit_mem::default_manager(memory).map_err(Error::other)?
    };
    builder = builder.memory_manager(memory);
    let jit = builder.dlopen("libm.so.6").build()?;
    if args.perf_map {
        let map = PerfMap::new().map_err(|e| Error::msg(format!("cannot write the perf map: {e}")))?;
        jit.object_layer().add_plugin(map);
    }
    if args.gdb {
        jit.object_layer().add_plugin(GdbRegistration::new());
    }
    if let (Some(path), Some(speculator)) = (args.record_profile.clone(), jit.speculator().cloned()) {
        // Written when the program exits (however it exits), with every first call it made.
        jit_layers::at_exit::add_exit_hook(move || {
            if let Err(e) = std::fs::write(&path, speculator.profile()) {
                eprintln!("orcjit: cannot write the profile {path}: {e}");
            }
        });
    }
    let mut modules = match &args.main {
        Some(main) => vec![IrModule::from_file(main)?],
        None => vec![IrModule::text("demo_main.ll", DEMO_MAIN), IrModule::text("demo_lib.ll", DEMO_LIB)],
    };
    for extra in &args.extra_modules {
        modules.push(IrModule::from_file(extra)?);
    }
    // Modules and objects whose section bounds enclose others' entries are linked as one.
    jit.add_program(modules, objects.into_iter().map(|(path, bytes)| (path.clone(), bytes)).collect())?;
    Ok(jit)
}
