//! `orcjit link` (in `orcjit`, which does not load libLLVM, and in `orcjit-llvm`) runs real
//! programs compiled by clang-19 exactly as their native builds run:
//! same standard output, same exit status. C and C++ programs from jit-link's test tree (multi-
//! file programs, constructors and destructors, C++ exceptions and COMDAT, thread-local
//! variables, libstdc++'s own thread-locals, a static library), the Lua 5.4 interpreter (from the `lua-src` crate) running a script, and SQLite
//! (from `libsqlite3-sys`) running queries.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");
const ORCJIT_LLVM: &str = env!("CARGO_BIN_EXE_orcjit-llvm");

/// The two binaries that link and run objects: `orcjit link` and `orcjit-llvm link`.
fn link_commands() -> [Command; 2] {
    [ORCJIT, ORCJIT_LLVM].map(|binary| {
        let mut command = Command::new(binary);
        command.arg("link");
        command
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn programs() -> PathBuf {
    root().join("jit-link/tests/programs")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `orcjit link` of `inputs`, which must fail with status 1 before anything runs; its stderr.
fn link_fails(inputs: &[PathBuf]) -> String {
    let out = run(Command::new(ORCJIT).arg("link").args(inputs));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// Compiles `sources` with clang-19 (clang++-19 for .cpp) and `flags`; returns the objects.
fn compile(dir: &Path, sources: &[PathBuf], flags: &[&str]) -> Vec<PathBuf> {
    compile_by(("clang-19", "clang++-19"), dir, sources, flags)
}

/// As [`compile`], with gcc and g++.
fn compile_gnu(dir: &Path, sources: &[PathBuf], flags: &[&str]) -> Vec<PathBuf> {
    compile_by(("gcc", "g++"), dir, sources, flags)
}

/// Compiles each of `sources` into `dir` with `compilers` (for C, for C++) and `flags`.
fn compile_by(compilers: (&str, &str), dir: &Path, sources: &[PathBuf], flags: &[&str]) -> Vec<PathBuf> {
    sources
        .iter()
        .map(|src| {
            let obj = dir.join(src.file_name().unwrap()).with_extension("o");
            let cc = if src.extension().is_some_and(|e| e == "cpp") { compilers.1 } else { compilers.0 };
            let out = run(Command::new(cc).args(flags).arg("-c").arg(src).arg("-o").arg(&obj));
            check(&out, &format!("{cc} -c {}", src.display()));
            obj
        })
        .collect()
}

/// Links `objects` natively into `dir/native`.
fn link_native(dir: &Path, objects: &[PathBuf], flags: &[&str], libs: &[&str]) -> PathBuf {
    let exe = dir.join("native");
    let out = run(Command::new("clang++-19").args(flags).args(objects).arg("-o").arg(&exe).args(libs));
    check(&out, "native link");
    exe
}

/// Runs the native executable, `orcjit link` and `orcjit-llvm link` on the same objects and
/// arguments, and requires the same stdout and exit status.
fn same_as_native(program: &str, objects: &[PathBuf], native: &Path, dlopen: &[&str], args: &[&str]) {
    let native_run = run(Command::new(native).args(args));
    for threads in ["1", "2"] {
        for mut jit in link_commands() {
            jit.args(["--threads", threads]);
            for lib in dlopen {
                jit.arg("--dlopen").arg(lib);
            }
            let what = format!("{program} ({jit:?})");
            common::assert_runs_as_native(&what, jit.args(objects).arg("--").args(args), &native_run);
        }
    }
}

struct Case {
    tag: &'static str,
    compile: &'static [&'static str],
    link: &'static [&'static str],
}

const PIC_SMALL: Case = Case { tag: "pic-small", compile: &["-O1", "-fPIC"], link: &[] };
const PIC_LARGE: Case = Case { tag: "pic-large", compile: &["-O2", "-fPIC", "-mcmodel=large"], link: &[] };
const NOPIC_LARGE: Case =
    Case { tag: "nopic-large", compile: &["-O1", "-fno-pic", "-mcmodel=large"], link: &["-no-pie"] };
/// PIE code that reaches external variables directly, with 32-bit PC-relative references
/// (`gcc -fPIE`'s default); the native link makes copy relocations for them.
const PIE_DIRECT: Case =
    Case { tag: "pie-direct", compile: &["-O1", "-fPIE", "-fdirect-access-external-data"], link: &[] };
const NOPIC_SMALL: Case =
    Case { tag: "nopic-small", compile: &["-O1", "-fno-pic", "-mcmodel=small"], link: &["-no-pie"] };

fn program_case(dir_name: &str, sources: &[&str], extra: &[&str], libs: &[&str], dlopen: &[&str], cases: &[Case]) {
    let srcs: Vec<PathBuf> = sources.iter().map(|s| programs().join(dir_name).join(s)).collect();
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut flags: Vec<&str> = case.compile.to_vec();
        flags.extend_from_slice(extra);
        let objects = compile(tmp.path(), &srcs, &flags);
        let native = link_native(tmp.path(), &objects, case.link, libs);
        same_as_native(&format!("{dir_name} ({})", case.tag), &objects, &native, dlopen, &["one", "two"]);
    }
}

#[test]
fn a_multi_file_c_program_with_cross_object_data_weak_and_common_symbols_runs_as_native() {
    program_case("multi", &["main.c", "lib.c"], &["-fcommon"], &[], &[], &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE]);
}

/// A program with an array larger than the default reservation (1.5 GiB of zero-filled
/// doubles) links and runs as natively: `orcjit link` sizes its memory from the objects, and
/// no multiple of 4 GiB splits the reservation. Only the pages touched become memory.
#[test]
fn a_program_with_an_array_larger_than_the_default_reservation_runs_as_native() {
    program_case("bigarray", &["main.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE, NOPIC_SMALL]);
}

/// A 5 GiB array, more than any reservation holds, in the large data section of the medium
/// and large code models: `orcjit link` leaves it out of its reservation's size, and the
/// linker allocates it apart (see `jit-link/tests/programs/hugearray`).
#[test]
fn a_program_with_an_array_larger_than_any_reservation_runs_as_native_under_the_large_code_models() {
    const PIC_MEDIUM: Case = Case { tag: "pic-medium", compile: &["-O1", "-fPIC", "-mcmodel=medium"], link: &[] };
    program_case("hugearray", &["main.c"], &[], &[], &[], &[PIC_LARGE, NOPIC_LARGE, PIC_MEDIUM]);
}

/// `__start_cmds` / `__stop_cmds` enclose section `cmds` as a static linker makes them: for
/// one object, for objects merged with `ld -r`, and for objects that each define part of the
/// section, which `orcjit link` links as one graph (llvm-jitlink-19 runs them apart and finds
/// no entries at all). The two objects also resolve a weak definition, a weak reference and a
/// call between them, and each has a static function of one name. An object linked between
/// them runs its constructor between theirs, and its destructor between theirs.
#[test]
fn section_bounds_enclose_the_section_of_every_object_as_natively() {
    let dir = |name: &str| programs().join("startstop").join(name);
    program_case("startstop", &["main.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE]);
    program_case("startstop", &["main.c", "more.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE]);
    program_case("startstop", &["main.c", "between.c", "more.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE]);
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[dir("main.c"), dir("more.c")], &["-O1", "-fPIC"]);
    let native = link_native(tmp.path(), &objects, &[], &[]);
    let merged = tmp.path().join("merged.o");
    check(&run(Command::new("ld").arg("-r").arg("-o").arg(&merged).args(&objects)), "ld -r");
    same_as_native("startstop (merged)", std::slice::from_ref(&merged), &native, &[], &[]);
}

/// The same for C++ objects, linked as one graph: entries that throw past the walker's frames,
/// COMDAT inline functions with static locals and a class of one name in both objects, static
/// constructors and destructors of both, and a `thread_local` used from several threads.
#[test]
fn cxx_objects_of_one_section_table_link_as_one_graph_as_natively() {
    let (compile, link) = (&["-pthread"][..], &["-lstdc++", "-pthread"][..]);
    program_case(
        "startstopcxx",
        &["main.cpp", "more.cpp"],
        compile,
        link,
        &["libstdc++.so.6"],
        &[PIC_SMALL, PIC_LARGE],
    );
}

/// A reference pinned to one version of a libc symbol (`.symver memcpy@GLIBC_2.2.5`) binds
/// to that version, as a static linker binds it (llvm-jitlink-19: "Symbols not found"), and
/// weak references to what nothing defines read as null.
#[test]
fn versioned_and_weak_references_bind_as_natively() {
    program_case("symver", &["main.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE]);
}

/// Code that reads and writes libc's `optarg`, `optind`, `opterr` and `environ` through 32-bit
/// PC-relative references, as gcc's default PIE code does, runs as natively: the objects'
/// memory lies near libc, so the references reach libc's own variables (it was an error:
/// mutable data out of reach, which no copy could stand for).
#[test]
fn pie_code_reaching_libc_variables_directly_runs_as_natively() {
    program_case("libcdata", &["main.c"], &[], &[], &[], &[PIE_DIRECT, PIC_SMALL]);
    // libstdc++'s shared_ptr reads libc's __libc_single_threaded (g++ PIE objects failed on it).
    program_case("libcdata", &["shared.cpp"], &[], &["-lstdc++"], &["libstdc++.so.6"], &[PIE_DIRECT, PIC_SMALL]);
}

/// Objects gcc compiles as Debian builds them by default (PIE, here at -O2) link and run as
/// their native builds, C and C++: gcc's relocations (GOTPCRELX, PC32 to libc's variables),
/// sections (`.text.startup`, `.text.unlikely`) and unwind tables.
#[test]
fn gcc_built_programs_run_as_native() {
    /// A test program: its directory, sources, extra compile flags, native libraries, and
    /// the libraries `orcjit link` loads.
    struct Program(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let programs_to_build = [
        Program("multi", &["main.c", "lib.c"], &["-fcommon"], &[], &[]),
        Program("ctors", &["main.c", "other.c"], &[], &[], &[]),
        Program("stdio", &["main.c", "other.c"], &[], &[], &[]),
        Program("libcdata", &["main.c"], &[], &[], &[]),
        Program("cxx", &["main.cpp", "other.cpp"], &[], &["-lstdc++"], &["libstdc++.so.6"]),
    ];
    for Program(program, sources, extra, libs, dlopen) in programs_to_build {
        let tmp = tempfile::tempdir().unwrap();
        let srcs: Vec<PathBuf> = sources.iter().map(|s| programs().join(program).join(s)).collect();
        let mut flags = vec!["-O2"];
        flags.extend_from_slice(extra);
        let objects = compile_gnu(tmp.path(), &srcs, &flags);
        let native = link_native(tmp.path(), &objects, &[], libs);
        same_as_native(&format!("{program} (gcc -O2)"), &objects, &native, dlopen, &["one", "two"]);
    }
    // libstdc++'s shared_ptr reads libc's __libc_single_threaded (g++ PIE objects failed on it).
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile_gnu(tmp.path(), &[programs().join("libcdata/shared.cpp")], &["-O2"]);
    let native = link_native(tmp.path(), &objects, &[], &["-lstdc++"]);
    same_as_native("libcdata/shared.cpp (g++ -O2)", &objects, &native, &["libstdc++.so.6"], &["one", "two"]);
}

/// Objects that are LLVM bitcode (what `clang -flto -c` writes), alone or beside ELF objects,
/// or in a static library, run as natively: `orcjit link` hands them to `orcjit run`, which
/// compiles them and links the ELF objects beside them, with the same arguments
/// (llvm-jitlink-19 refuses bitcode).
#[test]
fn bitcode_objects_of_an_lto_build_run_as_native_alone_or_beside_elf_objects() {
    let dir = programs().join("multi");
    let sources = [dir.join("main.c"), dir.join("lib.c")];
    let tmp = tempfile::tempdir().unwrap();
    let elf = compile(tmp.path(), &sources, &["-O1", "-fPIC", "-fcommon"]);
    let native = link_native(tmp.path(), &elf, &[], &[]);
    let lto_dir = tmp.path().join("lto");
    std::fs::create_dir(&lto_dir).unwrap();
    let lto = compile(&lto_dir, &sources, &["-O1", "-fPIC", "-fcommon", "-flto=thin"]);
    same_as_native("multi (bitcode)", &lto, &native, &[], &["one", "two"]);
    same_as_native("multi (bitcode and ELF)", &[lto[0].clone(), elf[1].clone()], &native, &[], &["one", "two"]);
    // A static library of bitcode, as `llvm-ar` makes one for an LTO build.
    let dir = programs().join("archive");
    let members = ["square.c", "chain_a.c", "chain_b.c", "dup.c", "broken.c"].map(|m| dir.join(m));
    let (main, members) = (dir.join("main.c"), compile(&lto_dir, &members, &["-O1", "-fPIC", "-flto"]));
    let library = lto_dir.join("libparts.a");
    check(&run(Command::new("llvm-ar-19").arg("rcs").arg(&library).args(&members)), "llvm-ar");
    let elf_members =
        compile(tmp.path(), &["square.c", "chain_a.c", "chain_b.c"].map(|m| dir.join(m)), &["-O1", "-fPIC"]);
    let main_elf = compile(tmp.path(), std::slice::from_ref(&main), &["-O1", "-fPIC"]);
    let native = link_native(tmp.path(), &[main_elf.clone(), elf_members].concat(), &[], &[]);
    let main_lto = compile(&lto_dir, &[main], &["-O1", "-fPIC", "-flto"]);
    same_as_native(
        "archive (bitcode, library of bitcode)",
        &[main_lto[0].clone(), library.clone()],
        &native,
        &[],
        &["one"],
    );
    // Beside ELF objects only, nothing compiles it: the error says what the member is.
    let stderr = link_fails(&[main_elf[0].clone(), library.clone()]);
    let member = format!("{}(chain_a.o): unsupported: LLVM bitcode", library.display());
    assert!(stderr.contains(&member), "{stderr}");
}

#[test]
fn constructors_destructors_and_atexit_run_in_native_order() {
    program_case("ctors", &["main.c", "other.c"], &[], &[], &[], &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE]);
}

#[test]
fn cxx_exceptions_across_objects_comdat_and_static_objects_run_as_native() {
    program_case(
        "cxx",
        &["main.cpp", "other.cpp"],
        &[],
        &["-lstdc++"],
        &["libstdc++.so.6"],
        &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE],
    );
}

/// C++ objects link without `--dlopen libstdc++.so.6`: `clang++` links the C++ runtime into
/// every program, and `orcjit link` (which does not load LLVM, nor so libstdc++) loads it
/// when a lookup needs one of its names.
#[test]
fn cxx_objects_find_the_cxx_runtime_without_being_told() {
    program_case("cxx", &["main.cpp", "other.cpp"], &[], &["-lstdc++"], &[], &[PIC_SMALL]);
    program_case("cxxonce", &["main.cpp", "other.cpp"], &["-pthread"], &["-lstdc++", "-pthread"], &[], &[PIC_SMALL]);
}

#[test]
fn thread_local_variables_used_from_several_threads_run_as_native() {
    program_case("tls", &["main.c", "other.c"], &["-pthread"], &["-pthread"], &[], &[PIC_SMALL, PIC_LARGE]);
}

/// Hidden thread-local variables defined in one object and used from another, which clang reaches
/// with the local-dynamic model: one `__tls_get_addr` call for the module's block, then each
/// variable at its offset in it (`R_X86_64_DTPOFF32` against a symbol the object does not define).
/// `orcjit link` links such objects as one graph, one TLS module, as a static link makes one;
/// apart, the offset had no block to be relative to, and the link failed (llvm-jitlink-19 rejects
/// `R_X86_64_TLSLD` outright). An object between them keeps its place in constructor order. So they
/// do through TLS descriptors (`-mtls-dialect=gnu2`, proposed as GCC 16's default), clang's and
/// gcc's: one descriptor for `_TLS_MODULE_BASE_`, the module's block, then the offsets.
#[test]
fn hidden_thread_locals_shared_between_objects_through_the_local_dynamic_model_run_as_native() {
    let sources = ["main.c", "between.c", "vars.c"];
    program_case("tlsld", &sources, &["-pthread"], &["-pthread"], &[], &[PIC_SMALL, PIC_LARGE]);
    program_case("tlsld", &sources, &["-pthread", "-mtls-dialect=gnu2"], &["-pthread"], &[], &[PIC_SMALL]);
    let tmp = tempfile::tempdir().unwrap();
    let srcs: Vec<PathBuf> = sources.iter().map(|s| programs().join("tlsld").join(s)).collect();
    let objects = compile_gnu(tmp.path(), &srcs, &["-O1", "-fPIC", "-pthread", "-mtls-dialect=gnu2"]);
    let native = link_native(tmp.path(), &objects, &[], &["-pthread"]);
    same_as_native("tlsld (gcc, gnu2)", &objects, &native, &[], &["one"]);
}

/// The same program with its thread-local variables' object in a static library: the member
/// that defines them joins the graph of the object that reaches them (a static link pulls it
/// for the undefined reference anyway), whether that object is given on the command line or
/// is itself a member (the library alone, whose `main` the C start-up code pulls natively).
/// Linked apart, the link failed as above. The constructor-only member nothing refers to is
/// not linked, natively or here.
#[test]
fn hidden_thread_locals_of_a_static_library_member_run_as_native() {
    let dir = programs().join("tlsld");
    for dialect in ["-mtls-dialect=gnu", "-mtls-dialect=gnu2"] {
        let tmp = tempfile::tempdir().unwrap();
        let sources = ["main.c", "between.c", "vars.c"].map(|s| dir.join(s));
        let objects = compile(tmp.path(), &sources, &["-O1", "-fPIC", "-pthread", dialect]);
        let (library, everything) = (tmp.path().join("libvars.a"), tmp.path().join("libprogram.a"));
        check(&run(Command::new("ar").arg("rcs").arg(&library).args(&objects[1..])), "ar");
        check(&run(Command::new("ar").arg("rcs").arg(&everything).args(&objects)), "ar");
        for inputs in [vec![objects[0].clone(), library.clone()], vec![everything.clone()]] {
            let native = link_native(tmp.path(), &inputs, &[], &["-pthread"]);
            same_as_native(&format!("tlsld {dialect} {inputs:?}"), &inputs, &native, &[], &["one"]);
        }
    }
}

/// A Rust static library, the standard library in it, called from C. Its codegen units reach
/// a `thread_local!` (and the standard library's own) across units with the local-dynamic TLS
/// model, so every unit tied so to a member taken is linked in one graph with it. They were
/// pulled apart, and the link failed with the DtpOffset error (llvm-jitlink-19 rejects
/// `R_X86_64_TLSLD`).
#[test]
fn a_rust_static_library_with_std_runs_as_native() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = programs().join("rustlib");
    let library = tmp.path().join("librustlib.a");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = run(Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "staticlib", "-C", "opt-level=2", "-C", "relocation-model=pic"])
        .arg(dir.join("lib.rs"))
        .arg("-o")
        .arg(&library));
    check(&built, "rustc");
    let main = compile(tmp.path(), &[dir.join("main.c")], &["-O1", "-fPIC"]);
    let inputs = [main[0].clone(), library];
    let native = link_native(tmp.path(), &inputs, &[], &["-lpthread", "-ldl", "-lm"]);
    same_as_native("rustlib", &inputs, &native, &[], &[]);
}

/// libstdc++'s `std::call_once` keeps the callable in libstdc++'s own thread-local variables,
/// which JIT'd code reaches through `__tls_get_addr` from each thread. `orcjit link` loads
/// libstdc++ with `dlopen`, so those variables live in blocks the loader makes per thread.
/// At exit, the main thread's `thread_local` objects are destroyed before the statics.
#[test]
fn cxx_call_once_and_async_reach_libstdcxx_thread_locals_from_several_threads() {
    program_case(
        "cxxonce",
        &["main.cpp", "other.cpp"],
        &["-pthread"],
        &["-lstdc++", "-pthread"],
        &["libstdc++.so.6"],
        &[PIC_SMALL, PIC_LARGE],
    );
}

/// After `fork`, the child's writes to JIT'd variables stay in the child.
#[test]
fn a_forked_child_gets_its_own_copy_of_jit_d_variables() {
    program_case("fork", &["main.c", "other.c"], &[], &[], &[], &[PIC_SMALL, PIC_LARGE]);
}

/// `pthread_atfork` and `at_quick_exit`, which glibc defines in `libc_nonshared.a` rather than
/// in the shared libc: handlers from two objects run in POSIX order around a `fork`, and
/// `quick_exit` runs its handlers and not the `atexit` ones.
#[test]
fn pthread_atfork_and_at_quick_exit_handlers_run_as_natively() {
    program_case("atfork", &["main.c", "other.c"], &[], &[], &[], &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE]);
}

/// The program starts with a native program's signal state, not the one Rust's runtime gives
/// the `orcjit` process: writing to a closed pipe and `raise(SIGSEGV)` kill, and the programs
/// it runs do not inherit an ignored SIGPIPE.
#[test]
fn the_program_starts_with_native_signal_dispositions() {
    program_case("sigdefaults", &["main.c"], &[], &[], &[], &[PIC_SMALL]);
}

/// A `clone` child made with SIGCHLD alone runs as natively, and no `pthread_atfork` handler.
#[test]
fn a_clone_child_runs_as_natively() {
    program_case("clone", &["main.c"], &[], &[], &[], &[PIC_SMALL]);
}

/// JIT'd thread-local variables stay readable in a thread's `pthread_key_create` destructors
/// (after its thread-locals are destroyed) and in the main thread's `atexit` handlers.
#[test]
fn thread_locals_stay_readable_in_key_destructors_and_at_exit() {
    program_case("tlslate", &["main.c", "other.c"], &["-pthread"], &["-pthread"], &[], &[PIC_SMALL, PIC_LARGE]);
}

/// A timer's SIGALRM and a child's SIGCHLD reach the program's thread, not a pool thread.
#[test]
fn process_signals_reach_the_program_s_thread() {
    program_case("signals", &["main.c"], &[], &[], &[], &[PIC_SMALL]);
}

/// A static library: only the members something needs are linked (see the program's comment).
/// Indirect functions (STT_GNU_IFUNC): `ifunc` and `target_clones`, across objects, with
/// their first calls racing (see the program's comment). Not with `-fPIC -mcmodel=large`,
/// which GNU ld cannot link natively (GOT64 against an IFUNC symbol).
#[test]
fn indirect_functions_run_as_native() {
    program_case("ifunc", &["main.c", "other.c"], &[], &[], &[], &[PIC_SMALL, NOPIC_LARGE]);
}

/// Code built with `-fsanitize=undefined` finds the sanitizer's runtime, which the native link
/// adds: the full one reports as natively (stdout, stderr and status alike), the minimal one
/// (`-fsanitize-minimal-runtime`) with the code addresses its reports carry left out.
#[test]
fn undefined_behaviour_sanitizer_reports_come_out_as_natively() {
    let src = programs().join("ubsan/main.c");
    for (minimal, flags) in [
        (false, &["-O1", "-fPIC", "-fsanitize=undefined"][..]),
        (true, &["-O1", "-fPIC", "-fsanitize=undefined", "-fsanitize-minimal-runtime"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let objects = compile(tmp.path(), std::slice::from_ref(&src), flags);
        let native = link_native(tmp.path(), &objects, &flags[2..], &[]);
        let native_run = run(&mut Command::new(&native));
        let without_addresses = |stderr: &[u8]| -> String {
            let text = String::from_utf8_lossy(stderr);
            if !minimal {
                return text.into_owned();
            }
            text.lines().map(|l| l.split(" by 0x").next().unwrap_or(l).to_string() + "\n").collect()
        };
        let expected = without_addresses(&native_run.stderr);
        assert!(
            expected.contains(if minimal { "ubsan: add-overflow" } else { "signed integer overflow" }),
            "{expected}"
        );
        for mut cmd in link_commands() {
            let jit = run(cmd.args(&objects));
            assert_eq!(
                (&jit.stdout, without_addresses(&jit.stderr), jit.status.code()),
                (&native_run.stdout, expected.clone(), native_run.status.code()),
                "{cmd:?}"
            );
        }
    }
}

/// Code built with -fsanitize=address cannot run (its runtime must be in the process from the
/// start): the error says so, besides naming the symbol and the object.
#[test]
fn address_sanitized_code_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[programs().join("ubsan/main.c")], &["-O1", "-fPIC", "-fsanitize=address"]);
    for mut cmd in link_commands() {
        let out = run(cmd.args(&objects));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr.contains("undefined symbol '__asan_") && stderr.contains("main.o"), "{stderr}");
        assert!(stderr.contains("-fsanitize=address needs AddressSanitizer's runtime"), "{stderr}");
    }
}

/// The program finds itself alone in its process, as natively (and as under llvm-jitlink-19):
/// `orcjit link`'s workers link in parallel, then exit before the constructors run
/// (`program_threads_only`). Before, a constructor and `main` counted three threads, and
/// `unshare(CLONE_NEWUSER)` failed with EINVAL. A `dlsym` of a function nothing else refers to
/// links its object on the program's own thread; a forked child is alone too.
#[test]
fn the_program_runs_among_its_own_threads_only() {
    program_case("alone", &["main.c", "late.c"], &[], &["-rdynamic"], &[], &[PIC_SMALL, NOPIC_LARGE]);
}

/// `dladdr` on JIT'd code answers as for a native build linked with `-rdynamic`.
#[test]
fn dladdr_names_jit_d_functions_as_natively() {
    program_case("dladdr", &["main.c"], &[], &["-rdynamic"], &[], &[PIC_SMALL, NOPIC_LARGE]);
}

/// What a native link takes from the compiler's runtime library (libgcc.a) is found too.
#[test]
fn cpu_feature_checks_and_compiler_runtime_helpers_run_as_native() {
    program_case("builtins", &["main.c"], &[], &[], &[], &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE]);
}

#[test]
fn a_static_library_s_members_are_linked_when_needed_as_natively() {
    let dir = programs().join("archive");
    for case in [PIC_SMALL, NOPIC_LARGE] {
        let tmp = tempfile::tempdir().unwrap();
        let members = ["square.c", "chain_a.c", "chain_b.c", "dup.c", "broken.c"].map(|m| dir.join(m));
        let members = compile(tmp.path(), &members, case.compile);
        let main = compile(tmp.path(), &[dir.join("main.c")], case.compile);
        let library = tmp.path().join("libparts.a");
        check(&run(Command::new("ar").arg("rcs").arg(&library).args(&members)), "ar");
        let native = link_native(tmp.path(), &[main[0].clone(), library.clone()], case.link, &[]);
        // With the archive's symbol index (`ar s`), and without one (`ar S`: the members' own
        // symbols are read instead; GNU ld refuses such an archive).
        let unindexed = tmp.path().join("libnoindex.a");
        check(&run(Command::new("ar").arg("rcS").arg(&unindexed).args(&members)), "ar");
        for library in [library, unindexed] {
            let what = format!("archive {} ({})", library.display(), case.tag);
            same_as_native(&what, &[main[0].clone(), library], &native, &[], &["one", "two"]);
        }
    }
}

/// The multi-file program with its library object in a static library: the member, pulled for
/// main's references, brings a strong definition of a function main.o defines weakly, which
/// wins as natively (weak=42). Pulled lazily, by main.o's own link, it was a duplicate
/// definition (llvm-jitlink-19 says so too). `orcjit link` now follows, in the symbol tables,
/// which members its objects pull, and adds those that override a weak definition at once.
#[test]
fn a_library_member_s_strong_definition_overrides_an_object_s_weak_one_as_natively() {
    let dir = programs().join("multi");
    for case in [PIC_SMALL, NOPIC_LARGE] {
        let tmp = tempfile::tempdir().unwrap();
        let flags: Vec<&str> = case.compile.iter().copied().chain(["-fcommon"]).collect();
        let objects = compile(tmp.path(), &[dir.join("main.c"), dir.join("lib.c")], &flags);
        let library = tmp.path().join("liblib.a");
        check(&run(Command::new("ar").arg("rcs").arg(&library).arg(&objects[1])), "ar");
        let inputs = [objects[0].clone(), library];
        let native = link_native(tmp.path(), &inputs, case.link, &[]);
        same_as_native(&format!("multi, library ({})", case.tag), &inputs, &native, &[], &["one", "two"]);
    }
}

/// A program that a native link gives `-lz`: without `--dlopen` of libz, the error for the
/// undefined symbol is followed by a note naming the shared library that defines it (found in
/// the loader's default directories) and the `-l` that links it, and loading that library runs
/// the program as natively.
#[test]
fn an_undefined_symbol_a_shared_library_defines_gets_a_note_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[programs().join("zlib/main.c")], &["-O1", "-fPIC"]);
    let stderr = link_fails(&objects);
    let note = stderr.lines().find(|l| l.contains("note: '")).unwrap_or_else(|| panic!("no note: {stderr}"));
    assert!(note.contains("is defined in /") && note.contains("libz.so"), "{stderr}");
    assert!(note.contains(": link it with -lz, or load it with --dlopen "), "{stderr}");
    let library = note.rsplit("--dlopen ").next().unwrap().trim().to_string();
    let native = link_native(tmp.path(), &objects, &[], &["-lz"]);
    same_as_native("zlib", &objects, &native, &[library.as_str()], &[]);
}

/// `-l` and `-L` find libraries as a native link does: zlib's shared library (and its static
/// one, named with `-l:`), a static library in an `-L` directory, and Debian's `libm.so` and
/// `libc.so`, linker scripts that name the real libraries. A library not found, or an `-L`
/// that is not a directory, is an error before anything runs.
#[test]
fn libraries_named_with_l_are_found_as_a_native_link_finds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let zlib = compile(tmp.path(), &[programs().join("zlib/main.c")], &["-O1", "-fPIC"]);
    let native = link_native(tmp.path(), &zlib, &[], &["-lz"]);
    for libs in [&["-lz"][..], &["-l:libz.a"], &["-lc", "-lm", "-lz"]] {
        let inputs: Vec<PathBuf> = zlib.iter().cloned().chain(libs.iter().map(PathBuf::from)).collect();
        same_as_native(&format!("zlib {libs:?}"), &inputs, &native, &[], &[]);
    }
    // Bitcode inputs go to `orcjit run` with the libraries found.
    let lto = tmp.path().join("lto");
    std::fs::create_dir(&lto).unwrap();
    let bitcode = compile(&lto, &[programs().join("zlib/main.c")], &["-O1", "-fPIC", "-flto"]);
    for lib in ["-lz", "-l:libz.a"] {
        same_as_native(&format!("zlib from bitcode, {lib}"), &[bitcode[0].clone(), lib.into()], &native, &[], &[]);
    }

    let dir = programs().join("multi");
    let multi = tmp.path().join("multi");
    std::fs::create_dir(&multi).unwrap();
    let objects = compile(&multi, &[dir.join("main.c"), dir.join("lib.c")], &["-O1", "-fPIC", "-fcommon"]);
    check(&run(Command::new("ar").arg("rcs").arg(multi.join("liblib.a")).arg(&objects[1])), "ar");
    let native = link_native(&multi, &[objects[0].clone(), multi.join("liblib.a")], &[], &[]);
    let inputs = [objects[0].clone(), "-L".into(), multi.clone(), "-llib".into()];
    same_as_native("multi, -L -llib", &inputs, &native, &[], &["one", "two"]);

    let missing = link_fails(&[zlib[0].clone(), "-lno_such_library_9c2".into()]);
    assert!(missing.contains("cannot find -lno_such_library_9c2 (searched "), "{missing}");
    let not_dir = link_fails(&[zlib[0].clone(), "-L".into(), tmp.path().join("none"), "-lz".into()]);
    assert!(not_dir.contains("none: not a directory"), "{not_dir}");
}

