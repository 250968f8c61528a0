//! Mutated real objects (bit flips, truncations, corrupted headers, section headers, symbols
//! and relocations): every case must give Ok or an error, never a panic, hang or crash,
//! including at an unwind through the unwinder that has the object's frames registered.
//! The cases run in a child process (this binary, re-invoked) under a time limit, so a
//! crash or hang fails the test with the case that caused it.
//!
//! A soak: `FUZZ_SEED=S FUZZ_CASES=N` runs N cases from another seed (the time limit grows with N).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use jit_mem::TargetAddr;

const CASES: u64 = 20_000;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The number of cases (`FUZZ_CASES`, default [`CASES`]).
fn cases() -> u64 {
    env_or("FUZZ_CASES", CASES)
}

/// A small deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(2)).map(|s| u16::from_le_bytes([s[0], s[1]]) as u64).unwrap_or(0)
}
fn u32_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(4)).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64).unwrap_or(0)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8)).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]))).unwrap_or(0)
}

fn put(b: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(dst) = b.get_mut(at..at.saturating_add(width)) {
        dst.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

/// An interesting value for a field: extremes, small numbers, or random.
fn value(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.below(64),
        3 => 1 << rng.below(64),
        4 => u32::MAX as u64 - rng.below(4),
        _ => rng.next(),
    }
}

/// Section headers: (offset in the file of each header).
fn section_headers(b: &[u8]) -> Vec<usize> {
    let shoff = u64_at(b, 0x28) as usize;
    let shnum = u16_at(b, 0x3C) as usize;
    (0..shnum)
        .filter_map(|i| shoff.checked_add(i * 64))
        .filter(|&h| h.checked_add(64).is_some_and(|end| end <= b.len()))
        .collect()
}

/// Entries (file offset, entry size) of sections of a given type.
fn entries_of_type(b: &[u8], sh_type: u64, entsize: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for h in section_headers(b) {
        if u32_at(b, h + 4) != sh_type {
            continue;
        }
        let (off, size) = (u64_at(b, h + 0x18) as usize, u64_at(b, h + 0x20) as usize);
        let mut at = off;
        while at.saturating_add(entsize) <= off.saturating_add(size) && at.saturating_add(entsize) <= b.len() {
            out.push(at);
            at += entsize;
        }
    }
    out
}

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    if b.is_empty() {
        return b;
    }
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len() as u64) as usize),
        2 => {
            // A section header field.
            let headers = section_headers(&b);
            if let Some(&h) = headers.get(rng.below(headers.len() as u64) as usize) {
                let (field, width) =
                    [(4, 4), (8, 8), (0x18, 8), (0x20, 8), (0x28, 4), (0x2C, 4), (0x30, 8), (0x38, 8), (0, 4)]
                        [rng.below(9) as usize];
                put(&mut b, h + field, width, value(rng));
            }
        }
        3 => {
            // A relocation: offset, info (symbol and type) or addend.
            let relas = entries_of_type(&b, 4, 24);
            if let Some(&r) = relas.get(rng.below(relas.len() as u64) as usize) {
                match rng.below(4) {
                    0 => put(&mut b, r, 8, value(rng)),
                    1 => put(&mut b, r + 8, 4, rng.below(50)),
                    2 => put(&mut b, r + 12, 4, value(rng)),
                    _ => put(&mut b, r + 16, 8, value(rng)),
                }
            }
        }
        4 => {
            // A symbol: name, info, other, section index, value or size.
            let syms = entries_of_type(&b, 2, 24);
            if let Some(&s) = syms.get(rng.below(syms.len() as u64) as usize) {
                let (field, width) = [(0, 4), (4, 1), (5, 1), (6, 2), (8, 8), (16, 8)][rng.below(6) as usize];
                put(&mut b, s + field, width, value(rng));
            }
        }
        5 => {
            // The ELF header's section table fields.
            let (field, width) =
                [(0x28, 8), (0x3A, 2), (0x3C, 2), (0x3E, 2), (0x10, 2), (0x12, 2)][rng.below(6) as usize];
            put(&mut b, field, width, value(rng));
        }
        6 => {
            // A field of a `.eh_frame` record (lengths, CIE pointers, encodings, pc ranges,
            // instructions): what the unwinder reads once the object is registered.
            let eh = section_header_named(&b, ".eh_frame");
            if let Some(h) = eh.filter(|_| rng.below(2) == 0) {
                let (off, size) = (u64_at(&b, h + 0x18), u64_at(&b, h + 0x20));
                let at = off.saturating_add(rng.below(size.max(1))) as usize;
                put(&mut b, at, [1, 2, 4, 8][rng.below(4) as usize], value(rng));
            } else {
                // A run of random bytes anywhere.
                let len = 1 + rng.below(16) as usize;
                let at = rng.below(b.len() as u64) as usize;
                for i in at..(at + len).min(b.len()) {
                    b[i] = rng.next() as u8;
                }
            }
        }
        _ => {
            // Several mutations at once.
            let once = mutate(&b, rng);
            b = mutate(&once, rng);
        }
    }
    b
}

