//! A Rust static library with the standard library in it (`rustc --crate-type staticlib`),
//! called from C: collections, `println!`, threads, a `thread_local!` used from several
//! codegen units (which reach it with the local-dynamic TLS model: its units must be linked
//! in one graph), and a panic caught with `catch_unwind` after a hook reports it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::raw::c_char;

thread_local! { static CALLS: RefCell<u32> = RefCell::new(0); }

#[no_mangle]
pub extern "C" fn rs_word_counts(text: *const c_char) -> u32 {
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for w in text.split_whitespace() { *counts.entry(w).or_default() += 1; }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort();
    for (w, c) in &v { println!("{w}: {c}"); }
    CALLS.with(|c| *c.borrow_mut() += 1);
    v.len() as u32
}

#[no_mangle]
pub extern "C" fn rs_threads(n: u32) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| std::thread::spawn(move || {
        CALLS.with(|c| *c.borrow_mut() += i);
        (0..1000u64).map(|x| x * i as u64).sum::<u64>() + CALLS.with(|c| *c.borrow()) as u64
    })).collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[no_mangle]
pub extern "C" fn rs_catch_panic(x: i32) -> i32 {
    std::panic::set_hook(Box::new(|info| eprintln!("panic hook: {}", info.payload().downcast_ref::<&str>().unwrap_or(&"?"))));
    let r = std::panic::catch_unwind(|| { if x > 2 { panic!("too big") } x * 10 });
    let _ = std::panic::take_hook();
    match r { Ok(v) => v, Err(_) => -1 }
}