/// Two objects that define one strong symbol: the error names the symbol and both objects,
/// as a static linker's "multiple definition" does.
#[test]
fn a_symbol_two_objects_define_is_an_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let late = programs().join("alone/late.c");
    let objects: Vec<PathBuf> = [&one, &two]
        .iter()
        .flat_map(|dir| {
            std::fs::create_dir(dir).unwrap();
            compile(dir, std::slice::from_ref(&late), &["-O1", "-fPIC"])
        })
        .collect();
    let stderr = link_fails(&objects);
    let expected = format!(
        "duplicate definition of 'late_value' in dylib 'main': by '{}', defined by '{}'",
        objects[1].display(),
        objects[0].display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_truncated_static_library_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = programs().join("archive");
    let objects = compile(tmp.path(), &[dir.join("main.c"), dir.join("square.c")], &["-O1", "-fPIC"]);
    let library = tmp.path().join("libcut.a");
    check(&run(Command::new("ar").arg("rcs").arg(&library).arg(&objects[1])), "ar");
    let bytes = std::fs::read(&library).unwrap();
    std::fs::write(&library, &bytes[..bytes.len() - 40]).unwrap();
    for mut jit in link_commands() {
        let out = run(jit.arg(&objects[0]).arg(&library));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("libcut.a: "), "the error names the library: {stderr}");
    }
}

