//! Mutated real static libraries (member headers, the symbol index, the long-name table,
//! truncations, bit flips): parsing gives Ok or an error, never a panic or hang, and so does
//! linking what a lookup pulls from one that parses. jit-link's own fuzz test covers the
//! members' ELF; this one covers the archive around them and the generator that reads it.
//!
//! A soak: `FUZZ_SEED=S FUZZ_CASES=N` runs N cases from another seed.

mod common;

use std::path::Path;
use std::process::Command;

use jit_layers::{ObjectJit, StaticLibrary};

/// Members: `af_a` calls `af_b` in another member; `af_c` has a name long enough for the
/// GNU long-name table (`//`), as has its member's file name.
const MEMBERS: [(&str, &str); 3] = [
    ("a", "int af_b(int); int af_a(int x) { return af_b(x) + 1; }"),
    ("b", "static const char s[] = \"member b\"; int af_b(int x) { return x * 2 + s[x & 7]; }"),
    (
        "a_member_with_a_long_file_name",
        "int af_c_with_a_long_name = 7; int af_c(void) { return af_c_with_a_long_name; }",
    ),
];

/// An object linked with the library: it refers to `af_a` and `af_c`, and defines weakly what
/// the member defining `af_c` defines strongly, so that `ObjectJit::add_objects` follows the
/// members it pulls and adds that one with it.
const USER: &str = "__attribute__((weak)) int af_c_with_a_long_name = 1; int af_a(int); int af_c(void); \
                    int af_user(void) { return af_a(1) + af_c() + af_c_with_a_long_name; }";

/// Every archive member header is 60 bytes: name (16), date (12), uid (6), gid (6), mode (8),
/// size (10, decimal), then "`\n" (the System V / GNU `ar` format).
const HEADER: usize = 60;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// xorshift64*: deterministic, so a failing case can be replayed from its seed and number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Compiles C `source` to `dir/name.o`.
fn compile(dir: &Path, name: &str, source: &str) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let obj = dir.join(format!("{name}.o"));
    let out = Command::new("clang-19").args(["-O1", "-fPIC", "-c"]).arg(&src).arg("-o").arg(&obj).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    obj
}

/// Builds `lib.a` from the members, with the symbol index (`ar rcs`) or without (`ar rcS`).
fn archive(dir: &Path, lib: &str, ar_flags: &str) -> Vec<u8> {
    let objects: Vec<_> = MEMBERS.iter().map(|(name, source)| compile(dir, name, source)).collect();
    let path = dir.join(lib);
    let out = Command::new("ar").arg(ar_flags).arg(&path).args(&objects).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).unwrap()
}

/// The offsets of the member headers, walking the archive as `ar` wrote it.
fn member_headers(b: &[u8]) -> Vec<usize> {
    let mut at = 8;
    let mut headers = Vec::new();
    while at + HEADER <= b.len() {
        headers.push(at);
        let size = std::str::from_utf8(&b[at + 48..at + 58]).ok().and_then(|s| s.trim().parse::<usize>().ok());
        let Some(size) = size else { break };
        at += HEADER + size + (size & 1);
    }
    headers
}

fn mutate(base: &[u8], headers: &[usize], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    let header = headers[rng.below(headers.len() as u64) as usize];
    match rng.below(6) {
        // A member's size: zero, one off, past the end, huge, or not a number.
        0 => {
            let size = match rng.below(5) {
                0 => "0".to_string(),
                1 => (b.len() as u64 + rng.below(100)).to_string(),
                2 => "9999999999".to_string(),
                3 => "-1".to_string(),
                _ => {
                    let old = std::str::from_utf8(&b[header + 48..header + 58]).unwrap().trim().parse::<i64>();
                    (old.unwrap_or(0) + rng.below(9) as i64 - 4).to_string()
                }
            };
            let field = format!("{size:<10}");
            b[header + 48..header + 58].copy_from_slice(&field.as_bytes()[..10]);
        }
        // A member's name: a long-name reference anywhere, the index's or the table's name.
        1 => {
            let names = ["/", "//", "/SYM64/", "/0", "/999999", "/18446744073709551615"];
            let name = match rng.below(3) {
                0 => names[rng.below(names.len() as u64) as usize].to_string(),
                1 => format!("/{}", rng.below(400)),
                _ => String::from_utf8_lossy(&[b'a' + rng.below(26) as u8; 16]).into_owned(),
            };
            let field = format!("{name:<16}");
            b[header..header + 16].copy_from_slice(&field.as_bytes()[..16]);
        }
        // The symbol index (the first member, `/`): its count or an offset, big-endian.
        2 => {
            let at = 8 + HEADER + 4 * rng.below(8) as usize;
            let value = match rng.below(3) {
                0 => rng.next() as u32,
                1 => b.len() as u32 + rng.below(64) as u32,
                _ => rng.below(64) as u32,
            };
            if let Some(dst) = b.get_mut(at..at + 4) {
                dst.copy_from_slice(&value.to_be_bytes());
            }
        }
        // Truncated.
        3 => b.truncate(rng.below(b.len() as u64) as usize),
        // A run of random bytes in a header or near one.
        4 => {
            let at = header + rng.below(2 * HEADER as u64) as usize;
            for i in 0..1 + rng.below(12) as usize {
                if let Some(x) = b.get_mut(at + i) {
                    *x = rng.next() as u8;
                }
            }
        }
        // Flipped bits anywhere.
        _ => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
        }
    }
    b
}

