//! `.eh_frame`: split into CIE and FDE records with edges, and registered with the
//! process's unwinder while the graph's memory lives, so C++ exceptions unwind through
//! JIT'd frames.

mod register;
mod split;

pub use register::register_eh_frame;
pub use split::{EH_FRAME_SECTION, split_eh_frame};
