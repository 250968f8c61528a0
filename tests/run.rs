//! `orcjit run` runs programs compiled to LLVM bitcode exactly as their native builds run:
//! C and C++ programs (exceptions across modules, COMDAT, static constructors, a module reached
//! only by its constructor, thread-local variables used from several threads, `std::call_once`,
//! `fork`, signals) and the Lua 5.4
//! interpreter, at two code generation levels, with 1 and 2 threads, cold and with a warm
//! object cache. Bad input is reported with LLVM's diagnostic and a failure status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ORCJIT: &str = env!("CARGO_BIN_EXE_orcjit");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn is_cxx(src: &Path) -> bool {
    src.extension().is_some_and(|e| e == "cpp")
}

/// Compiles each source to bitcode and to an object in `dir`; links the objects natively.
fn build(dir: &Path, sources: &[PathBuf], flags: &[&str], libs: &[&str]) -> (Vec<PathBuf>, PathBuf) {
    let mut bitcode = Vec::new();
    let mut objects = Vec::new();
    for src in sources {
        let cc = if is_cxx(src) { "clang++-19" } else { "clang-19" };
        let stem = src.file_stem().unwrap().to_str().unwrap();
        let bc = dir.join(format!("{stem}.bc"));
        let obj = dir.join(format!("{stem}.o"));
        check(&run(Command::new(cc).args(flags).args(["-c", "-emit-llvm"]).arg(src).arg("-o").arg(&bc)), "compile .bc");
        check(&run(Command::new(cc).args(flags).arg("-c").arg(src).arg("-o").arg(&obj)), "compile .o");
        bitcode.push(bc);
        objects.push(obj);
    }
    let exe = dir.join("native");
    check(&run(Command::new("clang++-19").args(&objects).arg("-o").arg(&exe).args(libs)), "native link");
    (bitcode, exe)
}

/// `orcjit run [options] --extra-module=... main.bc args` against the native run, under a
/// watchdog: a program that hangs under the JIT fails the test instead of stalling it.
fn same_as_native(what: &str, bitcode: &[PathBuf], native: &Path, options: &[&str], args: &[&str]) {
    let expected = run(Command::new(native).args(args));
    let mut cmd = Command::new(ORCJIT);
    cmd.arg("run").args(options);
    for extra in &bitcode[1..] {
        cmd.arg(format!("--extra-module={}", extra.display()));
    }
    common::assert_runs_as_native(&format!("{what} {options:?}"), cmd.arg(&bitcode[0]).args(args), &expected);
}

fn program(dir: &str, sources: &[&str], flags: &[&str], libs: &[&str], options: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let srcs: Vec<PathBuf> = sources.iter().map(|s| root().join(dir).join(s)).collect();
    let (bitcode, native) = build(tmp.path(), &srcs, flags, libs);
    for threads in ["1", "2"] {
        let mut opts = vec!["--threads", threads];
        opts.extend_from_slice(options);
        same_as_native(dir, &bitcode, &native, &opts, &["a", "b"]);
    }
}

#[test]
fn cxx_exceptions_comdat_and_static_objects_run_from_bitcode_as_native() {
    let p = &["-O1", "-fPIC"];
    program(
        "jit-link/tests/programs/cxx",
        &["main.cpp", "other.cpp"],
        p,
        &["-lstdc++"],
        &["--dlopen", "libstdc++.so.6"],
    );
}

#[test]
fn constructors_and_destructors_run_from_bitcode_in_native_order() {
    program("jit-link/tests/programs/ctors", &["main.c", "other.c"], &["-O1", "-fPIC"], &[], &[]);
}

#[test]
fn a_module_reached_only_by_its_static_constructor_is_compiled_and_initialized() {
    let p = &["-O1", "-fPIC"];
    program("tests/data/registry", &["main.cpp", "plugins.cpp"], p, &["-lstdc++"], &["--dlopen", "libstdc++.so.6"]);
}

#[test]
fn thread_local_variables_from_bitcode_work_from_several_threads() {
    program("jit-link/tests/programs/tls", &["main.c", "other.c"], &["-O1", "-fPIC", "-pthread"], &["-pthread"], &[]);
}

