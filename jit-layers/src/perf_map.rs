//! A perf map: `/tmp/perf-<pid>.map`, one line `START SIZE NAME` (hex, no prefix) per JIT'd
//! function, which `perf report` reads to name samples in memory no file backs (the format of
//! the Linux perf tool's `tools/perf/Documentation/jit-interface.txt`).
//!
//! Names are the functions' own: the compile-on-demand layer's `<f>.body` is written `f`, its
//! second tier `f [tier 2]`, a promoted local `<f>.orcjit.<tag>` `f`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use jit_core::{JitDylib, Result};
use jit_link::{LinkGraph, PassConfig, Phase};
use parking_lot::Mutex;

use crate::LinkPlugin;

/// Writes the perf map of every object linked by the layer it is added to
/// ([`ObjectLinkingLayer::add_plugin`](crate::ObjectLinkingLayer::add_plugin)).
///
/// The map is opened for each object's lines, not kept open: a JIT'd program may close
/// descriptors it did not open and reuse their numbers, and a forked child has a map of its
/// own (its pid's).
pub struct PerfMap {
    _private: (),
}

impl PerfMap {
    /// Creates (or appends to) this process's map, `/tmp/perf-<pid>.map`.
    pub fn new() -> std::io::Result<Arc<Self>> {
        append("")?;
        Ok(Arc::new(PerfMap { _private: () }))
    }

    /// This process's map.
    pub fn path(&self) -> PathBuf {
        map_path()
    }
}

fn map_path() -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()))
}

/// Appends `text` to this process's map, one writer at a time so that lines never interleave.
fn append(text: &str) -> std::io::Result<()> {
    static WRITING: Mutex<()> = Mutex::new(());
    let _one = WRITING.lock();
    OpenOptions::new().create(true).append(true).open(map_path())?.write_all(text.as_bytes())
}

/// How a symbol reads in the map (see the module's doc).
fn display_name(symbol: &str) -> String {
    let base = crate::symbolize::plain_name(symbol);
    if symbol.ends_with(".t2") { format!("{base} [tier 2]") } else { base }
}

/// `graph`'s defined functions (addresses assigned): address, size, and name as it reads.
pub(crate) fn functions(graph: &LinkGraph) -> Vec<(u64, u64, String)> {
    function_symbols(graph).into_iter().map(|(addr, size, name)| (addr, size, display_name(name.as_str()))).collect()
}

/// The graph's named functions of nonzero size, as (address, size, symbol name).
pub(crate) fn function_symbols(graph: &LinkGraph) -> Vec<(u64, u64, jit_link::SymbolName)> {
    let mut out = Vec::new();
    for (id, symbol) in graph.symbols() {
        if !symbol.is_defined() || !symbol.is_callable() || symbol.size() == 0 {
            continue;
        }
        let (Some(name), Some(addr)) = (symbol.name(), graph.symbol_addr(id)) else { continue };
        out.push((addr.0, symbol.size(), name.clone()));
    }
    out
}

fn lines(graph: &LinkGraph) -> String {
    functions(graph).into_iter().map(|(addr, size, name)| format!("{addr:x} {size:x} {name}\n")).collect()
}

impl LinkPlugin for PerfMap {
    fn modify_pass_config(&self, _dylib: &JitDylib, _graph: &LinkGraph, config: &mut PassConfig) -> Result<()> {
        config.add(Phase::PostAllocation, "perf map", move |graph| {
            let text = lines(graph);
            if !text.is_empty() {
                // A map that cannot be written is a profile without names, not a failed link.
                if let Err(e) = append(&text) {
                    tracing::warn!(target: "orcjit", "perf map: {e}");
                }
            }
            Ok(())
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_the_functions_they_are() {
        assert_eq!(display_name("luaV_execute.body"), "luaV_execute");
        assert_eq!(display_name("luaV_execute.body.t2"), "luaV_execute [tier 2]");
        assert_eq!(display_name("l_alloc.orcjit.3fa2.body"), "l_alloc");
        assert_eq!(display_name("main"), "main");
    }
}