/// `main` ends its thread with `pthread_exit`; the process ends when its other thread does.
#[test]
fn a_main_that_calls_pthread_exit_ends_with_the_program_s_last_thread() {
    program_case("mainexit", &["main.c"], &["-pthread"], &["-pthread"], &[], &[PIC_SMALL]);
}

/// A plugin the program loads with `dlopen` calls the program's functions and uses its data,
/// from its constructor too; the program finds its own symbols with `dlsym` (natively, it is
/// linked with `-Wl,--export-dynamic`).
#[test]
fn a_library_the_program_dlopens_sees_the_program_s_symbols_as_with_export_dynamic() {
    let dir = programs().join("plugin");
    let tmp = tempfile::tempdir().unwrap();
    let plugin = common::shared_library(tmp.path(), "plugin.so", &[dir.join("plugin.c")], &["-O1"]);
    for case in [PIC_SMALL, NOPIC_LARGE] {
        let objects = compile(tmp.path(), &[dir.join("main.c")], case.compile);
        let link: Vec<&str> = case.link.iter().copied().chain(["-Wl,--export-dynamic"]).collect();
        let native = link_native(tmp.path(), &objects, &link, &[]);
        same_as_native(&format!("plugin ({})", case.tag), &objects, &native, &[], &[plugin.to_str().unwrap()]);
    }
}

