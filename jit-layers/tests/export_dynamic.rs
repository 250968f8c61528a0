//! Libraries that JIT'd code loads with `dlopen` see the symbols the JIT defines, including
//! those defined after an earlier `dlopen` (a REPL adding definitions), and only when the JIT
//! exports them.

mod common;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use jit_layers::{ObjectJit, StaticLibrary};

fn clang(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out_name = if flags.contains(&"-shared") { format!("{name}.so") } else { format!("{name}.o") };
    let out = dir.join(out_name);
    let status = Command::new("clang-19").args(["-O1", "-fPIC"]).args(flags).arg(&src).arg("-o").arg(&out).output();
    let status = status.unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    out
}

/// JIT'd helpers: `ed_load(path)` is `dlopen(path, RTLD_NOW)`, `ed_call(handle, name)` calls
/// the library's `int name(void)`, `ed_error()` is `dlerror()`.
const LOADER: &str = r#"
#include <dlfcn.h>
void *ed_load(const char *path) { return dlopen(path, RTLD_NOW); }
int ed_call(void *handle, const char *name) { int (*f)(void) = (int (*)(void))dlsym(handle, name); return f ? f() : -1; }
const char *ed_error(void) { return dlerror(); }
"#;

type Load = unsafe extern "C" fn(*const libc::c_char) -> *mut libc::c_void;
type Call = unsafe extern "C" fn(*mut libc::c_void, *const libc::c_char) -> i32;
type DlError = unsafe extern "C" fn() -> *const libc::c_char;

/// Has JIT'd code (`LOADER`, added to `jit`) load `plugin` and call its `int name(void)`; the
/// loader's `dlerror()` message if the library does not load.
fn load_and_call(jit: &ObjectJit, plugin: &Path, name: &CStr) -> Result<i32, String> {
    let load: Load = jit.lookup("ed_load").unwrap();
    let call: Call = jit.lookup("ed_call").unwrap();
    let error: DlError = jit.lookup("ed_error").unwrap();
    let path = CString::new(plugin.to_str().unwrap()).unwrap();
    // SAFETY: the JIT'd functions of LOADER, with their C signatures; dlerror's message is a
    // C string valid until the next dl* call, copied at once.
    unsafe {
        let handle = load(path.as_ptr());
        if handle.is_null() {
            return Err(CStr::from_ptr(error()).to_string_lossy().into_owned());
        }
        Ok(call(handle, name.as_ptr()))
    }
}

#[test]
fn a_later_dlopen_sees_symbols_defined_after_an_earlier_one() {
    let _watchdog = common::watchdog("export_dynamic: later definitions");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let loader = clang(dir, "loader", LOADER, &["-c"]);
    let first = clang(dir, "first", "int ed_first(void) { return 1; }", &["-c"]);
    let second = clang(dir, "second", "int ed_second_value = 2;", &["-c"]);
    let p1 = clang(dir, "p1", "int ed_first(void); int p1(void) { return ed_first() + 10; }", &["-shared"]);
    let p2 =
        clang(dir, "p2", "extern int ed_second_value; int p2(void) { return ed_second_value + 20; }", &["-shared"]);

    let jit = ObjectJit::builder().threads(2).build().unwrap();
    jit.add_object_file(&loader).unwrap();
    jit.add_object_file(&first).unwrap();
    assert_eq!(load_and_call(&jit, &p1, c"p1"), Ok(11));
    jit.add_object_file(&second).unwrap();
    assert_eq!(load_and_call(&jit, &p2, c"p2"), Ok(22), "ed_second_value, defined later, was not published");
    jit.end().unwrap();
}

#[test]
fn without_export_dynamic_a_library_does_not_see_the_jit_s_symbols() {
    let _watchdog = common::watchdog("export_dynamic: off");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let loader = clang(dir, "loader", LOADER, &["-c"]);
    let hidden = clang(dir, "hidden", "int ed_unexported(void) { return 3; }", &["-c"]);
    let p3 = clang(dir, "p3", "int ed_unexported(void); int p3(void) { return ed_unexported(); }", &["-shared"]);

    let jit = ObjectJit::builder().threads(1).export_dynamic(false).build().unwrap();
    jit.add_object_file(&loader).unwrap();
    jit.add_object_file(&hidden).unwrap();
    let message = load_and_call(&jit, &p3, c"p3").expect_err("p3.so loaded without the JIT's symbols");
    assert!(message.contains("undefined symbol: ed_unexported"), "{message}");
    jit.end().unwrap();
}

/// An object nothing has called yet is linked when its symbols are published, and the
/// static-library members that linking pulls in are published too, as a native link would
/// have linked and exported them.
#[test]
fn members_that_publishing_pulls_from_a_static_library_are_published_too() {
    let _watchdog = common::watchdog("export_dynamic: pulled members");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let loader = clang(dir, "loader", LOADER, &["-c"]);
    let uncalled = clang(dir, "uncalled", "int ed_d_fn(void); int ed_c_fn(void) { return ed_d_fn(); }", &["-c"]);
    let member =
        clang(dir, "member", "int ed_d_fn(void) { return 4; } int ed_d_exported(void) { return 40; }", &["-c"]);
    let archive = dir.join("libd.a");
    let out = Command::new("ar").arg("rcs").arg(&archive).arg(&member).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p4 = clang(dir, "p4", "int ed_d_exported(void); int p4(void) { return ed_d_exported() + 1; }", &["-shared"]);

    let library = StaticLibrary::parse("libd.a", std::fs::read(&archive).unwrap()).unwrap();
    let jit = ObjectJit::builder().threads(2).static_library(library).build().unwrap();
    jit.add_object_file(&loader).unwrap();
    jit.add_object_file(&uncalled).unwrap();
    assert_eq!(load_and_call(&jit, &p4, c"p4"), Ok(41), "the member ed_c_fn pulled in was not published");
    jit.end().unwrap();
}