/// Bitcode built with clang's defaults, as a position-independent executable, gives
/// thread-locals the initial- and local-exec models, which JIT'd code cannot use (they address
/// the process's static TLS block): `orcjit run` compiles it with the dynamic models instead,
/// in every mode, function partitions included. C thread-locals across modules, and C++ ones
/// with dynamic initializers beside libstdc++'s own. (lli-19 compiles thread-locals to
/// emulated TLS instead.)
#[test]
fn thread_locals_of_bitcode_built_as_a_pie_work_in_every_mode() {
    for (dir, sources, libs, dlopen) in [
        ("jit-link/tests/programs/tls", ["main.c", "other.c"], &["-pthread"][..], &[][..]),
        (
            "jit-link/tests/programs/cxxonce",
            ["main.cpp", "other.cpp"],
            &["-lstdc++", "-pthread"],
            &["--dlopen", "libstdc++.so.6"],
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let srcs: Vec<PathBuf> = sources.iter().map(|s| root().join(dir).join(s)).collect();
        let (bitcode, native) = build(tmp.path(), &srcs, &["-O1", "-pthread"], libs);
        let modes: Vec<Vec<&str>> = MODES.iter().map(|m| [dlopen, m].concat()).collect();
        let modes: Vec<&[&str]> = modes.iter().map(Vec::as_slice).collect();
        every_mode(dir, &bitcode, &native, &modes, &["a"]);
    }
}

#[test]
fn cxx_call_once_and_async_from_bitcode_reach_libstdcxx_thread_locals() {
    let flags = &["-O1", "-fPIC", "-pthread"];
    let libs = &["-lstdc++", "-pthread"];
    program(
        "jit-link/tests/programs/cxxonce",
        &["main.cpp", "other.cpp"],
        flags,
        libs,
        &["--dlopen", "libstdc++.so.6"],
    );
}

/// Runs the program whose sources are in `dir` from bitcode as [`same_as_native`] does, in
/// each of `modes` and with 1 and 2 threads.
fn same_as_native_in_every_mode(dir: &str, sources: &[&str], modes: &[&[&str]]) {
    let tmp = tempfile::tempdir().unwrap();
    let srcs: Vec<PathBuf> = sources.iter().map(|s| root().join(dir).join(s)).collect();
    let (bitcode, native) = build(tmp.path(), &srcs, &["-O1", "-fPIC"], &[]);
    every_mode(dir, &bitcode, &native, modes, &["a"]);
}

fn every_mode(what: &str, bitcode: &[PathBuf], native: &Path, modes: &[&[&str]], args: &[&str]) {
    for options in modes {
        for threads in ["1", "2"] {
            let mut opts = vec!["--threads", threads];
            opts.extend_from_slice(options);
            same_as_native(what, bitcode, native, &opts, args);
        }
    }
}

/// Every way `orcjit run` compiles: lazily (the default, two tiers), one tier, speculating,
/// per module, and everything up front.
const MODES: &[&[&str]] = &[&[], &["--tier-up", "1"], &["--speculate=static"], &["--lazy=module"], &["--lazy=none"]];

/// A plugin the program loads with `dlopen` calls the program's functions and uses its data
/// (natively the program is linked with `--export-dynamic`), from its constructor too: there,
/// the loader's lock is held while a lazily compiled function is compiled and linked.
#[test]
fn a_library_the_program_dlopens_sees_the_program_s_symbols_in_every_mode() {
    let dir = "jit-link/tests/programs/plugin";
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, native) = build(tmp.path(), &[root().join(dir).join("main.c")], &["-O1", "-fPIC"], &["-rdynamic"]);
    let plugin = common::shared_library(tmp.path(), "plugin.so", &[root().join(dir).join("plugin.c")], &["-O1"]);
    every_mode(dir, &bitcode, &native, MODES, &[plugin.to_str().unwrap()]);
}

/// C++ plugins register themselves from static constructors (calling the host while the
/// loader runs them, in the middle of background compiles) and throw exceptions through the
/// host's frames and back.
#[test]
fn cxx_plugins_register_from_constructors_and_throw_across_the_host_in_every_mode() {
    let dir = root().join("jit-link/tests/programs/cxxplugin");
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, native) = build(tmp.path(), &[dir.join("host.cpp")], &["-O1", "-fPIC"], &["-rdynamic"]);
    let plugins: Vec<String> = ["circle", "square"]
        .iter()
        .map(|name| {
            let src = [dir.join(format!("{name}.cpp"))];
            let lib = common::shared_library(tmp.path(), &format!("{name}.so"), &src, &["-O1"]);
            lib.to_str().unwrap().to_string()
        })
        .collect();
    let args: Vec<&str> = plugins.iter().map(String::as_str).collect();
    for options in MODES {
        for threads in ["1", "2"] {
            let mut opts = vec!["--threads", threads, "--dlopen", "libstdc++.so.6"];
            opts.extend_from_slice(options);
            same_as_native("cxxplugin", &bitcode, &native, &opts, &args);
        }
    }
}