/// C++ plugins register themselves from static constructors and throw exceptions through the
/// host's frames and back.
#[test]
fn cxx_plugins_register_from_constructors_and_throw_across_the_host_as_natively() {
    let dir = programs().join("cxxplugin");
    let tmp = tempfile::tempdir().unwrap();
    let plugins: Vec<PathBuf> = ["circle", "square"]
        .iter()
        .map(|name| {
            common::shared_library(tmp.path(), &format!("{name}.so"), &[dir.join(format!("{name}.cpp"))], &["-O1"])
        })
        .collect();
    let objects = compile(tmp.path(), &[dir.join("host.cpp")], PIC_SMALL.compile);
    let native = link_native(tmp.path(), &objects, &["-rdynamic"], &[]);
    let args: Vec<&str> = plugins.iter().map(|p| p.to_str().unwrap()).collect();
    same_as_native("cxxplugin", &objects, &native, &["libstdc++.so.6"], &args);
}

/// A program that defines `malloc` and `free` runs, with a warning that libc and shared
/// libraries keep libc's allocator.
#[test]
fn a_program_that_defines_malloc_runs_with_a_warning_that_libraries_keep_libc_s() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[programs().join("allocator/main.c")], PIC_SMALL.compile);
    let native = run(&mut Command::new(link_native(tmp.path(), &objects, &[], &[])));
    for mut jit in link_commands() {
        let out = common::output_within(jit.args(&objects), std::time::Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.stdout, native.stdout, "{stderr}");
        assert!(stderr.contains("warning: the program defines malloc, free: only JIT'd code uses them"), "{stderr}");
    }
}

