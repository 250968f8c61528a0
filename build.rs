//! Link settings of the `orcjit` commands.

fn main() {
    // The commands define `vfork` as `fork` (`jit_layers::vfork_is_fork!`); exported, it is
    // what the libraries a JIT'd program loads bind to as well, since the loader searches
    // the executable first.
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=vfork");
    println!("cargo:rerun-if-changed=build.rs");
}