/// Objects and static libraries beside bitcode (`--extra-object`, `--extra-archive`, as lli's
/// options): a static library's members are linked only when needed, and non-PIC objects
/// (absolute 32-bit addresses) link too.
#[test]
fn extra_objects_and_static_libraries_link_with_the_bitcode_as_natively() {
    let programs = root().join("jit-link/tests/programs");
    let tmp = tempfile::tempdir().unwrap();
    let compile = |src: PathBuf, flags: &[&str], out: &str| {
        let obj = tmp.path().join(out);
        check(&run(Command::new("clang-19").args(flags).arg("-c").arg(&src).arg("-o").arg(&obj)), "compile .o");
        obj
    };
    let members: Vec<PathBuf> = ["square", "chain_a", "chain_b", "dup", "broken"]
        .iter()
        .map(|m| compile(programs.join(format!("archive/{m}.c")), &["-O1", "-fPIC"], &format!("{m}.o")))
        .collect();
    let library = tmp.path().join("libparts.a");
    check(&run(Command::new("ar").arg("rcs").arg(&library).args(&members)), "ar");
    let lib_arg = library.to_str().unwrap();
    let (main_bc, native) = build(tmp.path(), &[programs.join("archive/main.c")], &["-O1", "-fPIC"], &[lib_arg]);
    let archive = format!("--extra-archive={lib_arg}");
    for options in [&[][..], &["--lazy=none"]] {
        let mut opts = vec![archive.as_str()];
        opts.extend_from_slice(options);
        same_as_native("archive", &main_bc, &native, &opts, &["one", "two"]);
    }

    for (tag, flags) in [("pic", &["-O1", "-fPIC", "-fcommon"][..]), ("nopic", &["-O1", "-fno-pic", "-fcommon"][..])] {
        let dir = tmp.path().join(tag);
        std::fs::create_dir(&dir).unwrap();
        let lib = compile(programs.join("multi/lib.c"), flags, &format!("lib-{tag}.o"));
        let lib_arg = lib.to_str().unwrap();
        let main = [programs.join("multi/main.c")];
        let (bitcode, native) = build(&dir, &main, &["-O1", "-fPIC", "-fcommon"], &[lib_arg, "-no-pie"]);
        let object = format!("--extra-object={lib_arg}");
        same_as_native(&format!("multi ({tag})"), &bitcode, &native, &[object.as_str()], &["a", "b"]);
    }
}

/// A program that rebuilds the static library it was started with, in place and shorter (as
/// GNU `ar` rewrites one), then first calls a function that needs one of its members: compiled
/// lazily, that function links the member only now, from the bytes read at the start. (With
/// the library mapped instead, its bytes changed under the JIT: "not a 64-bit ELF file", or a
/// fault past the file's new end.)
#[test]
fn a_static_library_rebuilt_while_the_program_runs_still_links_as_it_was_read() {
    let programs = root().join("jit-link/tests/programs");
    let tmp = tempfile::tempdir().unwrap();
    let late = tmp.path().join("late.o");
    let mut compile = Command::new("clang-19");
    compile.args(["-O1", "-fPIC", "-c"]).arg(programs.join("alone/late.c")).arg("-o").arg(&late);
    check(&run(&mut compile), "compile late.o");
    let pristine = tmp.path().join("pristine.a");
    check(&run(Command::new("ar").arg("rcs").arg(&pristine).arg(&late)), "ar");
    let (bitcode, native) =
        build(tmp.path(), &[programs.join("rebuilt/main.c")], &["-O1", "-fPIC"], &[pristine.to_str().unwrap()]);
    let library = tmp.path().join("liblate.a");
    for options in [&[][..], &["--tier-up", "1"], &["--threads", "1"]] {
        // Each run, native or not, truncates the library it is given: a fresh copy each.
        std::fs::copy(&pristine, &library).unwrap();
        let expected = run(Command::new(&native).arg(&library));
        std::fs::copy(&pristine, &library).unwrap();
        let mut cmd = Command::new(ORCJIT);
        cmd.arg("run").arg(format!("--extra-archive={}", library.display())).args(options);
        common::assert_runs_as_native(&format!("rebuilt {options:?}"), cmd.arg(&bitcode[0]).arg(&library), &expected);
    }
}

/// A static library of LLVM bitcode, as an `-flto` build makes one (`clang -flto -c`, then
/// `llvm-ar`, which indexes the members' symbols): a member a lookup needs is compiled as a
/// module is, in every mode, and the others are never read, as natively with LTO
/// (lli-19 refuses such a library: "not recognized as a valid object file").
#[test]
fn a_static_library_of_bitcode_members_links_as_natively_in_every_mode() {
    let programs = root().join("jit-link/tests/programs/archive");
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, mut objects) = (Vec::new(), Vec::new());
    for m in ["square", "chain_a", "chain_b", "dup", "broken"] {
        let (src, bc, obj) =
            (programs.join(format!("{m}.c")), tmp.path().join(format!("{m}.bc.o")), tmp.path().join(format!("{m}.o")));
        check(
            &run(Command::new("clang-19").args(["-O1", "-fPIC", "-flto", "-c"]).arg(&src).arg("-o").arg(&bc)),
            "clang -flto",
        );
        check(&run(Command::new("clang-19").args(["-O1", "-fPIC", "-c"]).arg(&src).arg("-o").arg(&obj)), "clang");
        members.push(bc);
        objects.push(obj);
    }
    let (library, native_library) = (tmp.path().join("libparts-lto.a"), tmp.path().join("libparts.a"));
    check(&run(Command::new("llvm-ar-19").arg("rcs").arg(&library).args(&members)), "llvm-ar");
    check(&run(Command::new("ar").arg("rcs").arg(&native_library).args(&objects)), "ar");
    let native_arg = native_library.to_str().unwrap();
    let (main_bc, native) = build(tmp.path(), &[programs.join("main.c")], &["-O1", "-fPIC"], &[native_arg]);
    let archive = format!("--extra-archive={}", library.display());
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain([archive.as_str()]).collect();
        same_as_native("archive of bitcode", &main_bc, &native, &options, &["one", "two"]);
    }
}

