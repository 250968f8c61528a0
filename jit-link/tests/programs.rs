//! Real C and C++ programs compiled by clang-19, linked by jit-link and run in a child
//! process: output and exit status must match the same program linked natively.

mod common;

use common::*;

/// The child side of `run_jit`: a no-op unless this process was started as a runner.
#[test]
fn child() {
    child_entry();
}

struct Config {
    tag: &'static str,
    flags: &'static [&'static str],
    link: &'static [&'static str],
}

const PIC_SMALL: Config = Config { tag: "pic-small", flags: &["-O1", "-fPIC", "-mcmodel=small"], link: &[] };
const PIC_LARGE: Config = Config { tag: "pic-large", flags: &["-O1", "-fPIC", "-mcmodel=large"], link: &[] };
const PIC_SMALL_O0: Config = Config { tag: "pic-small-O0", flags: &["-O0", "-fPIC", "-mcmodel=small"], link: &[] };
const PIC_SMALL_NOPLT_DEBUG: Config =
    Config { tag: "pic-small-noplt-g", flags: &["-O1", "-fPIC", "-fno-plt", "-g"], link: &[] };
const PIC_LARGE_NOPLT: Config =
    Config { tag: "pic-large-noplt", flags: &["-O2", "-fPIC", "-mcmodel=large", "-fno-plt"], link: &[] };
const NOPIC_LARGE: Config =
    Config { tag: "nopic-large", flags: &["-O1", "-fno-pic", "-mcmodel=large"], link: &["-no-pie"] };
/// Absolute 32-bit addresses (linked into memory placed low) and PC-relative reads of libc's
/// data (read-only copies), as a native `-no-pie` build has them through copy relocations.
const NOPIC_SMALL: Config =
    Config { tag: "nopic-small", flags: &["-O1", "-fno-pic", "-mcmodel=small"], link: &["-no-pie"] };
const NOPIC_SMALL_O0: Config =
    Config { tag: "nopic-small-O0", flags: &["-O0", "-fno-pic", "-mcmodel=small"], link: &["-no-pie"] };

/// Builds `program` both ways under each configuration and compares the runs.
fn same_as_native(program: &str, sources: &[&str], extra: &[&str], link: &[&str], libs: &[&str], configs: &[Config]) {
    for config in configs {
        let mut flags: Vec<&str> = config.flags.to_vec();
        flags.extend_from_slice(extra);
        let tag = format!("{}-{}", program, config.tag);
        let objects = compile(program, sources, &flags, config.tag);
        let mut link_flags: Vec<&str> = config.link.to_vec();
        link_flags.extend_from_slice(link);
        let exe = build_native(program, sources, &flags, &link_flags, config.tag);
        let native = run_native(&exe);
        let (jit, stderr) = run_jit(&objects, &tag, libs, "child");
        assert_eq!(
            jit, native,
            "{program} ({}): jit-link run differs from native run; child stderr:\n{stderr}",
            config.tag
        );
    }
}

#[test]
fn multi_file_c_program_with_cross_object_calls_data_weak_and_common_symbols_runs_as_native() {
    same_as_native(
        "multi",
        &["main.c", "lib.c"],
        &["-fcommon"],
        &[],
        &[],
        &[
            PIC_SMALL,
            PIC_LARGE,
            PIC_SMALL_O0,
            PIC_SMALL_NOPLT_DEBUG,
            PIC_LARGE_NOPLT,
            NOPIC_LARGE,
            NOPIC_SMALL,
            NOPIC_SMALL_O0,
        ],
    );
}

#[test]
fn constructors_destructors_and_atexit_run_in_native_priority_order() {
    let ctors_dtors =
        Config { tag: "pic-small-ctors-sections", flags: &["-O1", "-fPIC", "-fno-use-init-array"], link: &[] };
    same_as_native(
        "ctors",
        &["main.c", "other.c"],
        &[],
        &[],
        &[],
        &[PIC_SMALL, PIC_LARGE, NOPIC_LARGE, ctors_dtors, NOPIC_SMALL, NOPIC_SMALL_O0],
    );
}

#[test]
fn cxx_comdat_static_objects_and_exceptions_across_objects_run_as_native() {
    same_as_native(
        "cxx",
        &["main.cpp", "other.cpp"],
        &[],
        &["-lstdc++"],
        &["libstdc++.so.6", "libm.so.6"],
        &[
            PIC_SMALL,
            PIC_LARGE,
            PIC_SMALL_O0,
            PIC_SMALL_NOPLT_DEBUG,
            PIC_LARGE_NOPLT,
            NOPIC_LARGE,
            NOPIC_SMALL,
            NOPIC_SMALL_O0,
        ],
    );
}

