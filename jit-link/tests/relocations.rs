//! Every supported relocation, from hand-written assembly: each function returns what its
//! relocation computed; the test checks it against the addresses of the link, and checks
//! the bytes the GOTPCRELX relaxation rewrote.

mod common;

use common::*;
use jit_mem::TargetAddr;

fn call0(addr: TargetAddr) -> u64 {
    // SAFETY: `addr` is a finalized function of the test's assembly taking no arguments and
    // returning a 64-bit value in %rax.
    let f: extern "C" fn() -> u64 = unsafe { std::mem::transmute(addr.0 as usize) };
    f()
}

fn bytes_at(addr: TargetAddr, len: usize) -> Vec<u8> {
    // SAFETY: `addr` points into finalized, readable code of the link, at least `len` bytes.
    unsafe { std::slice::from_raw_parts(addr.0 as usize as *const u8, len).to_vec() }
}

#[test]
fn every_supported_relocation_computes_the_psabi_value() {
    let _watchdog = Watchdog::start(std::time::Duration::from_secs(120), "relocation test");
    let dir = work_dir("asm");
    let src = programs_dir().join("asm");
    let relocs = dir.join("relocs.o");
    let plain = dir.join("gotpcrel.o");
    clang(&["-c", &src.join("relocs.s").to_string_lossy(), "-o", &relocs.to_string_lossy()]);
    clang(&[
        "-c",
        "-Wa,-mrelax-relocations=no",
        &src.join("gotpcrel.s").to_string_lossy(),
        "-o",
        &plain.to_string_lossy(),
    ]);
    let objects = vec![
        ("relocs.o".to_string(), std::fs::read(&relocs).expect("object")),
        ("gotpcrel.o".to_string(), std::fs::read(&plain).expect("object")),
    ];
    let (batch, linked) = link_objects(&objects).expect("link");
    let at = |name: &str| batch.address_of(name).unwrap_or_else(|| panic!("{name} defined"));
    let data = at("data_obj").0;
    let target = at("target_fn").0;

    assert_eq!(call0(at("target_fn")), 7);
    assert_eq!(call0(at("rex_gotpcrelx_mov")), data, "REX_GOTPCRELX");
    assert_eq!(bytes_at(at("rex_gotpcrelx_mov"), 3), [0x48, 0x8D, 0x05], "mov relaxed to lea");
    assert_eq!(call0(at("gotpcrelx_call")), 7, "GOTPCRELX call");
    assert_eq!(bytes_at(at("gotpcrelx_call").offset(4), 2), [0x67, 0xE8], "call relaxed to addr32 call");
    assert_eq!(call0(at("gotpcrelx_jmp")), 7, "GOTPCRELX jmp");
    let jmp = bytes_at(at("gotpcrelx_jmp"), 6);
    assert_eq!((jmp[0], jmp[5]), (0xE9, 0x90), "jmp relaxed to jmp; nop");
    assert_eq!(call0(at("gotpcrelx_call_far")), 5, "GOTPCRELX to libc");
    assert_eq!(call0(at("plt_call_far")), 6, "PLT32 to libc");
    assert_eq!(call0(at("gotpc32_gotoff64")), data, "GOTPC32 + GOTOFF64");
    assert_eq!(call0(at("gotpc64_got64")), data, "GOTPC64 + GOT64");
    assert_eq!(call0(at("gotpcrel64")), data, "GOTPCREL64");
    assert_eq!(call0(at("pltoff64_local")), 7, "PLTOFF64 local");
    assert_eq!(call0(at("pltoff64_far")), 9, "PLTOFF64 to libc");
    assert_eq!(call0(at("pc64")), data, "PC64");
    assert_eq!(call0(at("abs32")) as u32, 0x12345, "R_X86_64_32");
    assert_eq!(call0(at("abs32s")) as i64, -0x12345, "R_X86_64_32S");
    assert_eq!(call0(at("abs64")), data, "R_X86_64_64 in code");
    assert_eq!(call0(at("weak_missing_address")), 0, "missing weak reference");
    assert_eq!(call0(at("plain_gotpcrel")), data, "GOTPCREL across objects");

    let d = bytes_at(TargetAddr(data), 24);
    let word = |r: std::ops::Range<usize>| d[r].iter().rev().fold(0u64, |a, b| (a << 8) | *b as u64);
    assert_eq!(word(0..8), target, "R_X86_64_64 in data");
    assert_eq!(word(8..12) as u32 as i32 as i64, target as i64 - (data as i64 + 8), "PC32 in data");
    assert_eq!(word(12..14), 0x1234, "R_X86_64_16");
    assert_eq!(word(14..15), 0x56, "R_X86_64_8");
    assert_eq!(word(16..24) as i64, target as i64 - (data as i64 + 16), "PC64 in data");

    // TLS, local- and general-dynamic: one block per thread, initialized from .tdata.
    let ld = call0(at("tls_ld_address"));
    let gd = call0(at("tls_gd_address"));
    assert_ne!(ld, 0);
    assert_eq!(ld, gd, "TLSLD+DTPOFF64 and TLSGD agree");
    // SAFETY: `ld` is this thread's copy of `tls_var`, a 4-byte int.
    unsafe {
        assert_eq!(*(ld as usize as *const i32), 1234);
        *(ld as usize as *mut i32) = 99;
    }
    let ld_addr = at("tls_ld_address");
    let other = std::thread::spawn(move || {
        let p = call0(ld_addr);
        // SAFETY: that thread's copy of `tls_var`.
        (p, unsafe { *(p as usize as *const i32) })
    })
    .join()
    .expect("thread");
    assert_ne!(other.0, ld, "each thread has its own block");
    assert_eq!(other.1, 1234, "a new thread starts from the template");
    // SAFETY: this thread's copy again.
    assert_eq!(unsafe { *(ld as usize as *const i32) }, 99);
    drop(linked);
}

