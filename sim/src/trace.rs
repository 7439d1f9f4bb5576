//! The run's event trace: every line is hashed (FNV-1a 64, written out here so it can never
//! change under us) and kept only when asked for.

use std::fmt::{self, Write as _};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

pub struct Trace {
    hash: u64,
    lines: u64,
    text: Option<String>,
    buf: String,
}

impl Trace {
    pub fn new(keep: bool) -> Self {
        Trace {
            hash: FNV_OFFSET,
            lines: 0,
            text: keep.then(String::new),
            buf: String::with_capacity(256),
        }
    }

    /// Appends one line `"<time_ns> <message>\n"`.
    pub fn line(&mut self, time_ns: u64, args: fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = write!(self.buf, "{time_ns:>12} ");
        let _ = self.buf.write_fmt(args);
        self.buf.push('\n');
        self.hash = fnv1a(self.hash, self.buf.as_bytes());
        self.lines += 1;
        if let Some(t) = &mut self.text {
            t.push_str(&self.buf);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn take_text(&mut self) -> Option<String> {
        self.text.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn same_lines_same_hash() {
        let mut a = Trace::new(false);
        let mut b = Trace::new(true);
        a.line(5, format_args!("x {}", 1));
        b.line(5, format_args!("x {}", 1));
        assert_eq!(a.hash(), b.hash());
        assert_eq!(b.take_text().unwrap(), "           5 x 1\n");
        a.line(6, format_args!("y"));
        assert_ne!(a.hash(), b.hash());
    }
}