/// A 5 GiB array, more than any memory manager's reservation holds (2 GiB at most), links
/// under the medium and large code models, which put it in a large data section (`.lbss`)
/// that code reaches through 64-bit addresses: the linker allocates large data apart from the
/// manager. Initialized large data pointing at code and into the array, and a read-only
/// table, are relocated and protected there. (llvm-jitlink-19 links the large-model objects
/// by mapping and zeroing all 5 GiB, and refuses the medium-model ones: its GOT lands out of
/// the code's reach.)
#[test]
fn data_larger_than_any_reservation_links_apart_under_the_medium_and_large_code_models() {
    let pic_medium = Config { tag: "pic-medium", flags: &["-O1", "-fPIC", "-mcmodel=medium"], link: &[] };
    let nopic_medium =
        Config { tag: "nopic-medium", flags: &["-O1", "-fno-pic", "-mcmodel=medium"], link: &["-no-pie"] };
    same_as_native("hugearray", &["main.c"], &[], &[], &[], &[PIC_LARGE, NOPIC_LARGE, pic_medium, nopic_medium]);
}

#[test]
fn thread_locals_used_from_several_threads_run_as_native() {
    let pic_small_pthread =
        Config { tag: "pic-small", flags: &["-O1", "-fPIC", "-mcmodel=small", "-pthread"], link: &[] };
    let pic_large_pthread =
        Config { tag: "pic-large", flags: &["-O1", "-fPIC", "-mcmodel=large", "-pthread"], link: &[] };
    let pic_o0 = Config { tag: "pic-small-O0", flags: &["-O0", "-fPIC", "-pthread"], link: &[] };
    same_as_native("tls", &["main.c", "other.c"], &[], &[], &[], &[pic_small_pthread, pic_large_pthread, pic_o0]);
}

/// TLS descriptors (`-mtls-dialect=gnu2`, proposed as GCC 16's default on x86-64): each access
/// calls the descriptor's resolver, which must keep every register but `%rax`. The `tls` program
/// runs as natively through them (small and large code models; `tests/link.rs` at the workspace
/// root runs local-dynamic ones, through `_TLS_MODULE_BASE_`); `tlsdesc`'s assembly fills the
/// general and vector registers with patterns around the call, in three threads, while the runtime
/// allocates each thread's block and copies an 8 KiB template (without `xrstor`, the resolver
/// changed %xmm0 and %xmm1 there, and this test failed).
#[test]
fn thread_locals_through_tls_descriptors_run_as_native_and_keep_every_register() {
    const GNU2: Config =
        Config { tag: "pic-gnu2", flags: &["-O1", "-fPIC", "-mtls-dialect=gnu2", "-pthread"], link: &[] };
    const GNU2_LARGE: Config = Config {
        tag: "pic-large-gnu2",
        flags: &["-O1", "-fPIC", "-mcmodel=large", "-mtls-dialect=gnu2", "-pthread"],
        link: &[],
    };
    same_as_native("tls", &["main.c", "other.c"], &[], &[], &[], &[GNU2, GNU2_LARGE]);
    same_as_native("tlsdesc", &["main.c", "other.c", "regs.s"], &[], &[], &[], &[GNU2]);
}

