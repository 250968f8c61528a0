//! Builds `src/ir/shim.cpp` (what orcjit needs of LLVM's C++ API that the C API lacks) against Debian's
//! LLVM 19 headers, when the `llvm` feature is on.

fn main() {
    println!("cargo::rerun-if-changed=src/ir/shim.cpp");
    if std::env::var_os("CARGO_FEATURE_LLVM").is_none() {
        return;
    }
    println!("cargo::rerun-if-env-changed=CXX");
    let prefix = std::env::var("LLVM_SYS_191_PREFIX").unwrap_or_else(|_| "/usr/lib/llvm-19".into());
    let mut build = cc::Build::new();
    // Without a C++ compiler on PATH, LLVM's own clang++ (package clang-19) will do.
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
    };
    if std::env::var_os("CXX").is_none() && !on_path("c++") {
        build.compiler(format!("{prefix}/bin/clang++"));
    }
    build
        .cpp(true)
        .file("src/ir/shim.cpp")
        .include(format!("{prefix}/include"))
        .flag("-std=c++17")
        .flag("-fno-exceptions")
        // The shim's copies of LLVM's inline vtables stay private: exported, they would be kept
        // alive by libLLVM's references to them, and with them libLLVM itself, in every binary
        // that links jit-layers, including `orcjit`, whose `orcjit link` never calls LLVM.
        .flag("-fvisibility=hidden")
        .define("__STDC_CONSTANT_MACROS", None)
        .define("__STDC_FORMAT_MACROS", None)
        .define("__STDC_LIMIT_MACROS", None)
        .warnings(false)
        .compile("orcjit_llvm_shim");
}