/// A forked child gets its own copy of JIT'd variables, and compiles the functions its parent
/// has not called yet although the parent's pool threads do not exist in it.
#[test]
fn a_forked_child_gets_its_own_variables_and_compiles_what_it_calls() {
    same_as_native_in_every_mode("jit-link/tests/programs/fork", &["main.c", "other.c"], MODES);
}

/// `pthread_atfork` and `at_quick_exit` handlers run as natively, compiled when first called
/// (a child handler in the child).
#[test]
fn pthread_atfork_and_at_quick_exit_handlers_run_as_natively() {
    same_as_native_in_every_mode("jit-link/tests/programs/atfork", &["main.c", "other.c"], MODES);
}

/// Indirect functions (`ifunc`, `target_clones`) resolve on their first call, with the
/// caller's arguments intact, in every way of compiling (see `jit-link/tests/programs/ifunc`).
#[test]
fn indirect_functions_run_as_natively() {
    same_as_native_in_every_mode("jit-link/tests/programs/ifunc", &["main.c", "other.c"], MODES);
}

/// `dladdr` names the program's functions, its stubs' included, as for a native build linked
/// with `-rdynamic` (see `jit-link/tests/programs/dladdr`).
#[test]
fn dladdr_names_jit_d_functions_as_natively() {
    for options in [&[][..], &["--lazy=none"][..], &["--tier-up", "1"][..]] {
        program("jit-link/tests/programs/dladdr", &["main.c"], &["-O1", "-fPIC"], &["-rdynamic"], options);
    }
}

/// `__start_cmds` / `__stop_cmds` enclose the entries of section `cmds` that another module
/// defines, as a static linker makes them: the modules are compiled as one (lli-19 finds no
/// entries at all). So they do when both are objects beside the bitcode (`--extra-object`),
/// linked as one graph, and when the module that walks the table is bitcode and the other an
/// object (a mixed LTO link): the module's object and the other are linked as one graph
/// (lli-19 finds no entries). See `jit-link/tests/programs/startstop`.
#[test]
fn section_bounds_enclose_every_module_s_entries_in_every_mode() {
    let dir = root().join("jit-link/tests/programs/startstop");
    same_as_native_in_every_mode("jit-link/tests/programs/startstop", &["main.c", "more.c"], MODES);
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, native) = build(tmp.path(), &[dir.join("main.c"), dir.join("more.c")], &["-O1", "-fPIC"], &[]);
    let more = format!("--extra-object={}", tmp.path().join("more.o").display());
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain([more.as_str()]).collect();
        same_as_native("startstop (bitcode main, object more)", &bitcode[..1], &native, &options, &[]);
    }
    // A main module of no consequence: `main` is in the objects.
    let aside = tmp.path().join("bitcode");
    std::fs::create_dir(&aside).unwrap();
    let empty = aside.join("empty.c");
    std::fs::write(&empty, "int orcjit_test_unused(void) { return 0; }\n").unwrap();
    let (bitcode, _) = build(&aside, &[empty], &["-O1", "-fPIC"], &["-shared"]);
    let objects: Vec<String> = ["main", "more"]
        .iter()
        .map(|o| format!("--extra-object={}", tmp.path().join(format!("{o}.o")).display()))
        .collect();
    let options: Vec<&str> = objects.iter().map(String::as_str).collect();
    same_as_native("startstop (objects beside bitcode)", &bitcode, &native, &options, &[]);
    // An object between the two runs its constructor between theirs, as natively.
    let three = tmp.path().join("three");
    std::fs::create_dir(&three).unwrap();
    let sources = [dir.join("main.c"), dir.join("between.c"), dir.join("more.c")];
    let (_, native) = build(&three, &sources, &["-O1", "-fPIC"], &[]);
    let objects: Vec<String> = ["main", "between", "more"]
        .iter()
        .map(|o| format!("--extra-object={}", three.join(format!("{o}.o")).display()))
        .collect();
    let options: Vec<&str> = objects.iter().map(String::as_str).collect();
    same_as_native("startstop (three objects beside bitcode)", &bitcode, &native, &options, &[]);
    // A module before an object of no part in its table: the module's constructor first, its
    // destructor last, as natively with the files in that order (they were the other way
    // round: an object took its place in link order when added, a module when compiled).
    let two = tmp.path().join("two");
    std::fs::create_dir(&two).unwrap();
    let (bitcode, native) = build(&two, &[dir.join("main.c"), dir.join("between.c")], &["-O1", "-fPIC"], &[]);
    let between = format!("--extra-object={}", two.join("between.o").display());
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain([between.as_str()]).collect();
        same_as_native("startstop (bitcode main, object between)", &bitcode[..1], &native, &options, &[]);
    }
}