/// `--argv0` names the program (a wrapper script passes its own path, so that a program that
/// runs itself again runs the wrapper); by default argv[0] is the first object, or MAIN.
#[test]
fn argv0_is_the_first_object_or_main_unless_given() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("argv0.c");
    std::fs::write(&src, "#include <stdio.h>\nint main(int argc, char **argv) { puts(argv[0]); return argc; }\n")
        .unwrap();
    let objects = compile(tmp.path(), std::slice::from_ref(&src), &["-O1", "-fPIC"]);
    let bitcode = tmp.path().join("argv0.bc");
    let out = run(Command::new("clang-19").args(["-O1", "-c", "-emit-llvm"]).arg(&src).arg("-o").arg(&bitcode));
    check(&out, "clang-19 -emit-llvm");
    let mut run_cmd = Command::new(ORCJIT);
    run_cmd.arg("run");
    let [link, link_binary] = link_commands();
    for (mut cmd, input) in [(link, &objects[0]), (link_binary, &objects[0]), (run_cmd, &bitcode)] {
        let default = run(Command::new(cmd.get_program()).args(cmd.get_args()).arg(input).args(["--", "x"]));
        assert_eq!(String::from_utf8_lossy(&default.stdout).trim(), input.to_str().unwrap());
        assert_eq!(default.status.code(), Some(2));
        let named = run(cmd.args(["--argv0", "/opt/bin/tool"]).arg(input));
        assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), "/opt/bin/tool", "{cmd:?}");
    }
}

