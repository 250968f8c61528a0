//! Addresses where JIT'd code and data run: the executor's view of memory.

use std::fmt;

/// An address in the executing process: where a segment's bytes live once finalized.
///
/// Distinct from the *working* address (where the linker writes), which may be a second
/// mapping of the same memory. Plain `u64` so that out-of-process executors fit the same type.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TargetAddr(pub u64);

impl TargetAddr {
    /// The address `delta` bytes past this one.
    pub const fn offset(self, delta: u64) -> TargetAddr {
        TargetAddr(self.0.wrapping_add(delta))
    }

    /// The address as a pointer in this process (meaningful for in-process managers).
    pub fn as_ptr<T>(self) -> *const T {
        self.0 as usize as *const T
    }

    /// The address of a pointer in this process.
    pub fn from_ptr<T>(ptr: *const T) -> TargetAddr {
        TargetAddr(ptr as usize as u64)
    }
}

impl fmt::Debug for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
