//! What a link graph asks of a memory manager: segments by protection, lifetime, size and alignment.

use std::fmt;

/// The protection a segment has once finalized. Writable-and-executable is not representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Prot {
    /// Code: readable and executable.
    RX,
    /// Read-only data.
    R,
    /// Writable data.
    RW,
}

impl Prot {
    /// The three protections, in the order managers index them.
    pub const ALL: [Prot; 3] = [Prot::RX, Prot::R, Prot::RW];

    pub(crate) const fn index(self) -> usize {
        match self {
            Prot::RX => 0,
            Prot::R => 1,
            Prot::RW => 2,
        }
    }

    pub(crate) const fn to_libc(self) -> libc::c_int {
        match self {
            Prot::RX => libc::PROT_READ | libc::PROT_EXEC,
            Prot::R => libc::PROT_READ,
            Prot::RW => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prot::RX => "R-X",
            Prot::R => "R--",
            Prot::RW => "RW-",
        })
    }
}

/// How long a segment lives.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum SegmentLifetime {
    /// Lives until the finalized allocation is deallocated.
    #[default]
    Standard,
    /// Lives only until finalization completes (after the finalize actions ran), then is
    /// released: for data only finalize actions read, such as initializer tables.
    FinalizeOnly,
}

/// One segment of an allocation request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentRequest {
    /// Protection once finalized.
    pub prot: Prot,
    /// When the segment is released.
    pub lifetime: SegmentLifetime,
    /// Size in bytes (may be zero).
    pub size: u64,
    /// Alignment of the segment's start: a power of two, at most [`crate::MAX_ALIGN`].
    pub align: u64,
}

impl SegmentRequest {
    /// A standard-lifetime segment.
    pub const fn new(prot: Prot, size: u64, align: u64) -> SegmentRequest {
        SegmentRequest { prot, lifetime: SegmentLifetime::Standard, size, align }
    }

    /// The same segment with another lifetime.
    pub const fn with_lifetime(mut self, lifetime: SegmentLifetime) -> SegmentRequest {
        self.lifetime = lifetime;
        self
    }
}

/// Everything one link graph needs, allocated (and later freed) together.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct AllocRequest {
    /// The segments, in the order the in-flight allocation reports them.
    pub segments: Vec<SegmentRequest>,
}

impl AllocRequest {
    /// A request for these segments.
    pub fn new(segments: Vec<SegmentRequest>) -> AllocRequest {
        AllocRequest { segments }
    }

    /// Sum of the segment sizes: the bytes a caller asked for.
    pub fn requested_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
}
