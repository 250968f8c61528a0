//! Reading `/proc/self/maps`: how many kernel mappings a manager's ranges hold, the process
//! total against `vm.max_map_count`, and whether any mapping is writable and executable.

use std::io;
use std::ops::Range;

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Address range of the mapping.
    pub range: Range<u64>,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Shared (as opposed to private copy-on-write).
    pub shared: bool,
    /// The path or pseudo-name column, if any.
    pub name: String,
}

/// Every mapping of this process, in address order.
pub fn process_mappings() -> io::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
    Ok(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let name = fields.nth(3).map(str::to_owned).unwrap_or_default();
    if perms.len() < 4 {
        return None;
    }
    Some(Mapping {
        range: u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        name,
    })
}

/// How many mappings intersect any of `ranges`. Streams the file line by line: near the
/// mapping limit a heap buffer for all of it may not be available.
pub(crate) fn count_in(ranges: &[Range<u64>]) -> u64 {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open("/proc/self/maps") else {
        return 0;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| parse_line(&line))
        .filter(|m| ranges.iter().any(|r| m.range.start < r.end && r.start < m.range.end))
        .count() as u64
}

/// The number of mappings the whole process holds. Reads through a stack buffer: this is
/// asked when the kernel just refused a mapping, when a heap buffer big enough for the whole
/// file may itself need one.
pub(crate) fn process_total() -> u64 {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open("/proc/self/maps") else {
        return 0;
    };
    let mut buf = [0u8; 8192];
    let mut lines = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return lines,
            Ok(n) => lines += buf[..n].iter().filter(|&&c| c == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return lines,
        }
    }
}

/// The kernel's per-process mapping limit (`vm.max_map_count`).
pub fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65_530)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_maps_line_with_and_without_a_name() {
        let m = parse_line("7f0000000000-7f0000001000 r-xs 00000000 00:01 1234   /memfd:orcjit (deleted)").unwrap();
        assert_eq!(m.range, 0x7f00_0000_0000..0x7f00_0000_1000);
        assert!(m.read && !m.write && m.exec && m.shared);
        assert_eq!(m.name, "/memfd:orcjit");
        let anon = parse_line("10000-20000 ---p 00000000 00:00 0").unwrap();
        assert!(!anon.read && !anon.write && !anon.exec && !anon.shared);
        assert_eq!(anon.name, "");
    }

    #[test]
    fn this_process_has_mappings() {
        assert!(process_total() > 0);
        assert!(process_mappings().unwrap().iter().any(|m| m.exec));
    }
}
