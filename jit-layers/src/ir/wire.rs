//! The little-endian encoding of the records the IR layers keep in the object cache: `u32`
//! counts and lengths, strings as a length and their UTF-8 bytes.

pub(crate) fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_strings(out: &mut Vec<u8>, strings: &[String]) {
    put_u32(out, strings.len());
    for s in strings {
        put_str(out, s);
    }
}

/// Reads what the `put_` functions wrote; every read is `None` past the end.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    pub(crate) fn strings(&mut self) -> Option<Vec<String>> {
        (0..self.u32()?).map(|_| self.string()).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
