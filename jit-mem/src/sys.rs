//! The operating system beneath the managers: page size, address-space reservations, fixed
//! mappings, protections, memfd and the instruction cache. Nothing here knows about slabs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::Prot;

/// The host page size, read once.
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a system parameter.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // A kernel that reports nonsense gets the smallest page any supported target has.
        usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
    })
}

pub(crate) const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// A range of address space that belongs to one manager: mapped `PROT_NONE` and
/// `MAP_NORESERVE`, so it costs neither memory nor commit charge until parts of it are
/// remapped with [`map_anonymous`] or [`map_shared`]. Unmapped, whole, on drop.
pub(crate) struct Reservation {
    base: usize,
    len: usize,
}

impl Reservation {
    /// Reserves `len` bytes (a page multiple) whose base is aligned to `align` (a power of
    /// two, at least a page).
    pub(crate) fn new(len: usize, align: usize) -> io::Result<Reservation> {
        Self::new_in(len, len, align, |base| base)
    }

    /// As [`new`](Self::new), for `len` at most 4 GiB, in a range that no multiple of 4 GiB
    /// splits (one may be its base). A manager never hands out the page at such a multiple
    /// (`slab::usable_space` says why), so inside a reservation it would cut the free space in
    /// two and a segment larger than either part would not fit. Reserves twice the space and
    /// gives back what it does not use.
    pub(crate) fn new_unsplit(len: usize, align: usize) -> io::Result<Reservation> {
        const FOUR_GIB: usize = 1 << 32;
        if len > FOUR_GIB {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let padded = len.checked_mul(2).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Self::new_in(padded, len, align, |base| unsplit_base(base, len))
    }

    /// Maps `span` bytes and the padding an `align`ed base needs, keeps the `len` of them that
    /// start at `place(the aligned base)` (which must stay aligned and inside the span), and
    /// unmaps the rest.
    fn new_in(span: usize, len: usize, align: usize, place: impl FnOnce(usize) -> usize) -> io::Result<Reservation> {
        let page = page_size();
        let align = align.max(page);
        let padded = span.checked_add(align - page).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous PROT_NONE mapping at a kernel-chosen address touches no
        // existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                padded,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let raw = raw as usize;
        let base = place((raw + align - 1) & !(align - 1));
        debug_assert!(base >= raw && base + len <= raw + padded && base % align == 0);
        // Trim the padding on both sides so the reservation is exactly [base, base+len).
        let head = base - raw;
        let tail = padded - head - len;
        // SAFETY: both ranges lie inside the mapping made above and belong to nobody else.
        unsafe {
            if head > 0 {
                libc::munmap(raw as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((base + len) as *mut libc::c_void, tail);
            }
        }
        Ok(Reservation { base, len })
    }

    pub(crate) fn base(&self) -> usize {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Reserves `len` bytes (a page multiple) aligned to `align` that lie entirely inside
    /// `[floor, limit)`, where `floor` is the lowest address the kernel lets a process map
    /// (`vm.mmap_min_addr`). The highest free range that fits is taken, which leaves the
    /// space just above a non-PIE executable to its `brk` heap.
    ///
    /// Free ranges are read from `/proc/self/maps`; the mapping is made with
    /// `MAP_FIXED_NOREPLACE`, so a range another thread mapped meanwhile is never clobbered:
    /// the search starts again instead (a few times, then gives up).
    pub(crate) fn new_below(len: usize, align: usize, limit: u64) -> Result<Reservation, LowReservationError> {
        let page = page_size() as u64;
        let align = (align as u64).max(page);
        let floor = align_up(mmap_min_addr().max(page), align);
        let len64 = len as u64;
        Self::map_chosen(len, |mappings| {
            let gaps = free_gaps(mappings, floor, limit);
            let largest_free = gaps.iter().map(|g| g.end - g.start).max().unwrap_or(0);
            let candidate = gaps.iter().rev().find_map(|g| {
                let base = g.end.checked_sub(len64)? & !(align - 1);
                (base >= g.start).then_some(base)
            });
            candidate.ok_or(LowReservationError::NoRoom { largest_free })
        })
    }

    /// Reserves `len` bytes aligned to `align` as near `anchor` as free space allows: of the
    /// free ranges, the place whose farthest byte is nearest `anchor`, holding no multiple of
    /// 4 GiB (as [`new_unsplit`](Self::new_unsplit)'s) if such a place lies within `reach`,
    /// else one that holds a multiple within an eighth of `len` from an end ([`Split`]).
    /// Being near is what the caller needs most (code reaching the anchor's neighbours with
    /// 32-bit displacements); such a split still fits a segment of seven eighths (the slabs
    /// skip the page at the multiple). It is needed when a multiple lies just under `len`
    /// past the libraries while other reservations fill the room below them: one run in 50 of
    /// jit-layers' object tests, whose PIE code then could not reach libc's `environ`.
    /// `None` if no place keeps every byte within `reach` of `anchor`, or mapping fails: the
    /// caller reserves anywhere instead.
    pub(crate) fn new_near(len: usize, align: usize, anchor: u64, reach: u64) -> Option<Reservation> {
        let len64 = len as u64;
        let chosen = Self::map_in_free_gaps(len, align, |gaps, align| {
            let nearest = |split: Split| {
                gaps.iter()
                    .filter_map(|g| nearest_base(g, len64, align, anchor, split))
                    .filter(|&(_, farthest)| farthest <= reach)
                    .min_by_key(|&(_, farthest)| farthest)
                    .map(|(base, _)| base)
            };
            nearest(Split::Avoid).or_else(|| nearest(Split::NearAnEnd))
        });
        chosen.ok()
    }

    /// Reserves `len` bytes aligned to `align` with no byte within `reach` of `anchor`: the
    /// highest such place below it (where the kernel's own top-down choice would go, past the
    /// anchor's surroundings), else the lowest above it; anywhere if neither exists. For
    /// ranges whose place does not matter (a dual-mapped manager's working view), so that
    /// they leave the room near the anchor to the reservations that need it: placed by the
    /// kernel, a working view took the free space just below the libraries, within reach of
    /// libc, and a second near-libc manager found no room on either side.
    pub(crate) fn new_away_from(len: usize, align: usize, anchor: u64, reach: u64) -> io::Result<Reservation> {
        let len64 = len as u64;
        let (window_start, window_end) = (anchor.saturating_sub(reach), anchor.saturating_add(reach));
        let chosen = Self::map_in_free_gaps(len, align, |gaps, align| {
            let below = gaps
                .iter()
                .filter_map(|g| {
                    let base = g.end.min(window_start).checked_sub(len64)? & !(align - 1);
                    (base >= align_up(g.start, align)).then_some(base)
                })
                .max();
            let above = || {
                gaps.iter()
                    .filter_map(|g| {
                        let base = align_up(g.start.max(window_end), align);
                        (base.checked_add(len64)? <= g.end).then_some(base)
                    })
                    .min()
            };
            below.or_else(above)
        });
        match chosen {
            Ok(reservation) => Ok(reservation),
            Err(_) => Self::new(len, align),
        }
    }

    /// Maps `len` bytes at the base `choose` picks, given the free ranges (between the
    /// process's mappings, above `vm.mmap_min_addr`, out of the room the main thread's stack
    /// may grow into) and the alignment (`align`, at least a page), as [`map_chosen`] does.
    ///
    /// [`map_chosen`]: Self::map_chosen
    fn map_in_free_gaps(
        len: usize,
        align: usize,
        choose: impl Fn(&[std::ops::Range<u64>], u64) -> Option<u64>,
    ) -> Result<Reservation, LowReservationError> {
        let page = page_size() as u64;
        let align = (align as u64).max(page);
        let floor = align_up(mmap_min_addr().max(page), align);
        let stack_room = stack_room();
        Self::map_chosen(len, |mappings| {
            let gaps = free_gaps(&with_stack_room(mappings, stack_room), floor, USER_SPACE_END);
            choose(&gaps, align).ok_or(LowReservationError::NoRoom { largest_free: 0 })
        })
    }

    /// Maps `len` bytes at the base `choose` picks from the process's mappings, with
    /// `MAP_FIXED_NOREPLACE`: a range another thread mapped since the maps were read is never
    /// clobbered, the maps are read again instead (a few times, then it gives up).
    fn map_chosen(
        len: usize,
        choose: impl Fn(&[crate::maps::Mapping]) -> Result<u64, LowReservationError>,
    ) -> Result<Reservation, LowReservationError> {
        let mut last = LowReservationError::NoRoom { largest_free: 0 };
        for _ in 0..8 {
            let mappings = crate::maps::process_mappings().map_err(LowReservationError::Os)?;
            let base = choose(&mappings)?;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: the kernel
            // fails with EEXIST instead, so this touches no memory anyone else owns.
            let raw = unsafe {
                libc::mmap(
                    base as usize as *mut libc::c_void,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EEXIST) {
                    // Someone mapped part of the range since the maps were read: look again.
                    last = LowReservationError::Os(e);
                    continue;
                }
                return Err(LowReservationError::Os(e));
            }
            if raw as usize as u64 == base {
                return Ok(Reservation { base: base as usize, len });
            }
            // A kernel older than 4.17 takes the unknown flag for a plain hint and may map
            // elsewhere: give that back and look again.
            // SAFETY: `raw` is the mapping made just above, used by nobody.
            unsafe { libc::munmap(raw, len) };
        }
        Err(last)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the reservation owns [base, base+len); whoever placed mappings inside it
        // (the managers) is being dropped with it, so nothing refers to these pages any more.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// Why [`Reservation::new_below`] failed.
#[derive(Debug)]
pub(crate) enum LowReservationError {
    /// No free range below the limit is large enough; the largest has this many bytes.
    NoRoom { largest_free: u64 },
    /// Reading the process's mappings or mapping failed.
    Os(io::Error),
}

/// The lowest address a process may map (`vm.mmap_min_addr`, 64 KiB unless configured).
fn mmap_min_addr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65_536)
}

/// The unmapped ranges inside `[floor, limit)`, in address order, given every mapping of
/// the process in address order.
fn free_gaps(mappings: &[crate::maps::Mapping], floor: u64, limit: u64) -> Vec<std::ops::Range<u64>> {
    let mut gaps = Vec::new();
    let mut cur = floor;
    for m in mappings {
        if m.range.start >= limit {
            break;
        }
        if m.range.start > cur {
            gaps.push(cur..m.range.start);
        }
        cur = cur.max(m.range.end);
    }
    if cur < limit {
        gaps.push(cur..limit);
    }
    gaps
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Replaces `[addr, addr+len)` with fresh zeroed private memory of protection `prot`
/// (`None`: back to an inaccessible, uncommitted reservation).
///
/// # Safety
/// The range must lie inside a [`Reservation`] and be owned by the caller: no live
/// allocation, working view or running code may use it.
pub(crate) unsafe fn map_anonymous(addr: usize, len: usize, prot: Option<Prot>) -> io::Result<()> {
    let (prot, extra) = match prot {
        Some(p) => (p.to_libc(), 0),
        None => (libc::PROT_NONE, libc::MAP_NORESERVE),
    };
    // SAFETY: MAP_FIXED replaces only the caller-owned range (the function's contract).
    let ret = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | extra,
            -1,
            0,
        )
    };
    if ret == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Maps `len` bytes of fresh zeroed private memory of protection `prot` where the kernel
/// chooses, outside any reservation; returns the address.
pub(crate) fn map_anonymous_anywhere(len: usize, prot: Prot) -> io::Result<usize> {
    // SAFETY: a fresh mapping at a kernel-chosen address touches no existing memory.
    let ret = unsafe {
        libc::mmap(std::ptr::null_mut(), len, prot.to_libc(), libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if ret == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
}

/// Gives the file pages under the shared, writable mapping `[addr, addr+len)` back to the
/// kernel (`MADV_REMOVE`: a hole punched in the file, through the mapping, so no descriptor is
/// needed); they read as zero after.
///
/// # Safety
/// The range must be page-aligned, part of a caller-owned shared writable file mapping, and
/// hold nothing anyone still uses.
pub(crate) unsafe fn remove_pages(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and nothing in it is used any more.
    check(unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_REMOVE) })
}

/// Unmaps `[addr, addr+len)`.
///
/// # Safety
/// The range must be a mapping the caller made with [`map_anonymous_anywhere`] and nothing
/// may refer to it any more.
pub(crate) unsafe fn unmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the mapping and no reference into it remains.
    check(unsafe { libc::munmap(addr as *mut libc::c_void, len) })
}

/// Maps `len` bytes of `file` at `offset` over `[addr, addr+len)`, shared, with `prot`.
///
/// # Safety
/// As for [`map_anonymous`].
pub(crate) unsafe fn map_shared(addr: usize, len: usize, prot: Prot, file: &Memfd, offset: u64) -> io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: MAP_FIXED replaces only the caller-owned range (the function's contract); the
    // file descriptor is open for as long as `file` lives.
    let ret = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot.to_libc(),
            libc::MAP_SHARED | libc::MAP_FIXED,
            file.fd.file().as_raw_fd(),
            offset,
        )
    };
    if ret == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Changes the protection of `[addr, addr+len)`.
///
/// # Safety
/// The range must be mapped, inside a reservation, and no access that the new protection
/// forbids may be in progress or expected (no running code on pages made non-executable, no
/// writer on pages made read-only).
pub(crate) unsafe fn protect(addr: usize, len: usize, prot: Prot) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is owned and the change disturbs nobody.
    check(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot.to_libc()) })
}

