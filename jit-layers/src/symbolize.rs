//! `dladdr` for JIT'd code: the function, and the object, an address of JIT'd code lies in,
//! as the loader answers for a library's. Symbolizers and crash reporters (printing a stack's
//! names), and programs looking for their own file, call it; for JIT'd code glibc finds no
//! loaded object and answers 0, where a native build's answer is its executable.
//!
//! [`Symbolizer`], a link plugin, records each linked object's functions as it is linked (the
//! list the perf map writes, kept in memory); a lazy stub answers with its own name. Records,
//! and the C strings `dladdr` makes for them on first use, stay until the process ends: a
//! program may keep the strings.

use std::ffi::{CString, c_int, c_void};

use jit_core::{JitDylib, Result};
use jit_link::{LinkGraph, PassConfig, Phase};
use parking_lot::{Mutex, RwLock};

use crate::LinkPlugin;

/// One linked object's functions, sorted by address. Their C strings are made when `dladdr`
/// first names them (see [`C_NAMES`]), so that a link pays for a list, not for strings.
struct Object {
    name: CString,
    start: u64,
    end: u64,
    functions: Vec<(u64, u64, jit_link::SymbolName)>,
}

/// The C strings `dladdr` handed out, by the address of the function or lazy stub they name.
static C_NAMES: Mutex<Vec<(u64, CString)>> = parking_lot::const_mutex(Vec::new());

static OBJECTS: RwLock<Vec<Object>> = parking_lot::const_rwlock(Vec::new());

/// Records every linked object's functions for JIT'd `dladdr`.
pub(crate) struct Symbolizer;

impl LinkPlugin for Symbolizer {
    fn modify_pass_config(&self, _dylib: &JitDylib, _graph: &LinkGraph, config: &mut PassConfig) -> Result<()> {
        config.add(Phase::PostAllocation, "dladdr records", |graph| {
            let mut functions = crate::perf_map::function_symbols(graph);
            if functions.is_empty() {
                return Ok(());
            }
            functions.sort_by_key(|f| f.0);
            let start = functions[0].0;
            let end = functions.iter().map(|f| f.0 + f.1).max().unwrap_or(start);
            let name = CString::new(graph.name().replace('\0', "")).unwrap_or_default();
            OBJECTS.write().push(Object { name, start, end, functions });
            Ok(())
        });
        Ok(())
    }
}

/// A JIT'd name as the program wrote it: a lazy body (`f.body`), a promoted local
/// (`f.orcjit.3fa2.body`) or a second-tier body (`f.body.t2`) is `f`.
pub(crate) fn plain_name(symbol: &str) -> String {
    let base = symbol.strip_suffix(".t2").unwrap_or(symbol);
    let base = base.strip_suffix(".body").unwrap_or(base);
    base.find(".orcjit.").map_or(base, |at| &base[..at]).to_string()
}

/// `dladdr` for JIT'd code: libc's answer, or, for an address of JIT'd code, its object
/// (`dli_fname`, `dli_fbase`: the object's name and its first function) and the function it
/// lies in (`dli_sname`, `dli_saddr`), or the lazy stub it is.
unsafe extern "C" fn dladdr(addr: *const c_void, info: *mut libc::Dl_info) -> c_int {
    // SAFETY: forwards the caller's arguments unchanged.
    let found = unsafe { libc::dladdr(addr, info) };
    if found != 0 || info.is_null() {
        return found;
    }
    let at = addr as u64;
    let fill = |fname: *const libc::c_char, fbase: u64, sname: *const libc::c_char, saddr: u64| {
        // SAFETY: the caller passes a writable Dl_info, as libc requires; the strings live
        // until the process ends (see the module comment).
        unsafe {
            *info = libc::Dl_info {
                dli_fname: fname,
                dli_fbase: fbase as *mut c_void,
                dli_sname: sname,
                dli_saddr: saddr as *mut c_void,
            };
        }
        1
    };
    {
        let objects = OBJECTS.read();
        for object in objects.iter().filter(|o| (o.start..o.end).contains(&at)) {
            let after = object.functions.partition_point(|f| f.0 <= at);
            if let Some((addr, size, name)) = after.checked_sub(1).map(|i| &object.functions[i]) {
                if at < addr + size {
                    let c_name = c_name(*addr, || plain_name(name.as_str()));
                    return fill(object.name.as_ptr(), object.start, c_name, *addr);
                }
            }
        }
    }
    let Some(name) = crate::lazy::stub_name_at(at) else { return 0 };
    static STUBS: &std::ffi::CStr = c"lazy stubs";
    fill(STUBS.as_ptr(), at, c_name(at, || name), at)
}

/// The C string kept in [`C_NAMES`] for what is at `addr`, made from `name()` the first time.
fn c_name(addr: u64, name: impl FnOnce() -> String) -> *const libc::c_char {
    let mut names = C_NAMES.lock();
    let index = match names.iter().position(|(a, _)| *a == addr) {
        Some(i) => i,
        None => {
            names.push((addr, CString::new(name().replace('\0', "")).unwrap_or_default()));
            names.len() - 1
        }
    };
    // The string's heap buffer does not move when the vector grows.
    names[index].1.as_ptr()
}

/// The address JIT'd code should bind `dladdr` to.
pub(crate) fn overrides() -> [(&'static str, usize); 1] {
    [("dladdr", dladdr as *const () as usize)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_the_program_wrote_them() {
        assert_eq!(plain_name("luaV_execute.body"), "luaV_execute");
        assert_eq!(plain_name("luaV_execute.body.t2"), "luaV_execute");
        assert_eq!(plain_name("l_alloc.orcjit.3fa2.body"), "l_alloc");
        assert_eq!(plain_name("main"), "main");
    }
}
