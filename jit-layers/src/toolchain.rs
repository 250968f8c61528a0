//! Where this machine's compilers keep the runtime libraries they link into programs, for the
//! generators that stand in for a native link's implicit libraries (`libgcc.a`, compiler-rt's
//! builtins and sanitizer runtimes). Looked up only when a lookup needs one.

use std::path::{Path, PathBuf};

/// The directories in `root` named `prefix` + a version ("12", "llvm-19", "19.1.7"), newest
/// first; other entries are skipped.
fn versioned_dirs(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let version = path.file_name()?.to_str()?.strip_prefix(prefix)?;
            let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, path))
        })
        .filter(|(_, path)| path.is_dir())
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, path)| path).collect()
}

/// The newest GCC's `libgcc.a`.
pub fn libgcc() -> Option<PathBuf> {
    ["/usr/lib/gcc/x86_64-linux-gnu", "/usr/lib/gcc/x86_64-pc-linux-gnu", "/usr/lib64/gcc/x86_64-pc-linux-gnu"]
        .iter()
        .flat_map(|root| versioned_dirs(Path::new(root), ""))
        .map(|dir| dir.join("libgcc.a"))
        .find(|file| file.is_file())
}

/// `file` among the newest LLVM's compiler-rt libraries
/// (`/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.builtins-x86_64.a`).
pub fn compiler_rt(file: &str) -> Option<PathBuf> {
    versioned_dirs(Path::new("/usr/lib"), "llvm-")
        .iter()
        .flat_map(|llvm| versioned_dirs(&llvm.join("lib/clang"), ""))
        .map(|clang| clang.join("lib/linux").join(file))
        .find(|path| path.is_file())
}

/// The directories the dynamic loader searches by default on Debian's x86-64 (`/lib` is a link
/// to `/usr/lib`), most specific first.
const LIBRARY_DIRS: [&str; 4] = ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];

/// A shared library in the loader's default directories that exports `symbol` (a global
/// definition in its dynamic symbol table): for an undefined-symbol error, what to load. A
/// program that links natively with `-lz` or `-lpython3.11` and not in a JIT that was not told
/// to load them fails so. Reads only the libraries' symbol tables, through read-only maps,
/// in name order, skipping what does not parse; `None` if none defines it.
pub fn shared_library_defining(symbol: &str) -> Option<PathBuf> {
    use object::{Object, ObjectSymbol};
    let mut seen = std::collections::HashSet::new();
    for dir in LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            let is_library = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".so"));
            let Some(file) = is_library.then(|| std::fs::canonicalize(&path).ok()).flatten() else { continue };
            if !file.is_file() || !seen.insert(file.clone()) {
                continue;
            }
            let Ok(opened) = std::fs::File::open(&file) else { continue };
            // SAFETY: a private read-only map of a system library, only read while it lives;
            // package managers replace such files by renaming a new one over them, which
            // leaves this map's pages intact.
            let Ok(map) = (unsafe { memmap2::Mmap::map(&opened) }) else { continue };
            let Ok(elf) = object::File::parse(&*map) else { continue };
            let defines = elf
                .dynamic_symbols()
                .any(|s| s.is_definition() && s.is_global() && s.name_bytes().is_ok_and(|n| n == symbol.as_bytes()));
            if defines {
                return Some(file);
            }
        }
    }
    None
}

/// A library that `-lNAME` names: a shared library to load, or a static library to search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FoundLibrary {
    Shared(PathBuf),
    Static(PathBuf),
}

/// The libraries `-lNAME` stands for, found as a native link finds them: in each of `dirs` (the
/// `-L` directories, in order), then in the default ones (the loader's, then the newest GCC's,
/// which holds `libstdc++.so` and `libatomic.so`), the first `libNAME.so`, else `libNAME.a`
/// (`-l:FILE` names the file itself). A `.so` that is a linker script (Debian's `libc.so`,
/// `libm.so`, GCC's `libgcc_s.so`) stands for the libraries it lists. The error says where
/// it looked.
pub fn find_library(name: &str, dirs: &[PathBuf]) -> Result<Vec<FoundLibrary>, String> {
    let search: Vec<PathBuf> = dirs
        .iter()
        .cloned()
        .chain(LIBRARY_DIRS.iter().map(PathBuf::from))
        .chain(libgcc().and_then(|gcc| gcc.parent().map(Path::to_path_buf)))
        .collect();
    find_in(name, &search, 0)
}