#[test]
fn non_pic_thread_locals_are_rejected_with_a_hint_to_use_fpic() {
    let objects = compile("tls", &["main.c", "other.c"], &["-O1", "-fno-pic", "-pthread"], "nopic-small");
    let err = match link_objects(&objects) {
        Ok(_) => panic!("non-PIC TLS must not link"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("-fPIC"), "{err}");
    assert!(err.contains("main.o"), "{err}");
    assert!(err.contains("R_X86_64_GOTTPOFF") || err.contains("R_X86_64_TPOFF32"), "{err}");
}

/// Local-dynamic code reaching a hidden thread-local variable of another object ties the two
/// objects together (`link_ties`: `orcjit link` and the object layer link them as one graph,
/// one TLS module). Linked apart, the error names the object, the relocation and the variable,
/// and says what to do.
#[test]
fn local_dynamic_thread_locals_tie_objects_and_apart_fail_with_a_clear_error() {
    let objects = compile("tlsld", &["main.c", "between.c", "vars.c"], &["-O1", "-fPIC", "-pthread"], "pic-small");
    let ties: Vec<(Vec<String>, Vec<String>)> = objects.iter().map(|(_, bytes)| jit_link::link_ties(bytes)).collect();
    let tie = |name: &str| jit_link::tls_tie(name.as_bytes());
    for var in ["hits", "total", "name"] {
        assert!(ties[0].1.contains(&tie(var)), "main.o needs {var}: {:?}", ties[0]);
        assert!(ties[2].0.contains(&tie(var)), "vars.o defines {var}: {:?}", ties[2]);
    }
    assert!(!ties[0].0.contains(&tie("calls")), "a static thread-local ties nothing: {:?}", ties[0]);
    assert_eq!(ties[1], (vec![], vec![]), "between.o has no thread-locals");
    assert_eq!(jit_link::enclosure_groups(&ties), vec![vec![0, 2], vec![1]]);

    let err = match link_objects(&objects) {
        Ok(_) => panic!("local-dynamic TLS of another object must not link apart"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("main.o"), "{err}");
    assert!(err.contains("DtpOffset32"), "{err}");
    assert!(["'hits'", "'total'", "'name'"].iter().any(|v| err.contains(v)), "{err}");
    assert!(err.contains("defined in another object") && err.contains("-ftls-model=global-dynamic"), "{err}");
}

#[test]
fn undefined_symbol_error_names_the_symbol_and_the_object_that_needs_it() {
    let objects = compile("undef", &["main.c"], &["-O1", "-fPIC"], "pic");
    let err = match link_objects(&objects) {
        Ok(_) => panic!("an undefined symbol must fail the link"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("undefined symbol 'missing_function'"), "{err}");
    assert!(err.contains("main.o"), "{err}");
    assert!(err.contains(".text"), "{err}");
}

#[test]
fn non_pic_code_reading_stdout_stderr_and_libc_constants_directly_runs_as_native() {
    same_as_native("stdio", &["main.c", "other.c"], &[], &[], &[], &[NOPIC_SMALL, NOPIC_SMALL_O0, PIC_SMALL]);
}

#[test]
fn non_pic_small_model_objects_link_into_low_memory_and_say_so_when_placed_high() {
    // -fno-pic -mcmodel=small code takes addresses as 32-bit immediates (R_X86_64_32); memory
    // above 4 GiB cannot hold them, and the error says what to do.
    let objects =
        compile("multi", &["main.c", "lib.c"], &["-O1", "-fno-pic", "-mcmodel=small", "-fcommon"], "nopic-small");
    assert!(objects.iter().all(|(_, bytes)| jit_link::needs_low_placement(bytes)));
    let err = match link_objects_into(&objects, memory()) {
        Ok(_) => panic!("absolute 32-bit addresses must not link into memory placed anywhere"),
        Err(e) => e,
    };
    assert!(matches!(err, jit_link::LinkError::NeedsLowPlacement { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("R_X86_64_32") && err.contains(".text+0x"), "{err}");
    assert!(err.contains("jit_mem::Placement::Low") && err.contains("-fPIC"), "{err}");
    let (batch, linked) = link_objects_into(&objects, low_memory()).expect("links into low memory");
    let main = batch.address_of("main").expect("main");
    assert!(main.0 < jit_mem::LOW_PLACEMENT_LIMIT, "{main}");
    // PIC objects need nothing of the kind.
    let pic = compile("multi", &["main.c", "lib.c"], &["-O1", "-fPIC", "-fcommon"], "pic-small");
    assert!(pic.iter().all(|(_, bytes)| !jit_link::needs_low_placement(bytes)));
    drop(linked);
}

#[test]
fn a_variable_libc_writes_after_the_link_is_an_error_naming_it_and_where_non_pic_code_reads_it() {
    for opt in ["-O1", "-O0"] {
        let objects = compile("mutable", &["optind.c"], &[opt, "-fno-pic", "-mcmodel=small"], &format!("nopic{opt}"));
        let err = match link_objects(&objects) {
            Ok(_) => panic!("{opt}: optind must not be copied"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with("optind.o: R_X86_64_"), "{opt}: {err}");
        assert!(err.contains("at .text+0x") && err.contains("(main+0x"), "{opt}: {err}");
        assert!(err.contains("refers to 'optind'") && err.contains("may change after the link"), "{opt}: {err}");
        assert!(err.contains("-fPIC"), "{opt}: {err}");
    }
}

#[test]
fn a_store_to_a_variable_non_pic_code_can_only_have_a_copy_of_is_an_error() {
    for opt in ["-O1", "-O0"] {
        let objects = compile("mutable", &["assign.c"], &[opt, "-fno-pic", "-mcmodel=small"], &format!("nopic{opt}"));
        let err = match link_objects(&objects) {
            Ok(_) => panic!("{opt}: a store to stdout must not go to a copy"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with("assign.o: R_X86_64_") && err.contains("(main+0x"), "{opt}: {err}");
        assert!(err.contains("refers to 'stdout'") && err.contains("the code stores to it"), "{opt}: {err}");
    }
}