/// Hidden thread-local variables that one module defines and another reaches with the
/// local-dynamic model (one `__tls_get_addr` call for its TLS module's block, then each
/// variable at its offset in it): the two are linked as one module, one TLS module, in every
/// mode; so are the module and the object when the variables are an object's (a mixed LTO
/// link). Apart, the offset had no block to be relative to (the link failed). A third file,
/// tied to neither, runs its constructor after theirs, as natively with the files in this
/// order. See `jit-link/tests/programs/tlsld`.
#[test]
fn hidden_thread_locals_shared_between_modules_run_as_native_in_every_mode() {
    let dir = root().join("jit-link/tests/programs/tlsld");
    let tmp = tempfile::tempdir().unwrap();
    let sources = [dir.join("main.c"), dir.join("vars.c"), dir.join("between.c")];
    let (bitcode, native) = build(tmp.path(), &sources, &["-O1", "-fPIC", "-pthread"], &["-pthread"]);
    every_mode("tlsld", &bitcode, &native, MODES, &["a"]);
    let objects: Vec<String> = ["vars", "between"]
        .iter()
        .map(|o| format!("--extra-object={}", tmp.path().join(format!("{o}.o")).display()))
        .collect();
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain(objects.iter().map(String::as_str)).collect();
        same_as_native("tlsld (bitcode main, objects)", &bitcode[..1], &native, &options, &["a"]);
    }
}

/// The same with the variables' object in a static library (`--extra-archive`): its member
/// joins the module's graph, in every mode; natively the link pulls it for main's references.
#[test]
fn hidden_thread_locals_of_a_static_library_member_run_from_bitcode_as_native() {
    let dir = root().join("jit-link/tests/programs/tlsld");
    let tmp = tempfile::tempdir().unwrap();
    let sources = [dir.join("main.c"), dir.join("vars.c"), dir.join("between.c")];
    let (bitcode, _) = build(tmp.path(), &sources, &["-O1", "-fPIC", "-pthread"], &["-pthread"]);
    let library = tmp.path().join("libvars.a");
    let members = [tmp.path().join("vars.o"), tmp.path().join("between.o")];
    check(&run(Command::new("ar").arg("rcs").arg(&library).args(&members)), "ar");
    let native = tmp.path().join("native-with-library");
    let main = tmp.path().join("main.o");
    check(&run(Command::new("clang-19").arg(main).arg(&library).arg("-pthread").arg("-o").arg(&native)), "link");
    let archive = format!("--extra-archive={}", library.display());
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain([archive.as_str()]).collect();
        same_as_native("tlsld (bitcode main, library)", &bitcode[..1], &native, &options, &["a"]);
    }
}

/// The C++ table of `jit-link/tests/programs/startstopcxx` (entries that throw, COMDAT
/// functions with static locals, constructors and destructors on both sides, a
/// `thread_local`), its walker compiled from bitcode and linked in one graph with the object
/// of the other file, runs as natively.
#[test]
fn a_module_and_an_object_of_one_section_table_link_as_one_graph_in_every_mode() {
    let dir = root().join("jit-link/tests/programs/startstopcxx");
    let tmp = tempfile::tempdir().unwrap();
    let sources = [dir.join("main.cpp"), dir.join("more.cpp")];
    let (bitcode, native) = build(tmp.path(), &sources, &["-O1", "-fPIC", "-pthread"], &["-pthread"]);
    let more = format!("--extra-object={}", tmp.path().join("more.o").display());
    for options in MODES {
        let options: Vec<&str> = options.iter().copied().chain([more.as_str()]).collect();
        same_as_native("startstopcxx (bitcode main, object more)", &bitcode[..1], &native, &options, &[]);
    }
}

/// A reference pinned to one version of a libc symbol binds to that version (lli-19:
/// "Symbols not found"); see `jit-link/tests/programs/symver`.
#[test]
fn versioned_references_bind_as_natively() {
    same_as_native_in_every_mode("jit-link/tests/programs/symver", &["main.c"], &[&[], &["--lazy=none"]]);
}

/// A program with an array larger than the default reservation (1.5 GiB of zero-filled
/// doubles) runs as natively in every mode: `orcjit run` reserves the most that rel32
/// references span (see `jit-link/tests/programs/bigarray`).
#[test]
fn a_program_with_an_array_larger_than_the_default_reservation_runs_as_native() {
    same_as_native_in_every_mode("jit-link/tests/programs/bigarray", &["main.c"], &[&[], &["--lazy=none"]]);
}

/// A program built for the medium or large code model, as it must be natively to keep a 5 GiB
/// array, is compiled for that model in every mode, so its large data goes to sections the
/// linker places apart (see `jit-link/tests/programs/hugearray`). (lli-19 compiles it for the
/// small model, and its link fails: the array is out of the code's reach.)
#[test]
fn a_program_built_for_the_medium_or_large_code_model_keeps_it_in_every_mode() {
    let dir = "jit-link/tests/programs/hugearray";
    for model in ["-mcmodel=medium", "-mcmodel=large"] {
        let tmp = tempfile::tempdir().unwrap();
        let (bitcode, native) = build(tmp.path(), &[root().join(dir).join("main.c")], &["-O1", model], &[]);
        every_mode(&format!("{dir} {model}"), &bitcode, &native, MODES, &["a"]);
    }
}