/// [`find_library`] in the directories `search`, from within linker scripts `depth` deep.
fn find_in(name: &str, search: &[PathBuf], depth: u32) -> Result<Vec<FoundLibrary>, String> {
    let candidates: Vec<String> = match name.strip_prefix(':') {
        Some(file) => vec![file.to_string()],
        None => vec![format!("lib{name}.so"), format!("lib{name}.a")],
    };
    for dir in search {
        for file in &candidates {
            let path = dir.join(file);
            if path.is_file() {
                return library_at(&path, search, depth);
            }
        }
    }
    let searched: Vec<String> = search.iter().map(|d| d.display().to_string()).collect();
    Err(format!("cannot find -l{name} (searched {})", searched.join(", ")))
}

/// The libraries the file at `path` stands for: itself, or what it lists if it is a linker
/// script, whose entries are paths, names searched for in `search`, or `-lNAME`s (a script
/// within a script is followed up to a few levels).
fn library_at(path: &Path, search: &[PathBuf], depth: u32) -> Result<Vec<FoundLibrary>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    // The magic decides; only a script (a few hundred bytes) is read whole.
    let mut magic = Vec::with_capacity(8);
    file.by_ref().take(8).read_to_end(&mut magic).map_err(cannot)?;
    if crate::StaticLibrary::is_archive(&magic) {
        return Ok(vec![FoundLibrary::Static(path.to_path_buf())]);
    }
    if magic.starts_with(b"\x7fELF") {
        return Ok(vec![FoundLibrary::Shared(path.to_path_buf())]);
    }
    let bad = || format!("{} is neither a library nor a linker script naming libraries", path.display());
    let mut bytes = magic;
    file.take(1 << 20).read_to_end(&mut bytes).map_err(cannot)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    if depth > 4 {
        return Err(format!("{}: linker scripts nest too deeply", path.display()));
    }
    let mut found = Vec::new();
    for entry in script_inputs(text).ok_or_else(bad)? {
        if let Some(name) = entry.strip_prefix("-l") {
            found.extend(find_in(name, search, depth + 1)?);
            continue;
        }
        let entry_path = Path::new(&entry);
        let resolved = if entry_path.is_absolute() {
            entry_path.to_path_buf()
        } else {
            let beside = path.parent().map(|dir| dir.join(entry_path)).into_iter();
            beside
                .chain(search.iter().map(|dir| dir.join(entry_path)))
                .find(|p| p.is_file())
                .ok_or_else(|| format!("{}: cannot find {entry}, which it lists", path.display()))?
        };
        found.extend(library_at(&resolved, search, depth + 1)?);
    }
    Ok(found)
}

/// The files a GNU linker script's `GROUP`, `INPUT` and `AS_NEEDED` commands list, in order,
/// or `None` if it lists none. Comments (`/* */`) are skipped; other commands
/// (`OUTPUT_FORMAT`) are ignored.
fn script_inputs(text: &str) -> Option<Vec<String>> {
    let mut rest = text;
    let mut plain = String::new();
    while let Some(start) = rest.find("/*") {
        plain.push_str(&rest[..start]);
        rest = rest[start..].find("*/").map_or("", |end| &rest[start + end + 2..]);
    }
    plain.push_str(rest);
    let spaced = plain.replace('(', " ( ").replace(')', " ) ").replace(',', " ");
    let mut inputs = Vec::new();
    // Open parentheses, each whether it belongs to a command that lists files.
    let mut open: Vec<bool> = Vec::new();
    let mut command = "";
    for token in spaced.split_whitespace() {
        match token {
            "(" => open.push(matches!(command, "GROUP" | "INPUT" | "AS_NEEDED")),
            ")" => {
                open.pop()?;
            }
            _ if open.last() == Some(&true) && token != "AS_NEEDED" => inputs.push(token.to_string()),
            _ => {}
        }
        command = token;
    }
    (!inputs.is_empty() && open.is_empty()).then_some(inputs)
}