static FAKE_TARGET: u64 = 0;

/// What a graph tells of its object's interface: each symbol (named or not, with its
/// scope, linkage and flags) and each section, sorted.
fn interface_of(graph: &jit_link::LinkGraph) -> (Vec<String>, Vec<String>) {
    let mut symbols: Vec<String> = graph
        .symbols()
        .map(|(_, s)| {
            let name = s.name().map(|n| n.as_str()).unwrap_or("<anonymous>");
            format!(
                "{name} defined={} {:?} {:?} callable={} tls={}",
                s.is_defined(),
                s.scope(),
                s.linkage(),
                s.is_callable(),
                s.is_thread_local()
            )
        })
        .collect();
    symbols.sort();
    let mut sections: Vec<String> = graph.sections().iter().map(|(_, s)| s.name().to_string()).collect();
    sections.sort();
    (symbols, sections)
}

/// Whenever an object's graph builds, its interface graph builds with the same symbols and
/// sections: the object layer trusts the one to announce what the other will define.
fn check_interface(what: &str, name: &str, bytes: &[u8], graph: &jit_link::LinkGraph) {
    match jit_link::interface_graph_from_elf_object(name, bytes) {
        Ok(interface) => assert!(
            interface_of(&interface) == interface_of(graph),
            "{what}: the interface graph of {name} differs from its graph"
        ),
        Err(e) => panic!("{what}: {name} links, but its interface graph fails: {e}"),
    }
}