/// The program starts with a native program's signal state (SIGPIPE, SIGSEGV and SIGBUS at
/// their defaults, no alternate signal stack), not the one Rust's runtime sets up.
#[test]
fn the_program_starts_with_native_signal_dispositions() {
    same_as_native_in_every_mode("jit-link/tests/programs/sigdefaults", &["main.c"], &[&[], &["--lazy=none"]]);
}

/// A `clone` child made with SIGCHLD alone, a copy of the process with no fork handlers run
/// (googletest's "threadsafe" death tests), compiles what it calls, and runs none of the
/// program's `pthread_atfork` handlers.
#[test]
fn a_clone_child_compiles_what_it_calls_and_runs_no_atfork_handler() {
    same_as_native_in_every_mode("jit-link/tests/programs/clone", &["main.c"], MODES);
}

/// Signal handlers interrupt code that allocates; each is compiled when it is installed, not
/// on its first call inside the signal.
#[test]
fn profiling_signal_handlers_run_while_the_program_allocates() {
    same_as_native_in_every_mode("jit-link/tests/programs/sigprof", &["main.c"], &[&[], &["--tier-up", "1"]]);
}

/// A signal handler calls functions nothing else calls, one new one on each tick, while the
/// program allocates: installing it compiles everything it can reach (it hung every time when
/// only the handler itself was compiled).
#[test]
fn what_a_signal_handler_calls_is_compiled_when_it_is_installed() {
    same_as_native_in_every_mode("jit-link/tests/programs/sighandler", &["main.c"], MODES);
    // Installed by `__sysv_signal` (C11's `signal`), again inside each signal.
    same_as_native_in_every_mode("jit-link/tests/programs/sighandler", &["sysv.c"], &[&[], &["--tier-up", "1"]]);
}

/// A thread's `pthread_key_create` destructor, which runs after the thread's thread-locals are
/// destroyed, calls a function compiled then.
#[test]
fn a_key_destructor_at_thread_exit_calls_a_function_compiled_then() {
    let sources = ["main.c", "in_thread.c", "at_exit.c"];
    same_as_native_in_every_mode("jit-link/tests/programs/keydtor", &sources, MODES);
}

/// JIT'd thread-local variables stay readable in key destructors and `atexit` handlers.
#[test]
fn thread_locals_stay_readable_in_key_destructors_and_at_exit() {
    same_as_native_in_every_mode("jit-link/tests/programs/tlslate", &["main.c", "other.c"], MODES);
}

/// A `vfork` child runs functions its parent has not called yet, then exits or execs, as
/// CPython's `subprocess` does. JIT'd code's `vfork` is a `fork` (see `jit_layers::vfork`): a
/// vfork child would share the JIT's memory with the parent's pool threads.
#[test]
fn a_vfork_child_compiles_what_it_calls_before_it_execs() {
    same_as_native_in_every_mode("jit-link/tests/programs/vfork", &["main.c", "other.c"], MODES);
}

/// A library's `vfork` is a `fork` too: the `orcjit` command defines and exports `vfork`, which
/// the loader binds libraries to before libc's. The child calls the program (compiled in the
/// child) and writes the library's variable, which its parent, a copy's, does not see (the one
/// difference from a native run, where it would).
#[test]
fn a_library_s_vfork_child_is_a_copy_that_compiles_what_it_calls() {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
    let dir = root().join("jit-link/tests/programs/vfork");
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, _) = build(tmp.path(), &[dir.join("host.c")], &["-O1", "-fPIC"], &["-rdynamic"]);
    let library = common::shared_library(tmp.path(), "library.so", &[dir.join("library.c")], &["-O1"]);
    for mode in MODES {
        let mut cmd = Command::new(ORCJIT);
        let out = common::output_within(cmd.arg("run").args(*mode).arg(&bitcode[0]).arg(&library), LIMIT);
        check(&out, &format!("vfork from a library {mode:?}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout, "child exited 19, parent saw its write: 0\n", "{mode:?}");
    }
}

/// A timer's SIGALRM and a child's SIGCHLD reach the program's thread, never a pool thread
/// (where a lazily compiled handler would wait for a compile that thread had to finish).
#[test]
fn process_signals_reach_the_program_s_thread() {
    same_as_native_in_every_mode("jit-link/tests/programs/signals", &["main.c"], MODES);
}

/// `main` ends its thread with `pthread_exit`: the process ends (as `exit(0)`) when the
/// program's last thread does, although the JIT's pool threads never end.
#[test]
fn a_main_that_calls_pthread_exit_ends_with_the_program_s_last_thread() {
    same_as_native_in_every_mode("jit-link/tests/programs/mainexit", &["main.c"], MODES);
}

#[test]
fn malformed_bitcode_is_reported_with_llvm_s_diagnostic_and_a_failure_status() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.bc");
    std::fs::write(&bad, b"BC\xC0\xDE garbage").unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.bc: invalid bitcode"), "{stderr}");
    let text = tmp.path().join("bad.ll");
    std::fs::write(&text, "define i32 @main() {\n  ret i32 zero\n}\n").unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&text));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.ll: invalid IR: ") && stderr.contains("bad.ll:2:"), "{stderr}");
}