/// Zeroes `len` bytes at `ptr`.
///
/// # Safety
/// `[ptr, ptr+len)` must be writable memory owned by the caller.
pub(crate) unsafe fn zero(ptr: *mut u8, len: usize) {
    // SAFETY: the caller owns the writable range.
    unsafe { std::ptr::write_bytes(ptr, 0, len) }
}

/// A file this crate keeps open while JIT'd programs run. They may close descriptors they did
/// not open (daemons close every one above 2) and open files that get the same number, so the
/// file remembers what it named when opened (device and inode): [`HeldFile::is_intact`] tells
/// whether the number still names it, and one that no longer does is never closed (the number
/// is someone else's now).
pub(crate) struct HeldFile {
    file: std::mem::ManuallyDrop<std::fs::File>,
    identity: (u64, u64),
}

impl HeldFile {
    pub(crate) fn new(file: std::fs::File) -> io::Result<HeldFile> {
        let identity = identity(file.as_raw_fd()).ok_or_else(io::Error::last_os_error)?;
        Ok(HeldFile { file: std::mem::ManuallyDrop::new(file), identity })
    }

    pub(crate) fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Whether the descriptor still names the file opened (the program has not closed it, nor
    /// opened something else under its number).
    pub(crate) fn is_intact(&self) -> bool {
        identity(self.file.as_raw_fd()) == Some(self.identity)
    }
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        if self.is_intact() {
            // SAFETY: dropped once, here; the descriptor still names the file opened.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.file) };
        }
    }
}