/// A program's `argv` lives until the process ends (an `atexit` handler reads it), and libc
/// names the program as its `argv[0]` (`err`, `warn` and `error` messages): stdout, stderr and
/// status as a native run, with freed memory scribbled over (`MALLOC_PERTURB_`) so that a
/// freed `argv` shows. Non-PIC code reads the name from a copy made as it links, so it is set
/// before that.
#[test]
fn argv_outlives_main_and_libc_names_the_program_as_its_argv0() {
    let src = programs().join("progname/main.c");
    let args = ["one", "two"];
    for case in [PIC_SMALL, NOPIC_SMALL] {
        let tmp = tempfile::tempdir().unwrap();
        let objects = compile(tmp.path(), std::slice::from_ref(&src), case.compile);
        let native = link_native(tmp.path(), &objects, case.link, &[]);
        let native_run = run(Command::new(&native).args(args).env("MALLOC_PERTURB_", "165"));
        assert!(String::from_utf8_lossy(&native_run.stderr).contains("native: warnx"), "{native_run:?}");
        let [link, link_binary] = link_commands();
        let mut commands = vec![(link, objects[0].clone()), (link_binary, objects[0].clone())];
        if case.tag == PIC_SMALL.tag {
            let bitcode = tmp.path().join("main.bc");
            let out = run(Command::new("clang-19").args(["-O1", "-c", "-emit-llvm"]).arg(&src).arg("-o").arg(&bitcode));
            check(&out, "clang-19 -emit-llvm");
            let mut run_cmd = Command::new(ORCJIT);
            run_cmd.arg("run");
            commands.push((run_cmd, bitcode));
        }
        for (mut cmd, input) in commands {
            cmd.env("MALLOC_PERTURB_", "165").arg("--argv0").arg(&native).arg(input).arg("--").args(args);
            let jit = run(&mut cmd);
            assert_eq!(
                (&jit.stdout, &jit.stderr, jit.status.code()),
                (&native_run.stdout, &native_run.stderr, native_run.status.code()),
                "{} {cmd:?}:\n{}\n{}",
                case.tag,
                String::from_utf8_lossy(&jit.stdout),
                String::from_utf8_lossy(&jit.stderr)
            );
        }
    }
}