#[test]
fn rustc_objects_of_both_code_models_link_and_run() {
    let _watchdog = Watchdog::start(std::time::Duration::from_secs(120), "rustc objects");
    let src = programs_dir().join("rust").join("lib.rs");
    for (model, code_model) in [("pic", "small"), ("pic", "large"), ("static", "large")] {
        let out = work_dir("rust").join(format!("rust-{model}-{code_model}.o"));
        let status = std::process::Command::new("rustc")
            .args(["--crate-type=lib", "--emit=obj", "--edition", "2024", "-C", "opt-level=2", "-C", "panic=abort"])
            .arg(format!("-Crelocation-model={model}"))
            .arg(format!("-Ccode-model={code_model}"))
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status()
            .expect("run rustc");
        assert!(status.success(), "rustc {model} {code_model}");
        let objects = vec![("lib.o".to_string(), std::fs::read(&out).expect("object"))];
        let (batch, linked) = link_objects(&objects).expect("link rustc object");
        let sum = batch.address_of("rust_sum").expect("rust_sum");
        let counter = batch.address_of("rust_counter").expect("rust_counter");
        let callbacks = batch.address_of("RUST_CALLBACKS").expect("RUST_CALLBACKS");
        // SAFETY: the exported `extern "C"` functions of the Rust object, finalized.
        let sum_fn = unsafe { std::mem::transmute::<usize, extern "C" fn(usize) -> u64>(sum.0 as usize) };
        // SAFETY: as above.
        let counter_fn = unsafe { std::mem::transmute::<usize, extern "C" fn() -> u64>(counter.0 as usize) };
        let pid = std::process::id() as u64;
        assert_eq!(sum_fn(3), 6 + pid, "{model}/{code_model}");
        assert_eq!(sum_fn(9), 10 + pid);
        assert_eq!(counter_fn(), 2);
        // SAFETY: RUST_CALLBACKS is a finalized [extern "C" fn(usize) -> u64; 1].
        let table = unsafe { *(callbacks.0 as usize as *const u64) };
        assert_eq!(table, sum.0, "the function pointer table holds rust_sum's address");
        drop(linked);
    }
}

#[test]
fn an_unsupported_relocation_is_an_error_naming_it_its_section_and_offset() {
    let dir = work_dir("asm-unsupported");
    let s = dir.join("size.s");
    let o = dir.join("size.o");
    std::fs::write(
        &s,
        "        .text\n        .globl f\nf:      nop\n        .reloc ., R_X86_64_SIZE32, f\n        .long 0\n        ret\n",
    )
    .expect("write assembly");
    clang(&["-c", &s.to_string_lossy(), "-o", &o.to_string_lossy()]);
    let err = jit_link::graph_from_elf_object("size.o", &std::fs::read(&o).expect("object"))
        .expect_err("R_X86_64_SIZE32 is not supported")
        .to_string();
    assert_eq!(err, "size.o: unsupported relocation R_X86_64_SIZE32 in .text at offset 0x1");
}