fn run_cases(bases: &[(String, Vec<u8>)]) {
    let fake = TargetAddr(&FAKE_TARGET as *const u64 as usize as u64);
    let (mut ok, mut err) = (0u64, 0u64);
    for (name, bytes) in bases {
        let graph = jit_link::graph_from_elf_object(name, bytes).expect("an unmutated object builds");
        check_interface("unmutated", name, bytes, &graph);
    }
    // Xorshift must not start at 0.
    let mut rng = Rng(env_or("FUZZ_SEED", SEED).max(1));
    for case in 0..cases() {
        let (name, base) = &bases[(case % bases.len() as u64) as usize];
        let bytes = mutate(base, &mut rng);
        eprintln!("case {case} ({name})");
        // What the object layer and `orcjit` read of every object they are given, before any
        // link: answers for malformed input, never a panic.
        std::hint::black_box((
            jit_link::link_ties(&bytes),
            jit_link::needs_low_placement(&bytes),
            jit_link::memory_needed(&bytes),
            jit_link::profile_instrumented(&bytes),
        ));
        match jit_link::graph_from_elf_object(name, &bytes) {
            Ok(graph) => {
                check_interface(&format!("case {case}"), name, &bytes, &graph);
                // Combined with another object into one graph (as `orcjit link` combines the
                // objects of one `__start_X` table): an error for clashing names, never a panic.
                let (other_name, other) = &bases[((case + 1) % bases.len() as u64) as usize];
                let pair = [(name.as_str(), &bytes[..]), (other_name.as_str(), &other[..])];
                let _ = jit_link::graph_from_elf_objects("pair", &pair);
                let _ = jit_link::interface_graph_from_elf_objects("pair", &pair);
                let (_, results) = link_graphs(vec![graph], Some(fake));
                for r in results {
                    match r {
                        Ok(_linked) => {
                            ok += 1;
                            // An unwind while the object's `.eh_frame` is registered: libgcc
                            // reads every registered record to find the frames' FDEs, so one
                            // that passed the link but would misguide or crash it shows here.
                            let _ = std::panic::catch_unwind(|| std::panic::resume_unwind(Box::new(())));
                        }
                        Err(_) => err += 1,
                    }
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                // Reading less (no relocations), the interface graph may build; never panic.
                let _ = jit_link::interface_graph_from_elf_object(name, &bytes);
                err += 1;
            }
        }
    }
    println!("FUZZ-DONE ok={ok} err={err}");
}

/// The child side: runs the cases when started as the fuzz runner.
#[test]
fn child() {
    let Ok(list) = std::env::var("JITLINK_FUZZ_OBJECTS") else {
        return;
    };
    let bases: Vec<(String, Vec<u8>)> = list
        .lines()
        .filter(|l| !l.is_empty())
        .map(|p| (p.rsplit('/').next().unwrap_or(p).to_string(), std::fs::read(p).expect("object")))
        .collect();
    run_cases(&bases);
}

#[test]
fn mutated_objects_give_ok_or_an_error_never_a_panic_hang_or_crash() {
    let mut paths = Vec::new();
    let mut add = |program: &str, sources: &[&str], flags: &[&str], tag: &str| {
        compile(program, sources, flags, tag);
        let dir = work_dir(&format!("{program}-{tag}"));
        for s in sources {
            let stem = s.rsplit_once('.').map(|(a, _)| a).unwrap_or(s);
            paths.push(dir.join(format!("{stem}.o")).to_string_lossy().into_owned());
        }
    };
    add("multi", &["main.c", "lib.c"], &["-O1", "-fPIC", "-fcommon"], "fuzz-pic");
    add("multi", &["lib.c"], &["-O1", "-fPIC", "-mcmodel=large"], "fuzz-large");
    add("cxx", &["main.cpp", "other.cpp"], &["-O1", "-fPIC"], "fuzz-cxx");
    add("tls", &["main.c", "other.c"], &["-O1", "-fPIC"], "fuzz-tls");
    // Local-dynamic TLS against variables of another object (what `link_ties` reads).
    add("tlsld", &["main.c"], &["-O1", "-fPIC"], "fuzz-tlsld");
    // TLS descriptors, of a variable of its own and of the module (`_TLS_MODULE_BASE_`).
    add("tlsld", &["vars.c"], &["-O1", "-fPIC", "-mtls-dialect=gnu2"], "fuzz-tlsdesc");
    add("ctors", &["main.c"], &["-O0", "-fno-pic", "-mcmodel=large", "-g"], "fuzz-ctors");
    // 5 GiB of large data, which links apart from the memory manager.
    add("hugearray", &["main.c"], &["-O1", "-fPIC", "-mcmodel=medium"], "fuzz-huge");
    let asm = work_dir("fuzz-asm").join("relocs.o");
    clang(&["-c", &programs_dir().join("asm/relocs.s").to_string_lossy(), "-o", &asm.to_string_lossy()]);
    paths.push(asm.to_string_lossy().into_owned());

    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env("JITLINK_FUZZ_OBJECTS", paths.join("\n"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fuzz child");
    let limit = Duration::from_secs(900 * cases().div_ceil(CASES).max(1));
    let out = wait_bounded(child, limit, "fuzz run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.starts_with(' ')).rev().take(12).collect();
    assert!(
        out.status.success() && stdout.contains("FUZZ-DONE"),
        "fuzz child failed ({:?}); last lines of its stderr (newest first):\n{}",
        out.status,
        tail.join("\n")
    );
    let summary = stdout.lines().find_map(|l| l.find("FUZZ-DONE").map(|at| &l[at..])).unwrap_or_default();
    eprintln!("{summary}");
    let count = |key: &str| -> u64 {
        summary.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert_eq!(count("ok=") + count("err="), cases(), "{summary}");
    assert!(count("ok=") > 0 && count("err=") > 0, "both outcomes occur: {summary}");
}

/// The header (file offset) of the first section whose name starts with `prefix`.
fn section_header_named(b: &[u8], prefix: &str) -> Option<usize> {
    let headers = section_headers(b);
    let strtab = *headers.get(u16_at(b, 0x3E) as usize)?;
    let names_at = u64_at(b, strtab + 0x18) as usize;
    headers.into_iter().find(|&h| {
        let start = names_at.saturating_add(u32_at(b, h) as usize);
        b.get(start..).is_some_and(|rest| rest.starts_with(prefix.as_bytes()))
    })
}

/// `SHF_TLS` on a section whose contents are used at their address (unwind tables, initializer
/// tables, code) is an error that names the section. Laid out as thread-local data, such a section
/// has only an offset in the TLS image: such an `.eh_frame` was registered with the unwinder
/// at address 0, a crash this file's fuzzing found (`FUZZ_SEED=14 FUZZ_CASES=1000000`).
#[test]
fn thread_local_flags_on_unwind_tables_initializers_or_code_are_errors() {
    const SHT_PROGBITS: u64 = 1;
    const SHF_TLS: u64 = 0x400;
    let objects = compile("ctors", &["main.c"], &["-O1", "-fPIC"], "tls-flags");
    let (name, base) = &objects[0];
    jit_link::graph_from_elf_object(name, base).expect("the unmutated object builds");
    // (section, retyped as PROGBITS first: gcc's type for `.eh_frame`; a table known by its name)
    for (section, progbits) in [(".eh_frame", false), (".eh_frame", true), (".init_array", true), (".text", false)] {
        let mut b = base.clone();
        let h = section_header_named(&b, section).unwrap_or_else(|| panic!("{name} has no {section}"));
        if progbits {
            put(&mut b, h + 4, 4, SHT_PROGBITS);
            jit_link::graph_from_elf_object(name, &b).unwrap_or_else(|e| panic!("{section} as PROGBITS: {e}"));
        }
        let flags = u64_at(&b, h + 8);
        put(&mut b, h + 8, 8, flags | SHF_TLS);
        match jit_link::graph_from_elf_object(name, &b) {
            Ok(_) => panic!("{section} (PROGBITS: {progbits}) marked thread-local was accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(section) && msg.contains("SHF_TLS"), "{section}: {msg}");
            }
        }
    }
}

/// An `.eh_frame` that gimli parses but libgcc would misread (as written, or once relocated) is
/// a link error, before it is registered. Accepted before, each crashed the process at its next
/// unwind (found by fuzzing with an unwind after each link):
/// - a relocation moved over the CIE's length field (the PC32 value became the length);
/// - an FDE whose range reaches far past its function (libgcc then used it for return
///   addresses in other code, its own included);
/// - a CIE of version 4 (libgcc gives up on the whole object when the bytes after the
///   augmentation are not an address size of 8, and aborts when it is deregistered);
/// - FDE pointers relative to the function (`DW_EH_PE_funcrel`: libgcc aborts in
///   `base_from_object`).
#[test]
fn eh_frame_records_libgcc_would_misread_are_link_errors() {
    let objects = compile("ctors", &["main.c"], &["-O1", "-fPIC"], "eh-frame-final");
    let (name, base) = &objects[0];
    let fake = TargetAddr(&FAKE_TARGET as *const u64 as usize as u64);
    let link = |bytes: &[u8]| {
        let graph = jit_link::graph_from_elf_object(name, bytes).expect("builds");
        let (_, mut results) = link_graphs(vec![graph], Some(fake));
        results.pop().expect("one result")
    };
    link(base).expect("the unmutated object links");
    let eh = section_header_named(base, ".eh_frame").expect(".eh_frame");
    let eh_at = u64_at(base, eh + 0x18) as usize;
    let rela = section_header_named(base, ".rela.eh_frame").expect(".rela.eh_frame");
    let first_rela = u64_at(base, rela + 0x18) as usize;
    // The CIE comes first; the first FDE follows it: length, CIE pointer, pc_begin, pc_range.
    let fde = eh_at + 4 + u32_at(base, eh_at) as usize;

    let mut over_length = base.clone();
    put(&mut over_length, first_rela, 8, 0);
    let mut wide = base.clone();
    put(&mut wide, fde + 12, 4, 0x7fff_0000);
    // clang's CIE for C: length, id, version, "zR", code and data alignment, return address
    // register, augmentation length, then the FDEs' pointer encoding (pcrel | sdata4).
    assert_eq!(&base[eh_at + 9..eh_at + 12], b"zR\0", "the CIE's augmentation");
    assert_eq!(base[eh_at + 16], 0x1b, "the FDEs' pointer encoding");
    let mut version_4 = base.clone();
    version_4[eh_at + 8] = 4;
    let mut funcrel = base.clone();
    funcrel[eh_at + 16] = 0x4b;
    let cases = [
        ("a relocation over the CIE's length", over_length),
        ("an FDE range past its function", wide),
        ("a CIE of version 4", version_4),
        ("function-relative FDE pointers", funcrel),
    ];
    for (what, bytes) in cases {
        match link(&bytes) {
            Ok(_) => panic!("{what}: linked"),
            Err(e) => assert!(e.to_string().contains(".eh_frame"), "{what}: {e}"),
        }
    }
}