#[test]
fn an_undefined_symbol_is_an_error_naming_the_symbol_and_the_object_that_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[programs().join("undef/main.c")], &["-O1", "-fPIC"]);
    let stderr = link_fails(&objects);
    assert!(stderr.contains("undefined symbol '") && stderr.contains("main.o"), "{stderr}");
}

#[test]
fn a_malformed_object_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.o");
    std::fs::write(&bad, b"\x7fELF this is not an object").unwrap();
    let stderr = link_fails(&[bad]);
    assert!(stderr.contains("bad.o"), "{stderr}");
}

/// OpenMP from `gcc -fopenmp`, with GCC's runtime loaded as `-fopenmp` links it
/// (`--dlopen libgomp.so.1`): parallel loops on four threads, thread-locals per worker. Without
/// it, the undefined-symbol error says what to load.
#[test]
fn an_openmp_program_runs_as_native_with_its_runtime_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile_gnu(tmp.path(), &[programs().join("openmp/main.c")], &["-O2", "-fPIC", "-fopenmp"]);
    let native = link_native(tmp.path(), &objects, &[], &["-lgomp"]);
    same_as_native("openmp", &objects, &native, &["libgomp.so.1"], &["one", "two"]);
    let stderr = link_fails(&objects);
    assert!(stderr.contains("--dlopen libgomp.so.1"), "{stderr}");
}

/// 16-byte atomics (a CAS loop from two threads) call libatomic, which a native link adds with
/// `-latomic`: with `--dlopen libatomic.so.1` the program runs as natively; without it, the
/// undefined-symbol error says what to load.
#[test]
fn a_program_of_large_atomics_runs_as_native_with_libatomic_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[programs().join("atomic16/main.c")], &["-O2", "-fPIC", "-pthread", "-w"]);
    let native = link_native(tmp.path(), &objects, &[], &["-latomic", "-pthread"]);
    same_as_native("atomic16", &objects, &native, &["libatomic.so.1"], &[]);
    let stderr = link_fails(&objects);
    assert!(stderr.contains("__atomic_") && stderr.contains("--dlopen libatomic.so.1"), "{stderr}");
}