/// The device and inode `fd` names, if it is open.
fn identity(fd: libc::c_int) -> Option<(u64, u64)> {
    // SAFETY: fstat writes a `stat` into the zeroed local; any descriptor number is allowed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev as u64, st.st_ino as u64))
}

/// An anonymous in-memory file (`memfd_create`): the physical pages that both views of the
/// dual-mapped manager share. Sparse: pages exist only once written. Held as a [`HeldFile`]:
/// the manager checks [`Memfd::is_intact`] before it maps the file again.
pub(crate) struct Memfd {
    fd: HeldFile,
}

impl Memfd {
    #[cfg(target_os = "linux")]
    pub(crate) fn create(name: &std::ffi::CStr, len: u64) -> Result<Memfd, (&'static str, io::Error)> {
        // SAFETY: `name` is a valid NUL-terminated string; the call creates a new descriptor.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(("memfd_create", io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = libc::off_t::try_from(len).map_err(|_| ("ftruncate", io::Error::from_raw_os_error(libc::EFBIG)))?;
        // SAFETY: ftruncate on an owned, open descriptor.
        check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map_err(|e| ("ftruncate", e))?;
        let fd = HeldFile::new(std::fs::File::from(fd)).map_err(|e| ("fstat", e))?;
        Ok(Memfd { fd })
    }