/// The library every program's native link ends with: `libgcc.a`, else compiler-rt's builtins.
pub fn compiler_runtime_library() -> Option<PathBuf> {
    libgcc().or_else(|| compiler_rt("libclang_rt.builtins-x86_64.a"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zlib is on every Debian system (`zlib1g` is required), and nothing else exports its
    /// version function.
    #[test]
    fn the_shared_library_that_exports_a_symbol_is_found() {
        let zlib = shared_library_defining("zlibVersion").expect("libz exports zlibVersion");
        let name = zlib.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("libz.so"), "{}", zlib.display());
        assert_eq!(shared_library_defining("no_library_defines_this_name_1f3a"), None);
    }

    #[test]
    fn a_linker_script_s_libraries_are_read_in_order() {
        let libc = "/* GNU ld script\n   Use the shared library, but some functions are only in\n   the static \
                    library, so try that secondarily.  */\nOUTPUT_FORMAT(elf64-x86-64)\nGROUP ( \
                    /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc_nonshared.a  AS_NEEDED ( \
                    /lib64/ld-linux-x86-64.so.2 ) )\n";
        let expected = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc_nonshared.a",
            "/lib64/ld-linux-x86-64.so.2",
        ];
        assert_eq!(script_inputs(libc).unwrap(), expected);
        assert_eq!(script_inputs("GROUP(libgcc_s.so.1,-lgcc)").unwrap(), ["libgcc_s.so.1", "-lgcc"]);
        assert_eq!(script_inputs("INPUT ( a.so ) INPUT(b.a)").unwrap(), ["a.so", "b.a"]);
        assert_eq!(script_inputs("OUTPUT_FORMAT(elf64-x86-64)"), None, "lists nothing");
        assert_eq!(script_inputs("GROUP ( a.so"), None, "unbalanced");
        assert_eq!(script_inputs("not a script at all"), None);
    }

    /// Debian's `libm.so` is a linker script naming `libm.so.6` (and libmvec as needed); zlib
    /// has a shared and a static library (zlib1g-dev, which CI installs), the shared one first.
    #[test]
    fn libraries_are_found_as_a_native_link_finds_them() {
        let libm = find_library("m", &[]).unwrap();
        assert!(matches!(&libm[0], FoundLibrary::Shared(p) if p.to_str().unwrap().ends_with("libm.so.6")), "{libm:?}");
        let libz = find_library("z", &[]).unwrap();
        assert!(matches!(&libz[..], [FoundLibrary::Shared(p)] if p.ends_with("libz.so")), "{libz:?}");
        let static_z = find_library(":libz.a", &[]).unwrap();
        assert!(matches!(&static_z[..], [FoundLibrary::Static(p)] if p.ends_with("libz.a")), "{static_z:?}");
        // An -L directory comes first, and a script's relative names and -l's are searched.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("libz.a"), b"!<arch>\n").unwrap();
        std::fs::write(tmp.path().join("libboth.so"), b"GROUP ( libz.a -lm )").unwrap();
        let mine = find_library("z", &[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(mine, [FoundLibrary::Static(tmp.path().join("libz.a"))]);
        let both = find_library("both", &[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(both[0], FoundLibrary::Static(tmp.path().join("libz.a")));
        assert!(matches!(&both[1], FoundLibrary::Shared(p) if p.to_str().unwrap().ends_with("libm.so.6")));
        std::fs::write(tmp.path().join("libloop.so"), b"GROUP ( -lloop )").unwrap();
        let deep = find_library("loop", &[tmp.path().to_path_buf()]).unwrap_err();
        assert!(deep.contains("nest too deeply"), "{deep}");
        std::fs::write(tmp.path().join("libjunk.so"), b"\x00\x01binary").unwrap();
        let junk = find_library("junk", &[tmp.path().to_path_buf()]).unwrap_err();
        assert!(junk.contains("neither a library nor a linker script"), "{junk}");
        let missing = find_library("no_such_library_4e1", &[]).unwrap_err();
        assert!(missing.starts_with("cannot find -lno_such_library_4e1 (searched /usr/local/lib"), "{missing}");
    }

    #[test]
    fn versions_sort_numerically_and_other_entries_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["llvm-9", "llvm-19", "llvm-14.0.6", "llvm-config", "x86_64-linux-gnu"] {
            std::fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        std::fs::write(tmp.path().join("llvm-20"), b"a file").unwrap();
        let names: Vec<String> = versioned_dirs(tmp.path(), "llvm-")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["llvm-19", "llvm-14.0.6", "llvm-9"]);
    }

    #[test]
    fn this_machine_s_clang_has_its_runtime_libraries() {
        // CI installs clang-19, which brings GCC's libgcc and LLVM's compiler-rt.
        assert!(compiler_runtime_library().is_some());
        assert!(compiler_rt("libclang_rt.builtins-x86_64.a").is_some());
    }
}