/// Objects built with `-fprofile-instr-generate` run as their uninstrumented build does, but
/// no profile runtime is linked (clang's driver adds it with `-u__llvm_profile_runtime`; the
/// objects name none of it), so no profile is written: `orcjit link` says so, naming them,
/// rather than leaving the profile missing without a word. Other objects get no warning.
#[test]
fn profile_instrumented_objects_run_with_a_warning_that_no_profile_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = [programs().join("multi/main.c"), programs().join("multi/lib.c")];
    let plain = compile(tmp.path(), &sources, &["-O1", "-fPIC", "-fcommon"]);
    let native = run(Command::new(link_native(tmp.path(), &plain, &[], &[])).arg("one"));
    let quiet = run(Command::new(ORCJIT).arg("link").args(&plain).args(["--", "one"]));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("warning"), "{quiet:?}");

    let dir = tmp.path().join("instrumented");
    std::fs::create_dir(&dir).unwrap();
    let objects = compile(&dir, &sources, &["-O1", "-fPIC", "-fcommon", "-fprofile-instr-generate"]);
    let mut jit = Command::new(ORCJIT);
    jit.current_dir(&dir).arg("link").args(&objects).args(["--", "one"]);
    common::assert_runs_as_native("multi (-fprofile-instr-generate)", &mut jit, &native);
    let stderr = String::from_utf8_lossy(&run(&mut jit).stderr).into_owned();
    assert!(stderr.contains("warning") && stderr.contains("main.o") && stderr.contains("lib.o"), "{stderr}");
    assert!(stderr.contains("-fprofile-instr-generate") && stderr.contains("no profile"), "{stderr}");
}

/// gcc's `-flto` objects hold GIMPLE and no machine code: the error says so, names the object
/// and the flags that make one `orcjit link` can run (it used to say only that `main` was not
/// found). With `-ffat-lto-objects` the program runs as natively.
#[test]
fn a_gcc_lto_object_is_an_error_saying_what_it_holds_and_a_fat_one_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = [programs().join("multi/main.c"), programs().join("multi/lib.c")];
    let slim = compile_gnu(tmp.path(), &sources, &["-O1", "-fPIC", "-fcommon", "-flto"]);
    let stderr = link_fails(&slim);
    assert!(stderr.contains("main.o") && stderr.contains("GCC LTO bytecode"), "{stderr}");
    assert!(stderr.contains("-ffat-lto-objects"), "{stderr}");

    let fat_dir = tmp.path().join("fat");
    std::fs::create_dir(&fat_dir).unwrap();
    let fat = compile_gnu(&fat_dir, &sources, &["-O1", "-fPIC", "-fcommon", "-flto", "-ffat-lto-objects"]);
    let native = link_native(&fat_dir, &fat, &[], &[]);
    same_as_native("multi (gcc, fat LTO objects)", &fat, &native, &[], &["one"]);
}

/// Lua runs a script, and its `require` loads a C module (a shared library calling the Lua API
/// the interpreter defines), as Lua's own build allows by linking with `-Wl,-E`.
#[test]
fn the_lua_interpreter_runs_a_script_and_loads_a_c_module_as_its_native_build_does() {
    let (src, mut sources) = common::lua_sources();
    sources.push(root().join("tests/data/lua/host.c"));
    let include = format!("-I{}", src.display());
    let flags = ["-O1", "-fPIC", "-std=gnu99", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-w", &include];
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &sources, &flags);
    let native = link_native(tmp.path(), &objects, &["-Wl,-E"], &["-lm"]);
    let script = root().join("tests/data/lua/programs.lua");
    same_as_native("lua", &objects, &native, &[], &[script.to_str().unwrap(), "x", "y"]);

    let module = [root().join("tests/data/lua/cmodule.c")];
    common::shared_library(tmp.path(), "cmodule.so", &module, &["-O1", &include]);
    let script = root().join("tests/data/lua/cmodule.lua");
    let args = [script.to_str().unwrap(), tmp.path().to_str().unwrap()];
    same_as_native("lua with a C module", &objects, &native, &[], &args);
}

/// SQLite (the amalgamation from `libsqlite3-sys`, about 270,000 lines of C: a bytecode
/// interpreter's switch, tables of function pointers, varargs formatting) with a driver that
/// fills a table and runs queries over it.
#[test]
fn sqlite_runs_queries_as_its_native_build_does() {
    let (src, sources) = common::sqlite_sources();
    let include = format!("-I{}", src.display());
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &sources, &["-O1", "-fPIC", "-w", &include]);
    let native = link_native(tmp.path(), &objects, &[], &["-lm"]);
    same_as_native("sqlite", &objects, &native, &[], &["3000"]);
}

/// `orcjit link` starts without libLLVM (16 ms of loading, more than linking Lua takes); the
/// program it runs looks for it in its own address space. `orcjit-llvm` has it.
#[test]
fn orcjit_link_runs_programs_without_loading_llvm() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("maps.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <string.h>
int main(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[4096];
  int llvm = 0;
  while (maps && fgets(line, sizeof line, maps))
    llvm |= strstr(line, "libLLVM") != NULL;
  printf("libLLVM %s\n", llvm ? "mapped" : "absent");
  return maps == NULL;
}
"#,
    )
    .unwrap();
    let objects = compile(tmp.path(), &[src], &["-O1", "-fPIC"]);
    let [mut orcjit, mut orcjit_llvm] = link_commands();
    let out = run(orcjit.args(&objects));
    check(&out, "orcjit link");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "libLLVM absent\n");
    let out = run(orcjit_llvm.args(&objects));
    check(&out, "orcjit-llvm link");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "libLLVM mapped\n");
}

#[test]
fn an_uncaught_cxx_exception_terminates_the_program_as_natively() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = compile(tmp.path(), &[root().join("tests/data/cxx/uncaught.cpp")], &["-O1", "-fPIC"]);
    let native = run(&mut Command::new(link_native(tmp.path(), &objects, &[], &["-lstdc++"])));
    let jit = run(Command::new(ORCJIT).args(["link", "--dlopen", "libstdc++.so.6"]).args(&objects));
    let stderr = String::from_utf8_lossy(&jit.stderr);
    assert!(stderr.contains("terminate called after throwing an instance of 'std::runtime_error'"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(jit.status.signal(), native.status.signal(), "both end by SIGABRT: {stderr}");
}