    #[cfg(test)]
    pub(crate) fn raw_fd(&self) -> libc::c_int {
        self.fd.file().as_raw_fd()
    }

    /// Whether the descriptor still names this file (see [`HeldFile`]).
    pub(crate) fn is_intact(&self) -> bool {
        self.fd.is_intact()
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn create(_name: &std::ffi::CStr, _len: u64) -> Result<Memfd, (&'static str, io::Error)> {
        // memfd is Linux-only; elsewhere the dual-mapped manager falls back to mprotect.
        Err(("memfd_create", io::Error::from(io::ErrorKind::Unsupported)))
    }

    /// Writes all of `bytes` at file offset `offset`.
    pub(crate) fn write_at(&self, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
        while !bytes.is_empty() {
            let at = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            // SAFETY: pwrite reads `bytes.len()` bytes of a live slice into an owned, open file.
            let n = unsafe { libc::pwrite(self.fd.file().as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), at) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            bytes = &bytes[n as usize..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// Makes the instruction cache coherent with freshly written code in `[ptr, ptr+len)`.
///
/// x86-64 keeps instruction and data caches coherent in hardware (Intel SDM vol. 3A §11.6,
/// "Self-Modifying Code"): cross-modifying code only needs the serializing event that the
/// later call or `mprotect` already provides, so this is a no-op there. Other targets must
/// clean the data cache and invalidate the instruction cache for the range.
pub fn flush_icache(ptr: *const u8, len: usize) {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    {
        unsafe extern "C" {
            fn __clear_cache(start: *mut libc::c_char, end: *mut libc::c_char);
        }
        // SAFETY: __clear_cache only performs cache maintenance over the range; it reads no
        // memory and is valid for any mapped range, which the caller's code range is.
        unsafe { __clear_cache(ptr as *mut libc::c_char, ptr.wrapping_add(len) as *mut libc::c_char) }
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        let _ = (ptr, len);
    }
}

/// Where in `[base, base + 2 len)` a range of `len` bytes (at most 4 GiB) starts so that no
/// multiple of 4 GiB lies inside it: at `base`, unless the first multiple above `base` comes
/// before `base + len`; then at that multiple, from where `len` bytes still fit. Multiples of
/// 4 GiB are aligned to anything a reservation asks for.
/// The end of x86-64 Linux's user address space with 4-level page tables (47 bits).
const USER_SPACE_END: u64 = 1 << 47;

/// How far below its lowest page the main thread's stack may still grow, which
/// `/proc/self/maps` shows as free: `RLIMIT_STACK`, at least the 128 MiB the kernel itself
/// keeps between the stack and the libraries (`mmap_base`), plus its 1 MiB guard gap; 4 GiB
/// for an unlimited stack.
fn stack_room() -> u64 {
    const MIN: u64 = 128 << 20;
    const GUARD: u64 = 1 << 20;
    // SAFETY: zeroed `rlimit` is a valid out-parameter for getrlimit.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a writable local.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } == 0;
    let cur = if !ok || limit.rlim_cur == libc::RLIM_INFINITY { 1 << 32 } else { limit.rlim_cur };
    cur.max(MIN).saturating_add(GUARD)
}

/// `mappings` (sorted by address) with the `room` below the main thread's stack (`[stack]`)
/// counted as mapped: a reservation there would stop the stack from growing.
fn with_stack_room(mappings: &[crate::maps::Mapping], room: u64) -> Vec<crate::maps::Mapping> {
    let mut all = mappings.to_vec();
    if let Some(stack) = mappings.iter().find(|m| m.name == "[stack]") {
        let mut grow = stack.clone();
        grow.range = stack.range.start.saturating_sub(room)..stack.range.start;
        grow.name = "[stack growth]".into();
        all.push(grow);
        all.sort_by_key(|m| m.range.start);
    }
    all
}

/// Whether a near reservation may hold a multiple of 4 GiB: never, or where one side of it
/// is at most an eighth of the reservation, so that a segment of seven eighths still fits
/// (`orcjit link` reserves a quarter more than its objects need, at least 64 MiB more).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Split {
    Avoid,
    NearAnEnd,
}

/// The `align`ed base in free range `gap` that puts `len` bytes nearest `anchor` (the
/// farthest byte nearest), holding a multiple of 4 GiB only as `split` allows; with that
/// farthest distance.
fn nearest_base(gap: &std::ops::Range<u64>, len: u64, align: u64, anchor: u64, split: Split) -> Option<(u64, u64)> {
    const FOUR_GIB: u64 = 1 << 32;
    let lo = align_up(gap.start, align);
    let hi = gap.end.checked_sub(len)? & !(align - 1);
    if lo > hi {
        return None;
    }
    let farthest = |base: u64| anchor.abs_diff(base).max(anchor.abs_diff(base + len));
    let ideal = (anchor.saturating_sub(len / 2) & !(align - 1)).clamp(lo, hi);
    // How far the multiple may lie from either end.
    let slack = match split {
        Split::Avoid => 0,
        Split::NearAnEnd => (len / 8) & !(align - 1),
    };
    let boundary = ideal.next_multiple_of(FOUR_GIB);
    let mut candidates: [Option<u64>; 3] = [Some(ideal), None, None];
    if boundary > ideal && boundary < ideal + len && (boundary - ideal).min(ideal + len - boundary) > slack {
        // Split by a multiple of 4 GiB too far from both ends: moved up until the multiple
        // lies `slack` past its base, or down until it lies `slack` before its end.
        candidates = [
            None,
            Some(boundary - slack).filter(|&b| b <= hi),
            (boundary + slack).checked_sub(len).filter(|&b| b >= lo),
        ];
    }
    candidates.into_iter().flatten().map(|base| (base, farthest(base))).min_by_key(|&(_, far)| far)
}

fn unsplit_base(base: usize, len: usize) -> usize {
    const FOUR_GIB: usize = 1 << 32;
    let boundary = base.next_multiple_of(FOUR_GIB);
    if boundary > base && boundary < base + len { boundary } else { base }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::Mapping;

    #[test]
    fn an_unsplit_range_holds_no_multiple_of_4_gib_and_fits_in_twice_its_length() {
        const G: usize = 1 << 30;
        for (base, len) in [
            (0x7f00_0000_0000, 2 * G),                     // a multiple: kept
            (0x7f00_0000_0000 + G, 2 * G),                 // ends at a multiple: kept
            (0x7f00_0000_0000 + 3 * G, 2 * G),             // straddles: moved up to the multiple
            (0x7f00_0000_0000 + 4 * G - 0x10000, 2 * G),   // straddles by one alignment unit
            (0x7f00_0000_0000 + 3 * G + 0x10000, 0x10000), // small, clear of any multiple
        ] {
            let at = unsplit_base(base, len);
            assert!(at >= base && at + len <= base + 2 * len, "{base:#x}+{len:#x} -> {at:#x}");
            assert_eq!(at >> 32, (at + len - 1) >> 32, "{base:#x}+{len:#x} -> {at:#x} is split");
            assert_eq!(at % 0x10000, 0);
        }
        assert_eq!(unsplit_base(0x7f00_0000_0000 + 3 * G, 2 * G), 0x7f01_0000_0000);
        assert_eq!(unsplit_base(0x7f00_0000_0000 + G, 2 * G), 0x7f00_0000_0000 + G);
    }

    fn mapping(range: std::ops::Range<u64>) -> Mapping {
        Mapping { range, read: true, write: false, exec: false, shared: false, name: String::new() }
    }

    /// The base nearest the anchor: the top of a gap below it, the bottom of a gap above it,
    /// centred on it in a gap that holds it; never across a multiple of 4 GiB; none in a gap
    /// too small.
    #[test]
    fn a_near_base_is_as_near_its_anchor_as_its_gap_allows() {
        const M: u64 = 1 << 20;
        let page = 0x1000;
        let anchor = 0x6000_0000;
        assert_eq!(
            nearest_base(&(0x1000_0000..0x5000_0000), 256 * M, page, anchor, Split::Avoid),
            Some((0x4000_0000, 0x2000_0000))
        );
        assert_eq!(
            nearest_base(&(0x7000_0000..0x9000_0000), 256 * M, page, anchor, Split::Avoid),
            Some((0x7000_0000, 0x2000_0000))
        );
        assert_eq!(
            nearest_base(&(0x1000_0000..0x9000_0000), 256 * M, page, anchor, Split::Avoid),
            Some((0x5800_0000, 0x0800_0000))
        );
        assert_eq!(nearest_base(&(0x1000_0000..0x1100_0000), 256 * M, page, anchor, Split::Avoid), None);
        // Across 4 GiB: just above the boundary, the only side with room here.
        let four = 1u64 << 32;
        let got = nearest_base(&(four - 256 * M..four + 768 * M), 512 * M, page, four, Split::Avoid);
        assert_eq!(got, Some((four, 512 * M)));
        // Allowed to hold the multiple an eighth from an end: 64 MiB of it below.
        let got = nearest_base(&(four - 256 * M..four + 768 * M), 512 * M, page, four, Split::NearAnEnd);
        assert_eq!(got, Some((four - 64 * M, 448 * M)));
        // As seen in CI: a gap that starts just above the loader, with a multiple of 4 GiB
        // 1,017 MiB past the anchor. Unsplit, 1 GiB reaches 2,041 MiB away, out of reach; split,
        // it starts at the gap.
        let (anchor, gap) = (0x7f6b_c063_b320, 0x7f6b_c06b_0000..0x7ffc_0000_0000);
        let unsplit = nearest_base(&gap, 1024 * M, 1 << 16, anchor, Split::Avoid).unwrap();
        assert_eq!(unsplit.0, 0x7f6c_0000_0000);
        assert!(unsplit.1 > crate::NEAR_REACH);
        let split = nearest_base(&gap, 1024 * M, 1 << 16, anchor, Split::NearAnEnd).unwrap();
        assert_eq!(split.0, gap.start);
        assert!(split.1 <= crate::NEAR_REACH);
    }

    /// A reservation near libc's `environ`, as large as a manager's, lies within reach of it,
    /// and out of the room the main thread's stack may grow into; though the other tests of
    /// this binary hold reservations of a GiB or more just below the libraries meanwhile.
    #[test]
    fn a_near_reservation_reaches_its_anchor_and_leaves_the_stack_room() {
        // SAFETY: dlsym only reads the loader's tables; the name is a NUL-terminated literal.
        let anchor = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"environ".as_ptr()) } as u64;
        assert_ne!(anchor, 0);
        let reach = crate::NEAR_REACH;
        let Some(near) = Reservation::new_near(crate::DEFAULT_RESERVATION as usize, 1 << 16, anchor, reach) else {
            let maps = crate::maps::process_mappings().unwrap();
            let window = anchor.saturating_sub(reach)..anchor + reach;
            let shown: Vec<String> = maps
                .iter()
                .filter(|m| m.range.end > window.start && m.range.start < window.end || m.name == "[stack]")
                .map(|m| format!("{:#x}..{:#x} {}", m.range.start, m.range.end, m.name))
                .collect();
            panic!("no room near libc's environ at {anchor:#x}, stack room {:#x}:\n{}", stack_room(), shown.join("\n"));
        };
        let (start, end) = (near.base() as u64, (near.base() + near.len()) as u64);
        assert!(anchor.abs_diff(start) <= reach && anchor.abs_diff(end) <= reach, "{start:#x}..{end:#x}");
        let maps = crate::maps::process_mappings().unwrap();
        let stack = maps.iter().find(|m| m.name == "[stack]").expect("a main stack");
        let room = stack.range.start - stack_room();
        assert!(end <= room || start >= stack.range.end, "{start:#x}..{end:#x} in the stack's room");
    }

    #[test]
    fn free_gaps_lie_between_mappings_inside_the_window() {
        let maps =
            [mapping(0x1000..0x5000), mapping(0x8000..0x9000), mapping(0x9000..0xA000), mapping(0x20000..0x30000)];
        assert_eq!(free_gaps(&maps, 0x2000, 0x28000), vec![0x5000..0x8000, 0xA000..0x20000]);
        assert_eq!(free_gaps(&maps, 0x10000, 0x40000), vec![0x10000..0x20000, 0x30000..0x40000]);
        assert_eq!(free_gaps(&[], 0x10000, 0x20000), vec![0x10000..0x20000]);
    }
}

/// For tests: a scratch file of `len` zero bytes (unlinked at once), put under descriptor
/// number `fd` in place of whatever was there, as a program that closes descriptors it did not
/// open and opens a file of its own may do. Returns the file, to read back.
#[cfg(test)]
pub(crate) fn replace_descriptor_with_scratch_file(fd: libc::c_int, len: u64) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("orcjit-jit-mem-scratch-{}-{fd}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(len).unwrap();
    // SAFETY: dup2 onto a descriptor number the test owns (its own manager's), closing it.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), fd) }, fd);
    file
}

/// For tests: whether every byte of `file` is zero.
#[cfg(test)]
pub(crate) fn all_zero(file: &std::fs::File) -> bool {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut f = file.try_clone().unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut bytes).unwrap();
    bytes.iter().all(|&b| b == 0)
}