#[test]
fn a_missing_symbol_names_the_module_that_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ll = tmp.path().join("needy.ll");
    std::fs::write(
        &ll,
        "declare i32 @not_anywhere()\ndefine i32 @main() {\n  %r = call i32 @not_anywhere()\n  ret i32 %r\n}\n",
    )
    .unwrap();
    let out = run(Command::new(ORCJIT).arg("run").arg(&ll));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("undefined symbol 'not_anywhere' referenced from") && stderr.contains("needy.ll"),
        "{stderr}"
    );
}

#[test]
fn the_lua_interpreter_from_bitcode_runs_as_native_at_two_levels_threads_and_with_a_warm_cache() {
    let (src, mut sources) = common::lua_sources();
    sources.insert(0, root().join("tests/data/lua/host.c"));
    let include = format!("-I{}", src.display());
    let flags = ["-O1", "-fPIC", "-std=gnu99", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", "-w", &include];
    let tmp = tempfile::tempdir().unwrap();
    let (bitcode, native) = build(tmp.path(), &sources, &flags, &["-lm"]);
    let script = root().join("tests/data/lua/programs.lua");
    let args = [script.to_str().unwrap(), "x", "y"];
    for level in ["-O0", "-O2"] {
        for threads in ["1", "2"] {
            same_as_native("lua", &bitcode, &native, &[level, "--threads", threads], &args);
        }
    }
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    for round in ["cold", "warm"] {
        same_as_native(&format!("lua ({round} cache)"), &bitcode, &native, &["--cache", cache], &args);
    }
}

/// A C program of about 50,000 IR instructions at -O0 (so `orcjit run` splits it across
/// threads): static functions calling each other, static variables and string constants used
/// from many functions (one of them thread-local), a table of function pointers, computed goto
/// (`blockaddress`), a function-local static and a static constructor.
fn big_program(functions: usize) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stdint.h>\n#include <string.h>\n\
         static uint64_t counter;\nstatic __thread uint64_t tcount;\nstatic int initialized;\n\
         static const char *const words[] = {\"alpha\", \"beta\", \"gamma\", \"delta\"};\n\
         __attribute__((constructor)) static void init(void) { initialized = 7; }\n",
    );
    for i in 0..functions {
        c += &format!("static uint64_t f{i}(uint64_t x);\n");
    }
    for i in 0..functions {
        let (a, b) = (i / 2, i / 3);
        let calls = if i == 0 {
            String::new()
        } else {
            format!("if (x & 1) y += f{a}(x >> 1);\n  if (x & 2) y ^= f{b}(x >> 2);")
        };
        c += &format!(
            "static uint64_t f{i}(uint64_t x) {{\n  uint64_t y = x * {m} + {i};\n  \
             for (int k = 0; k < (int)(x % 5); k++) {{ y = (y << 3) ^ (y >> 7) ^ (uint64_t)k; }}\n  \
             switch (y % 4) {{ case 0: y += strlen(words[0]); break; case 1: y -= {i}; break;\n    \
             case 2: y ^= (uint64_t)words[2][1]; break; default: counter += 1; tcount += 2; }}\n  {calls}\n  return y;\n}}\n",
            m = 2 * i + 1
        );
    }
    c += "static uint64_t (*const table[])(uint64_t) = {";
    for i in 0..functions {
        c += &format!("f{i},");
    }
    c += "};\n\
          static int computed(int op, int x) {\n  static void *const labels[] = {&&inc, &&dbl, &&dec};\n  \
          goto *labels[op % 3];\ninc: return x + 1;\ndbl: return x * 2;\ndec: return x - 3;\n}\n\
          static int calls(void) { static int n; return ++n; }\n\
          int main(void) {\n  uint64_t sum = 0;\n  \
          for (unsigned i = 0; i < sizeof table / sizeof table[0]; i++) sum += table[i](i * 2654435761u);\n  \
          int g = 0;\n  for (int op = 0; op < 9; op++) g = computed(op, g + op);\n  calls(); calls();\n  \
          printf(\"sum %llu counter %llu tls %llu init %d goto %d calls %d %s\\n\", (unsigned long long)sum,\n         \
          (unsigned long long)counter, (unsigned long long)tcount, initialized, g, calls(), words[3]);\n  return (int)(sum % 7);\n}\n";
    c
}