/// Each case parses its archive; every 8th that parses is also linked: a lookup of `af_a`
/// and `af_c` pulls members through the generator, and every 16th is first linked with an
/// object that pulls members itself (errors are fine; nothing is called, since a mutated
/// member's code is garbage).
#[test]
fn mutated_static_libraries_give_ok_or_an_error_never_a_panic_or_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let bases = [archive(tmp.path(), "libindexed.a", "rcs"), archive(tmp.path(), "libunindexed.a", "rcS")];
    for base in &bases {
        let library = StaticLibrary::parse("base.a", base.clone()).expect("the unmutated archive parses");
        assert_eq!(library.members().count(), 3);
    }
    let headers: Vec<Vec<usize>> = bases.iter().map(|b| member_headers(b)).collect();
    let user = std::fs::read(compile(tmp.path(), "user", USER)).unwrap();
    for base in &bases {
        // Unmutated: the member's strong `af_c_with_a_long_name` (7) wins over the object's
        // weak one (1), as natively: af_a(1) = af_b(1) + 1 = 2 + 'e' + 1 = 104, then 7 twice.
        let library = StaticLibrary::parse("base.a", base.clone()).unwrap();
        let jit = ObjectJit::builder().threads(1).static_library(library).build().unwrap();
        jit.add_objects(vec![("user.o".into(), user.clone().into())]).unwrap();
        let af_user = jit.lookup::<unsafe extern "C" fn() -> i32>("af_user").unwrap();
        // SAFETY: af_user is the C function `int af_user(void)`, linked from unmutated objects.
        assert_eq!(unsafe { af_user() }, 118);
        jit.end().unwrap();
    }
    assert!(headers.iter().all(|h| h.len() >= 4), "an index or long-name table and three members");

    let seed = env_or("FUZZ_SEED", 0x5DEE_CE66_D1CE_4E5B);
    let cases = env_or("FUZZ_CASES", 20_000);
    // xorshift's state must not be zero; distinct seeds give distinct states.
    let mut rng = Rng((seed ^ 0x9E37_79B9_7F4A_7C15).max(1));
    let (mut parsed, mut linked, mut found) = (0u64, 0u64, 0u64);
    let mut watchdog = common::watchdog("archive_fuzz: a batch of 500 cases");
    for case in 0..cases {
        if case > 0 && case % 500 == 0 {
            watchdog = common::watchdog("archive_fuzz: a batch of 500 cases");
        }
        let which = rng.below(2) as usize;
        let bytes = mutate(&bases[which], &headers[which], &mut rng);
        let what = format!("FUZZ_SEED={seed} case {case}");
        let Ok(library) = StaticLibrary::parse("fuzz.a", bytes) else { continue };
        parsed += 1;
        // Every member's name and bytes are readable.
        let total: usize = library.members().map(|(name, bytes)| name.len() + bytes.len()).sum();
        std::hint::black_box(total);
        if parsed % 8 != 0 {
            continue;
        }
        linked += 1;
        let jit = ObjectJit::builder().threads(1).static_library(library).build().expect(&what);
        let with_user = parsed % 16 == 0 && jit.add_objects(vec![("user.o".into(), user.clone().into())]).is_ok();
        for name in ["af_a", "af_c"].into_iter().chain(with_user.then_some("af_user")) {
            found += u64::from(jit.lookup_address(name).is_ok());
        }
        jit.end().expect(&what);
    }
    drop(watchdog);
    eprintln!("{cases} cases: {parsed} parsed, {linked} linked, {found} lookups found their symbol");
    assert!(parsed > cases / 10 && found > 0, "the mutations left too few archives whole to test the generator");
}
