//! `StoredRecords`: whole stored batches as one read found them, named rather than copied.
//!
//! Each part is a region of a segment file (sent by the kernel, or read when the response is
//! written) or, where the storage cannot name its bytes, a copy made at read time. Parts
//! follow each other in log order and together hold whole batches only.

use std::io;

use bytes::{Bytes, BytesMut};

use crate::storage::FileRegion;

/// One run of stored bytes.
#[derive(Clone, Debug)]
pub enum RecordsPart {
    Bytes(Bytes),
    File(FileRegion),
}

impl RecordsPart {
    pub fn len(&self) -> usize {
        match self {
            RecordsPart::Bytes(b) => b.len(),
            RecordsPart::File(r) => r.len() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole batches read from a log, in order.
#[derive(Clone, Debug, Default)]
pub struct StoredRecords {
    parts: Vec<RecordsPart>,
    len: usize,
}

impl StoredRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records already in memory.
    pub fn from_bytes(bytes: Bytes) -> Self {
        let mut r = Self::new();
        r.push(RecordsPart::Bytes(bytes));
        r
    }

    pub fn push(&mut self, part: RecordsPart) {
        if part.is_empty() {
            return;
        }
        self.len = self
            .len
            .checked_add(part.len())
            .expect("stored records fit in memory's address space");
        self.parts.push(part);
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn parts(&self) -> &[RecordsPart] {
        &self.parts
    }

    /// The bytes, copied out of their files now if they are not in memory already.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        if let [RecordsPart::Bytes(b)] = self.parts.as_slice() {
            return Ok(b.clone());
        }
        let mut out = BytesMut::zeroed(self.len);
        let mut at = 0usize;
        for part in &self.parts {
            let n = part.len();
            match part {
                RecordsPart::Bytes(b) => out[at..at + n].copy_from_slice(b),
                RecordsPart::File(r) => r.read_into(0, &mut out[at..at + n])?,
            }
            at += n;
        }
        debug_assert_eq!(at, self.len);
        Ok(out.freeze())
    }
}
