// A no_std Rust object: statics, a mutable static, an external C call, a function pointer
// table, compiled by rustc for the small and large code models.
#![no_std]

unsafe extern "C" {
    fn getpid() -> i32;
}

pub static TABLE: [u64; 4] = [1, 2, 3, 4];
static mut COUNTER: u64 = 0;

#[unsafe(no_mangle)]
pub extern "C" fn rust_sum(n: usize) -> u64 {
    let s: u64 = TABLE.iter().take(n).fold(0, |a, b| a.wrapping_add(*b));
    // SAFETY: single-threaded test use.
    unsafe { COUNTER = COUNTER.wrapping_add(1) };
    // SAFETY: getpid is libc's.
    s.wrapping_add(unsafe { getpid() } as u64)
}

#[unsafe(no_mangle)]
pub extern "C" fn rust_counter() -> u64 {
    // SAFETY: single-threaded test use.
    unsafe { COUNTER }
}

#[unsafe(no_mangle)]
pub static RUST_CALLBACKS: [extern "C" fn(usize) -> u64; 1] = [rust_sum];

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
