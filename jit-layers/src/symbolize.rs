//! `dladdr` for JIT'd code: the function, and the object, an address of JIT'd code lies in,
//! as the loader answers for a library's. Symbolizers and crash reporters (printing a stack's
//! names), and programs looking for their own file, call it; for JIT'd code glibc finds no
//! loaded object and answers 0, where a native build's answer is its executable.
//!
//! [`Symbolizer`], a link plugin, records each linked object's functions as it is linked (the
//! list the perf map writes, kept in memory) for as long as its memory lives: from its
//! finalize to its deallocation (a removed tracker's object, which a redefinition may reuse
//! the memory of), as the loader forgets a library at `dlclose`. A lazy stub answers with its
//! own name. The C strings `dladdr` makes on first use stay until the process ends: a program
//! may keep them.

use std::ffi::{CString, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use jit_core::{FxHashMap, JitDylib, Result};
use jit_link::{LinkGraph, PassConfig, Phase};
use jit_mem::FinalizeAction;
use parking_lot::{Mutex, RwLock};

use crate::LinkPlugin;

/// One linked object's functions, sorted by address. Their C strings are made when `dladdr`
/// first names them (see [`C_NAMES`]), so that a link pays for a list, not for strings.
struct Object {
    /// Tells this record from a later one of an object at the same place.
    id: u64,
    name: CString,
    start: u64,
    end: u64,
    functions: Vec<(u64, u64, jit_link::SymbolName)>,
}

/// The C strings `dladdr` handed out, by the address and name of the function or lazy stub
/// they name (an address reused by another function gets a string of its own).
static C_NAMES: Mutex<Option<FxHashMap<(u64, String), CString>>> = parking_lot::const_mutex(None);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

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
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let object = Object { id, name, start, end, functions };
            // Recorded once the memory is finalized (a link that fails before leaves nothing),
            // forgotten before it is freed.
            graph.add_finalize_action(FinalizeAction::new(
                move || {
                    OBJECTS.write().push(object);
                    Ok(())
                },
                move || {
                    OBJECTS.write().retain(|o| o.id != id);
                    Ok(())
                },
            ));
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
                    let c_name = c_name(*addr, plain_name(name.as_str()));
                    return fill(object.name.as_ptr(), object.start, c_name, *addr);
                }
            }
        }
    }
    let Some(name) = crate::lazy::stub_name_at(at) else { return 0 };
    static STUBS: &std::ffi::CStr = c"lazy stubs";
    fill(STUBS.as_ptr(), at, c_name(at, name), at)
}

/// The C string kept in [`C_NAMES`] for `name` at `addr`, made the first time.
fn c_name(addr: u64, name: String) -> *const libc::c_char {
    let mut names = C_NAMES.lock();
    let names = names.get_or_insert_with(FxHashMap::default);
    let c =
        names.entry((addr, name)).or_insert_with_key(|(_, n)| CString::new(n.replace('\0', "")).unwrap_or_default());
    // The string's heap buffer does not move when the map grows.
    c.as_ptr()
}

/// The address JIT'd code should bind `dladdr` to.
pub(crate) fn overrides() -> [(&'static str, usize); 1] {
    [("dladdr", dladdr as *const () as usize)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectLinkingLayer;
    use crate::object_layer::tests::c_object;
    use jit_core::ExecutionSession;
    use std::sync::Arc;

    /// JIT'd `dladdr`'s answer for `addr`: (object, function), or None.
    fn ask(addr: u64) -> Option<(String, String)> {
        // SAFETY: all-zero is a valid Dl_info (null pointers); `dladdr` fills it.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: a writable Dl_info; the address is only compared, never read.
        if unsafe { dladdr(addr as *const c_void, &mut info) } == 0 {
            return None;
        }
        // SAFETY: a nonzero answer points both names at NUL-terminated strings kept alive.
        let read = |p: *const libc::c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
        Some((read(info.dli_fname), read(info.dli_sname)))
    }

    /// An object's functions are named while its memory lives, and forgotten when its tracker
    /// is removed: a function linked later, even at the same address, is named as itself.
    #[test]
    fn a_removed_objects_functions_are_forgotten_and_their_memory_named_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let session = ExecutionSession::with_threads(1).unwrap();
        let layer = ObjectLinkingLayer::new(&session, jit_mem::default_manager(Default::default()).unwrap());
        layer.add_plugin(Arc::new(Symbolizer));
        let dylib = session.create_dylib("main").unwrap();
        let first = dylib.create_tracker();
        let old = c_object(tmp.path(), "old", "int redefined_old(int x) { return x * 3 + 1; }\n", &["-fPIC"]);
        layer.add_with_tracker(&dylib, "old.o", old, Some(&first)).unwrap();
        let old_addr = dylib.lookup("redefined_old").unwrap().addr.0;
        assert_eq!(ask(old_addr), Some(("old.o".to_string(), "redefined_old".to_string())));

        first.remove().unwrap();
        assert_eq!(ask(old_addr), None, "a freed object's function");
        let new = c_object(tmp.path(), "new", "int redefined_new(int x) { return x * 5 + 2; }\n", &["-fPIC"]);
        layer.add(&dylib, "new.o", new).unwrap();
        let new_addr = dylib.lookup("redefined_new").unwrap().addr.0;
        assert_eq!(ask(new_addr), Some(("new.o".to_string(), "redefined_new".to_string())));
        session.end_session().unwrap();
    }

    #[test]
    fn names_read_as_the_program_wrote_them() {
        assert_eq!(plain_name("luaV_execute.body"), "luaV_execute");
        assert_eq!(plain_name("luaV_execute.body.t2"), "luaV_execute");
        assert_eq!(plain_name("l_alloc.orcjit.3fa2.body"), "l_alloc");
        assert_eq!(plain_name("main"), "main");
    }
}
