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
