//! Shared by the integration tests: managers by name, the typical small object, and real
//! x86-64 machine code.
#![allow(dead_code)]

use std::sync::Arc;

use jit_mem::*;

pub const ALL: [&str; 4] = ["dual", "mprotect", "mprotect-in-place", "page"];

pub fn manager(name: &str, config: ManagerConfig) -> Arc<dyn MemoryManager> {
    match manager_by_name(name, config) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{name}: {e}"),
        None => panic!("no manager called {name}"),
    }
}

/// 256 B of code, 64 B of read-only data, 32 B of data.
pub fn small_object() -> AllocRequest {
    AllocRequest::new(vec![
        SegmentRequest::new(Prot::RX, 256, 16),
        SegmentRequest::new(Prot::R, 64, 8),
        SegmentRequest::new(Prot::RW, 32, 8),
    ])
}

/// `fn(x: u32) -> u32 { x + *rodata }`, reaching the read-only data PC-relatively.
///
/// Encodings (Intel SDM vol. 2, x86-64 System V psABI: first argument in edi, result in eax):
///   89 F8             mov eax, edi            (MOV r/m32, r32: 89 /r; ModRM 11 111 000)
///   03 05 <disp32>    add eax, [rip+disp32]   (ADD r32, r/m32: 03 /r; ModRM 00 000 101 is
///                                              RIP-relative in 64-bit mode, SDM 2.2.1.6)
///   C3                ret                     (RET near)
/// disp32 is relative to the end of the add, 8 bytes into the function.
pub fn add_rodata_fn(code_target: TargetAddr, rodata_target: TargetAddr) -> Vec<u8> {
    let disp = rodata_target.0 as i64 - (code_target.0 as i64 + 8);
    let disp = i32::try_from(disp).expect("rodata within rel32 reach of the code");
    let mut code = vec![0x89, 0xF8, 0x03, 0x05];
    code.extend_from_slice(&disp.to_le_bytes());
    code.push(0xC3);
    code
}

/// `fn() -> u32 { imm }`: B8 <imm32> (MOV r32, imm32: B8+rd id, SDM vol. 2B), C3 (RET).
pub fn return_imm_fn(imm: u32) -> Vec<u8> {
    let mut code = vec![0xB8];
    code.extend_from_slice(&imm.to_le_bytes());
    code.push(0xC3);
    code
}

/// Calls finalized code at `target` as `extern "C" fn(u32) -> u32`.
///
/// # Safety
/// `target` must hold finalized, executable code with that signature.
pub unsafe fn call1(target: TargetAddr, arg: u32) -> u32 {
    // SAFETY: the caller guarantees `target` is executable code of this signature.
    let f: extern "C" fn(u32) -> u32 = unsafe { std::mem::transmute(target.as_ptr::<u8>()) };
    f(arg)
}

/// Reads `len` bytes at a target address.
///
/// # Safety
/// `[target, target+len)` must be mapped readable memory of a live allocation.
pub unsafe fn read_target(target: TargetAddr, len: usize) -> Vec<u8> {
    // SAFETY: per the caller.
    unsafe { std::slice::from_raw_parts(target.as_ptr::<u8>(), len).to_vec() }
}

/// Every mapping of this process that is writable and executable at once.
pub fn writable_executable_mappings() -> Vec<maps::Mapping> {
    maps::process_mappings().expect("read /proc/self/maps").into_iter().filter(|m| m.write && m.exec).collect()
}