/// A module built with `-g` (its debug info is stripped when it is read), split across
/// threads, compiled lazily and in two tiers.
#[test]
fn a_large_module_with_debug_info_splits_across_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.c");
    std::fs::write(&src, big_program(1200)).unwrap();
    let (bitcode, native) = build(tmp.path(), &[src], &["-O0", "-g", "-fPIC", "-w"], &[]);
    for lazy in ["--lazy=none", "--lazy=module", "--lazy=function"] {
        same_as_native("big -g", &bitcode, &native, &[lazy, "--threads", "2"], &[]);
    }
    // Second-tier compiles read a second copy of the module, from the bitcode the first read
    // kept without debug info: it must split as the first did, or nothing tiers up.
    let opts = ["--lazy=function", "--tier-up", "1", "--threads", "2"];
    same_as_native("big -g, two tiers", &bitcode, &native, &opts, &[]);
    let out = run(Command::new(ORCJIT).arg("run").args(opts).arg("--lazy-stats").arg(&bitcode[0]));
    let stats = String::from_utf8_lossy(&out.stderr);
    let tiered = stats.split(", ").find_map(|p| p.strip_suffix(" tiered up")).unwrap_or_else(|| panic!("{stats}"));
    assert!(tiered.parse::<usize>().unwrap() > 0, "nothing tiered up: {stats}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// Nothing in the JIT reads debug info (the linker skips `.debug_*` sections), so it is
/// stripped before code generation; the objects, as the cache keeps them, show it. Lazily, it
/// matters most: each function's object would carry every compile unit's types and globals.
#[test]
fn objects_compiled_from_modules_with_debug_info_carry_none() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.c");
    std::fs::write(&src, big_program(60)).unwrap();
    let (bitcode, native) = build(tmp.path(), &[src], &["-O0", "-g", "-fPIC", "-w"], &[]);
    for lazy in ["--lazy=none", "--lazy=function"] {
        let cache = tmp.path().join(format!("cache{lazy}"));
        same_as_native("big -g", &bitcode, &native, &[lazy, "--cache", cache.to_str().unwrap()], &[]);
        let objects: Vec<(PathBuf, Vec<u8>)> = files_under(&cache)
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(f).unwrap()))
            .filter(|(_, bytes)| bytes.windows(4).any(|w| w == b"\x7fELF"))
            .collect();
        assert!(!objects.is_empty(), "{lazy}: no object in the cache");
        for (file, bytes) in objects {
            let debug = bytes.windows(7).any(|w| w == b".debug_");
            assert!(!debug, "{lazy}: {} has debug sections", file.display());
        }
    }
}

/// The object cache's store count from `--cache-stats` output.
fn cache_stores(stderr: &str) -> usize {
    let line = stderr.lines().find(|l| l.contains("object cache")).unwrap_or_else(|| panic!("no stats in {stderr}"));
    let stores = line.split(", ").find(|p| p.ends_with(" stores")).unwrap_or_else(|| panic!("no stores in {line}"));
    stores.trim_end_matches(" stores").parse().unwrap()
}

#[test]
fn a_large_module_split_across_threads_runs_as_native_cold_and_warm() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.c");
    std::fs::write(&src, big_program(1200)).unwrap();
    let (bitcode, native) = build(tmp.path(), &[src], &["-O0", "-fPIC", "-w"], &[]);
    for lazy in ["--lazy=none", "--lazy=module", "--lazy=function"] {
        for threads in ["1", "2"] {
            same_as_native("big", &bitcode, &native, &[lazy, "--threads", threads], &[]);
        }
    }
    // Split, the module's objects are stored one per partition plus a record naming them;
    // whole, one object plus a record. Warm runs link what was stored, whichever thread count.
    for (threads, split) in [("1", false), ("2", true)] {
        let cache = tmp.path().join(format!("cache{threads}"));
        let cache = cache.to_str().unwrap();
        let opts = ["--lazy=none", "--threads", threads, "--cache", cache, "--cache-stats"];
        let cold = run(Command::new(ORCJIT).arg("run").args(opts).arg(&bitcode[0]));
        let stores = cache_stores(&String::from_utf8_lossy(&cold.stderr));
        assert_eq!(stores > 2, split, "{threads} thread(s): {stores} cache stores");
        for warm in ["1", "2"] {
            let opts = ["--lazy=none", "--threads", warm, "--cache", cache];
            same_as_native("big (warm cache)", &bitcode, &native, &opts, &[]);
        }
    }
    // Lazily, each function called is an object of its own (its first tier, and its second if
    // it got hot); a warm run compiles nothing, in one tier or two.
    for tier_up in ["0", "1000"] {
        let cache = tmp.path().join(format!("cache-lazy-{tier_up}"));
        let cache = cache.to_str().unwrap();
        for round in ["cold", "warm"] {
            let opts = ["--lazy=function", "--tier-up", tier_up, "--threads", "2", "--cache", cache, "--lazy-stats"];
            same_as_native(&format!("big, lazy ({round} cache)"), &bitcode, &native, &opts[..7], &[]);
            let out = run(Command::new(ORCJIT).arg("run").args(opts).arg(&bitcode[0]));
            let stats = String::from_utf8_lossy(&out.stderr);
            if round == "warm" {
                assert!(stats.contains(" prepared, 0 partitions compiled"), "tier-up {tier_up}: {stats}");
            }
        }
    }
}
