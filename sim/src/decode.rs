//! The consumer side of fetched data: splits concatenated v2 record batches, checks each
//! batch's CRC the way a Kafka client does (`check.crcs`), and parses uncompressed records
//! whose values are 8-byte big-endian u64s. Never panics on garbage.

use broker::log::batch::HEADER_BYTES;
use broker::log::{crc_ok, RecordBatchHeader};

/// A fetched record: (offset, value).
pub type Decoded = (i64, u64);

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("record truncated")?;
        self.pos += 1;
        Ok(v)
    }

    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn varlong(&mut self) -> Result<i64, String> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| format!("varint {v} out of i32 range"))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.b.get(self.pos..end).ok_or("record field truncated")?;
        self.pos = end;
        Ok(s)
    }

    fn nullable(&mut self) -> Result<Option<&[u8]>, String> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        self.bytes(n as usize).map(Some)
    }
}

/// Decodes every record at or above `from` in `data` (whole batches as a fetch returns them).
/// Errors name the batch's base offset: a CRC mismatch or a malformed batch/record.
pub fn decode_fetch(data: &[u8], from: i64) -> Result<Vec<Decoded>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        let h = RecordBatchHeader::parse(rest)
            .ok_or_else(|| format!("fetch response ends in a partial header at byte {pos}"))?;
        let base = h.base_offset();
        let size = h.total_size();
        if size < HEADER_BYTES as i64 || size as u64 > rest.len() as u64 {
            return Err(format!(
                "batch at offset {base}: bad batch length {}",
                h.batch_length()
            ));
        }
        let batch = &rest[..size as usize];
        if !crc_ok(batch) {
            return Err(format!(
                "batch at offset {base}: CRC mismatch (corrupt data served)"
            ));
        }
        if h.compression() != 0 {
            return Err(format!("batch at offset {base}: unexpected compression"));
        }
        let count = h.record_count();
        if count < 0 || count != h.last_offset_delta() + 1 {
            return Err(format!("batch at offset {base}: bad record count {count}"));
        }
        let mut c = Cursor {
            b: &batch[HEADER_BYTES..],
            pos: 0,
        };
        for i in 0..count {
            let len = c.varint()?;
            if len < 0 {
                return Err(format!(
                    "batch at offset {base}: record {i} negative length"
                ));
            }
            let start = c.pos;
            let _attributes = c.byte()?;
            let _ts = c.varlong()?;
            let delta = c.varint()?;
            let _key = c.nullable()?;
            let value = c
                .nullable()?
                .ok_or_else(|| format!("batch at offset {base}: record {i} has a null value"))?;
            let value: [u8; 8] = value
                .try_into()
                .map_err(|_| format!("batch at offset {base}: record {i} value is not 8 bytes"))?;
            let headers = c.varint()?;
            for _ in 0..headers.max(0) {
                let k = c.varint()?;
                c.bytes(k.max(0) as usize)?;
                c.nullable()?;
            }
            if c.pos - start != len as usize {
                return Err(format!(
                    "batch at offset {base}: record {i} length mismatch"
                ));
            }
            let offset = base + i64::from(delta);
            if offset >= from {
                out.push((offset, u64::from_be_bytes(value)));
            }
        }
        if c.pos != batch.len() - HEADER_BYTES {
            return Err(format!(
                "batch at offset {base}: trailing bytes after records"
            ));
        }
        pos += size as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::log::testutil::simple_batch;

    #[test]
    fn round_trip_and_crc() {
        let v1 = 7u64.to_be_bytes();
        let v2 = 9u64.to_be_bytes();
        let mut b = simple_batch(1000, &[&v1, &v2]);
        broker::log::set_base_offset(&mut b, 40);
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert_eq!(decode_fetch(&b, 0).unwrap(), vec![(40, 7), (41, 9)]);
        assert_eq!(decode_fetch(&b, 41).unwrap(), vec![(41, 9)]);
        assert_eq!(decode_fetch(&two, 0).unwrap().len(), 4);
        let n = b.len();
        b[n - 3] ^= 1;
        assert!(decode_fetch(&b, 0).unwrap_err().contains("CRC"));
        assert!(decode_fetch(&b[..n - 1], 0).is_err());
    }
}
