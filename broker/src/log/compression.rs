//! Bounded decompression of compressed v2 record batches, for produce-time validation and for
//! the broker's own readers. The broker still stores and serves batches exactly as received;
//! this only proves that a compressed batch's records section decompresses and holds exactly
//! the records its header declares, so no consumer is ever handed a batch it cannot read.
//!
//! Each codec is read as a stream (gzip via `flate2`, snappy via `snap` in Kafka's xerial
//! framing or as one raw block, LZ4 frames via `lz4_flex`, zstd via `zstd` with a bounded
//! window), and the records are walked straight off the stream through a small fixed buffer:
//! nothing ever holds the whole decompressed output, and decompression stops as soon as it has
//! produced more than its limit (a "zip bomb" is refused, not inflated to the end).
//!
//! Memory per walk is fixed by the codec, never by the input: gzip's 32 KiB window, an LZ4
//! frame's block buffers (at most 2 x 4 MiB + 64 KiB, for the format's largest block), zstd's
//! window (at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes). Snappy is the exception: a snappy block is
//! only decodable whole, so one block's declared length is allocated, checked first against the
//! remaining limit and against snappy's densest encoding of the compressed bytes at hand (at
//! most 22x: about 22 MiB for a 1 MiB batch).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// Most bytes the records of one produce buffer (one partition's batches in a request) may
/// decompress to; more is refused as a decompression bomb.
///
/// 64 MiB: 64x Kafka's default `max.message.bytes` (1 MiB), far beyond what real producers
/// reach. Producers bound a batch before compressing it (librdkafka's `batch.size` and
/// `message.max.bytes` count uncompressed bytes, 1 MB by default; Java's `batch.size` is
/// 16 KiB by default), and real record data compresses 3-10x, rarely past 30x. At the same time
/// it caps the CPU one produce buffer can cost (gzip, the slowest codec, inflates a few hundred
/// MB/s: well under a second; zstd and lz4 are faster) and the memory a snappy block may take.
pub const DECOMPRESSED_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest zstd window accepted, as a power of two: 2^23 = 8 MiB. zstd frames declare their
/// window and a decoder must allocate it, so a hostile frame could ask for 2 GiB. Every level up
/// to 19 uses a window of at most 8 MiB (librdkafka pledges the input size, which shrinks the
/// window further); only the "ultra" levels 20-22 and long-distance mode need more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The fixed buffer the records are walked through.
pub const SCRATCH_BYTES: usize = 8 * 1024;

/// Kafka's xerial ("snappy-java") stream header: magic, then version and compatible version.
pub const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_XERIAL_HEADER_BYTES: usize = 16;
/// Snappy's densest element is a 3-byte copy of 64 bytes: no block decompresses to more than
/// 64/3 of its compressed size (plus its length prefix).
const SNAPPY_EXPANSION_MAX: u64 = 22;

/// A batch compression codec (attributes & 0x07).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec of a compression attribute value; None for 0 (none) and unknown values.
    pub fn from_id(id: i16) -> Option<Codec> {
        match id {
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }
    pub fn id(self) -> i16 {
        match self {
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Why a compressed records section was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// The payload is not a valid stream of its codec (Kafka CORRUPT_MESSAGE).
    Corrupt(String),
    /// It decompresses, but the records in it are malformed or do not match the header
    /// (Kafka INVALID_RECORD, as for an uncompressed batch).
    Invalid(String),
    /// It decompresses to more than the limit (Kafka INVALID_RECORD); `limit_bytes` is the
    /// limit that was in force.
    TooLarge { limit_bytes: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Corrupt(m) | WalkError::Invalid(m) => f.write_str(m),
            WalkError::TooLarge { limit_bytes } => write!(
                f,
                "records decompress to more than {limit_bytes} bytes (decompression limit)"
            ),
        }
    }
}

/// The io error a limited reader returns once past its limit.
#[derive(Debug)]
struct LimitExceeded;
impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("decompression limit exceeded")
    }
}
impl std::error::Error for LimitExceeded {}

fn limit_exceeded() -> io::Error {
    io::Error::other(LimitExceeded)
}

fn is_limit_exceeded(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>())
}

/// Counts what a decompressor produces and fails once it has produced more than `limit`.
struct Limited<R> {
    inner: R,
    produced: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for at most one byte past the limit: enough to tell "ends here" from "goes on".
        let room = (self.limit - self.produced.min(self.limit)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.produced += n as u64;
        if self.produced > self.limit {
            return Err(limit_exceeded());
        }
        Ok(n)
    }
}

/// Snappy as Kafka clients write it: xerial framing (Java, librdkafka's Java-compatible path),
/// or one raw block (some clients). Decodes one block at a time into a reused buffer.
struct SnappyReader<'a> {
    /// Compressed bytes not yet decoded.
    rest: &'a [u8],
    xerial: bool,
    block: Vec<u8>,
    block_pos: usize,
    /// Sum of the declared lengths of the blocks decoded so far.
    declared: u64,
    limit: u64,
    decoder: snap::raw::Decoder,
}

impl<'a> SnappyReader<'a> {
    fn new(compressed: &'a [u8], limit: u64) -> io::Result<Self> {
        let xerial = compressed.starts_with(SNAPPY_XERIAL_MAGIC);
        let rest = if xerial {
            if compressed.len() < SNAPPY_XERIAL_HEADER_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated snappy-java stream header",
                ));
            }
            &compressed[SNAPPY_XERIAL_HEADER_BYTES..]
        } else {
            compressed
        };
        Ok(SnappyReader {
            rest,
            xerial,
            block: Vec::new(),
            block_pos: 0,
            declared: 0,
            limit,
            decoder: snap::raw::Decoder::new(),
        })
    }

    /// Decodes the next block into `self.block`; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.rest.is_empty() {
            return Ok(false);
        }
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let compressed = if self.xerial {
            if self.rest.len() < 4 {
                return Err(bad(format!(
                    "snappy-java chunk length truncated ({} bytes left)",
                    self.rest.len()
                )));
            }
            let len = i32::from_be_bytes(self.rest[..4].try_into().unwrap());
            if len <= 0 || len as usize > self.rest.len() - 4 {
                return Err(bad(format!(
                    "snappy-java chunk length {len} is invalid or overruns the stream ({} bytes left)",
                    self.rest.len() - 4
                )));
            }
            let chunk = &self.rest[4..4 + len as usize];
            self.rest = &self.rest[4 + len as usize..];
            chunk
        } else {
            std::mem::take(&mut self.rest)
        };
        let len = snap::raw::decompress_len(compressed)
            .map_err(|e| bad(format!("snappy block: {e}")))? as u64;
        if len > (compressed.len() as u64).saturating_mul(SNAPPY_EXPANSION_MAX) {
            return Err(bad(format!(
                "snappy block declares {len} bytes, more than {} compressed bytes can hold",
                compressed.len()
            )));
        }
        self.declared = self.declared.saturating_add(len);
        if self.declared > self.limit {
            return Err(limit_exceeded());
        }
        self.block.clear();
        self.block.resize(len as usize, 0);
        let n = self
            .decoder
            .decompress(compressed, &mut self.block)
            .map_err(|e| bad(format!("snappy block: {e}")))?;
        self.block.truncate(n);
        self.block_pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.block_pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.block_pos);
        buf[..n].copy_from_slice(&self.block[self.block_pos..self.block_pos + n]);
        self.block_pos += n;
        Ok(n)
    }
}

/// Most LZ4 frames one records section may hold. Clients write one; each frame gets a fresh
/// decoder (and its block buffers), so their number is bounded.
pub const LZ4_FRAMES_MAX: usize = 1024;
const LZ4_MAGIC: u32 = 0x184D_2204;

/// Splits an LZ4 records section into its frames by walking the frame format's lengths
/// (header, block sizes, end mark, checksums), without decompressing. `lz4_flex` treats a frame
/// cut off before its end mark as a clean end of stream, and its buffers assume one frame
/// layout per decoder; checking the framing first and decoding each frame with its own decoder
/// avoids both.
fn lz4_frames(mut rest: &[u8]) -> Result<Vec<&[u8]>, String> {
    fn take<'b>(rest: &mut &'b [u8], n: usize, what: &str) -> Result<&'b [u8], String> {
        if rest.len() < n {
            return Err(format!("lz4 {what} truncated"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    let mut frames = Vec::new();
    while !rest.is_empty() {
        if frames.len() == LZ4_FRAMES_MAX {
            return Err(format!("more than {LZ4_FRAMES_MAX} lz4 frames"));
        }
        let frame_start = rest;
        let magic = u32::from_le_bytes(take(&mut rest, 4, "frame magic")?.try_into().unwrap());
        if magic != LZ4_MAGIC {
            return Err(format!(
                "lz4 frame magic {magic:#010x} is not {LZ4_MAGIC:#010x}"
            ));
        }
        let descriptor = take(&mut rest, 2, "frame descriptor")?;
        let (flg, bd) = (descriptor[0], descriptor[1]);
        if flg >> 6 != 0b01 {
            return Err(format!("lz4 frame version {} is not 1", flg >> 6));
        }
        let block_checksum = flg & 0x10 != 0;
        let content_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let dict_id = flg & 0x01 != 0;
        let block_bytes_max: usize = match (bd >> 4) & 0x07 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            other => return Err(format!("lz4 block size code {other} is invalid")),
        };
        take(
            &mut rest,
            8 * content_size as usize + 4 * dict_id as usize + 1,
            "frame descriptor",
        )?;
        loop {
            let word = u32::from_le_bytes(take(&mut rest, 4, "block size")?.try_into().unwrap());
            if word == 0 {
                break; // EndMark
            }
            let size = (word & 0x7fff_ffff) as usize;
            if size > block_bytes_max {
                return Err(format!(
                    "lz4 block of {size} bytes exceeds the frame's {block_bytes_max}"
                ));
            }
            take(&mut rest, size + 4 * block_checksum as usize, "block")?;
        }
        take(&mut rest, 4 * content_checksum as usize, "content checksum")?;
        frames.push(&frame_start[..frame_start.len() - rest.len()]);
    }
    Ok(frames)
}

/// LZ4 frames decoded one after the other, each with its own decoder.
struct Lz4Reader<'a> {
    frames: std::vec::IntoIter<&'a [u8]>,
    current: Option<lz4_flex::frame::FrameDecoder<&'a [u8]>>,
}

impl Read for Lz4Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(d) = self.current.as_mut() {
                let n = d.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if !d.get_ref().is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "lz4 frame ended before its end mark",
                    ));
                }
            }
            match self.frames.next() {
                Some(frame) => self.current = Some(lz4_flex::frame::FrameDecoder::new(frame)),
                None => {
                    self.current = None;
                    return Ok(0);
                }
            }
        }
    }
}

/// A decompressing reader over a batch's records section.
enum Decompressor<'a> {
    Gzip(flate2::bufread::MultiGzDecoder<&'a [u8]>),
    Snappy(SnappyReader<'a>),
    Lz4(Lz4Reader<'a>),
    Zstd(zstd::stream::read::Decoder<'static, &'a [u8]>),
}

impl<'a> Decompressor<'a> {
    fn new(codec: Codec, compressed: &'a [u8], limit: u64) -> Result<Self, WalkError> {
        let corrupt = |e: io::Error| WalkError::Corrupt(format!("{} stream: {e}", codec.name()));
        Ok(match codec {
            // Java's GZIPInputStream reads concatenated members; so does this.
            Codec::Gzip => Decompressor::Gzip(flate2::bufread::MultiGzDecoder::new(compressed)),
            Codec::Snappy => {
                Decompressor::Snappy(SnappyReader::new(compressed, limit).map_err(corrupt)?)
            }
            Codec::Lz4 => Decompressor::Lz4(Lz4Reader {
                frames: lz4_frames(compressed)
                    .map_err(WalkError::Corrupt)?
                    .into_iter(),
                current: None,
            }),
            Codec::Zstd => {
                let mut d =
                    zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
                Decompressor::Zstd(d)
            }
        })
    }

    /// Compressed bytes not consumed yet: after the end of the stream, anything left over is
    /// trailing garbage.
    fn unconsumed(&self) -> usize {
        match self {
            Decompressor::Gzip(d) => d.get_ref().len(),
            Decompressor::Snappy(d) => d.rest.len(),
            // Framing was checked up front; each frame's decoder checks it used its frame.
            Decompressor::Lz4(_) => 0,
            Decompressor::Zstd(d) => d.get_ref().len(),
        }
    }
}

impl Read for Decompressor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::Gzip(d) => d.read(buf),
            Decompressor::Snappy(d) => d.read(buf),
            Decompressor::Lz4(d) => d.read(buf),
            Decompressor::Zstd(d) => d.read(buf),
        }
    }
}

/// One record read off the stream; key and value are kept only when decoding.
pub struct StreamRecord {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Reads records off a decompressing stream through a fixed buffer, with the same checks as
/// the uncompressed walk in `batch.rs`.
struct Walker<'a> {
    codec: Codec,
    src: BufReader<Limited<Decompressor<'a>>>,
    /// Decompressed bytes consumed so far.
    pos: u64,
    /// End of the current record (decompressed position).
    record_end: u64,
}

impl<'a> Walker<'a> {
    fn io_error(&self, e: io::Error) -> WalkError {
        if is_limit_exceeded(&e) {
            WalkError::TooLarge {
                limit_bytes: self.src.get_ref().limit,
            }
        } else {
            WalkError::Corrupt(format!("{} stream: {e}", self.codec.name()))
        }
    }

    /// The buffered decompressed bytes; empty at the end of the stream.
    fn fill(&mut self) -> Result<&[u8], WalkError> {
        // Borrow dance: map the error without holding `self.src` borrowed.
        match self.src.fill_buf() {
            Ok(_) => {}
            Err(e) => return Err(self.io_error(e)),
        }
        Ok(self.src.buffer())
    }

    fn byte(&mut self, bounded: bool) -> Result<u8, WalkError> {
        if bounded && self.pos >= self.record_end {
            return Err(WalkError::Invalid("varint runs past the record".into()));
        }
        let b = match self.fill()?.first() {
            Some(&b) => b,
            None => {
                return Err(WalkError::Invalid(
                    "varint runs past the end of the decompressed records".into(),
                ))
            }
        };
        self.src.consume(1);
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self, max_bytes: usize, bounded: bool) -> Result<u64, WalkError> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte(bounded)?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WalkError::Invalid(format!(
            "varint longer than {max_bytes} bytes"
        )))
    }

    fn varint(&mut self, bounded: bool) -> Result<i32, WalkError> {
        let u = self.uvarint(5, bounded)?;
        if u > u32::MAX as u64 {
            return Err(WalkError::Invalid("varint overflows 32 bits".into()));
        }
        let u = u as u32;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, WalkError> {
        let u = self.uvarint(10, true)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Consumes `n` bytes of the current record, appending them to `keep` if given.
    fn take(
        &mut self,
        n: u64,
        what: &str,
        mut keep: Option<&mut Vec<u8>>,
    ) -> Result<(), WalkError> {
        if n > self.record_end - self.pos {
            return Err(WalkError::Invalid(format!(
                "{what} of {n} bytes runs past the end of its record"
            )));
        }
        let mut left = n;
        while left > 0 {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Err(WalkError::Invalid(format!(
                    "{what} of {n} bytes runs past the end of the decompressed records"
                )));
            }
            let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(out) = keep.as_deref_mut() {
                out.extend_from_slice(&buf[..k]);
            }
            self.src.consume(k);
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(())
    }

    /// A nullable byte field: length -1 is null, other negatives are invalid.
    fn bytes_field(
        &mut self,
        what: &str,
        nullable: bool,
        keep: bool,
    ) -> Result<Option<Vec<u8>>, WalkError> {
        let len = self.varint(true)?;
        if len == -1 && nullable {
            return Ok(None);
        }
        if len < 0 {
            return Err(WalkError::Invalid(format!(
                "{what} length {len} is invalid"
            )));
        }
        if keep {
            // Grows with the bytes actually read, never with the declared length.
            let mut out = Vec::new();
            self.take(len as u64, what, Some(&mut out))?;
            Ok(Some(out))
        } else {
            self.take(len as u64, what, None)?;
            Ok(Some(Vec::new()))
        }
    }

    /// Record `i`: its length, then its fields, which must fill it exactly.
    fn record(&mut self, i: i32, keep: bool) -> Result<StreamRecord, WalkError> {
        let len = self.varint(false)?;
        if len <= 0 {
            return Err(WalkError::Invalid(format!("length {len} is invalid")));
        }
        self.record_end = self.pos + len as u64;
        self.take(1, "attributes", None)?;
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint(true)?;
        if offset_delta != i {
            return Err(WalkError::Invalid(format!(
                "offsetDelta {offset_delta} should be {i}"
            )));
        }
        let key = self.bytes_field("key", true, keep)?;
        let value = self.bytes_field("value", true, keep)?;
        let headers = self.varint(true)?;
        if headers < 0 {
            return Err(WalkError::Invalid(format!(
                "header count {headers} is negative"
            )));
        }
        for h in 0..headers {
            self.bytes_field(&format!("header {h} key"), false, false)?;
            self.bytes_field(&format!("header {h} value"), true, false)?;
        }
        if self.pos != self.record_end {
            return Err(WalkError::Invalid(format!(
                "{} unused bytes inside the record",
                self.record_end - self.pos
            )));
        }
        Ok(StreamRecord {
            timestamp_delta,
            offset_delta,
            key: if keep { key } else { None },
            value: if keep { value } else { None },
        })
    }

    /// After the last record the stream must end (this also runs the codec's end checks:
    /// gzip's CRC and length, LZ4 and zstd content checksums).
    fn finish(&mut self, count: i32) -> Result<(), WalkError> {
        let extra = self.fill()?.len();
        if extra > 0 {
            return Err(WalkError::Invalid(format!(
                "decompressed bytes after the last of {count} records"
            )));
        }
        let left = self.src.get_ref().inner.unconsumed();
        if left > 0 {
            return Err(WalkError::Corrupt(format!(
                "{} stream: {left} bytes after its end",
                self.codec.name()
            )));
        }
        Ok(())
    }
}

/// Walks `count` records in `compressed` (a batch's records section), calling `each` on every
/// record, decompressing at most `limit_bytes`. Returns the decompressed size.
fn walk_with(
    codec: Codec,
    compressed: &[u8],
    count: i32,
    limit_bytes: u64,
    keep: bool,
    mut each: impl FnMut(StreamRecord),
) -> Result<u64, WalkError> {
    if count <= 0 {
        return Err(WalkError::Invalid(format!(
            "recordCount {count} must be positive"
        )));
    }
    let inner = Decompressor::new(codec, compressed, limit_bytes)?;
    let mut w = Walker {
        codec,
        src: BufReader::with_capacity(
            SCRATCH_BYTES,
            Limited {
                inner,
                produced: 0,
                limit: limit_bytes,
            },
        ),
        pos: 0,
        record_end: 0,
    };
    for i in 0..count {
        let record = w.record(i, keep).map_err(|e| match e {
            WalkError::Invalid(m) => WalkError::Invalid(format!("record {i}: {m}")),
            other => other,
        })?;
        each(record);
    }
    w.finish(count)?;
    Ok(w.pos)
}

/// Checks that `compressed` (a batch's records section) decompresses with `codec` to exactly
/// `count` well-formed records and nothing else, producing at most `limit_bytes`. Returns the
/// decompressed size.
pub fn walk_compressed(
    codec: Codec,
    compressed: &[u8],
    count: i32,
    limit_bytes: u64,
) -> Result<u64, WalkError> {
    walk_with(codec, compressed, count, limit_bytes, false, |_| {})
}

/// Decodes the `count` records in `compressed` with the same checks and limit as
/// [`walk_compressed`], keeping keys and values.
pub fn decode_compressed(
    codec: Codec,
    compressed: &[u8],
    count: i32,
    limit_bytes: u64,
) -> Result<Vec<StreamRecord>, WalkError> {
    // Every record takes at least 7 decompressed bytes; the count alone never sizes this.
    let mut out = Vec::with_capacity((count.max(0) as usize).min(compressed.len()).min(4096));
    walk_with(codec, compressed, count, limit_bytes, true, |r| out.push(r))?;
    Ok(out)
}

/// Compresses an uncompressed records section with `codec` the way Kafka clients do (xerial
/// framing for snappy, an LZ4 frame, one gzip member, one zstd frame). For tests, the fuzz
/// corpus and the simulator; the broker itself never compresses.
pub fn compress(codec: Codec, records: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(records).unwrap();
            e.finish().unwrap()
        }
        Codec::Snappy => {
            // snappy-java's framing: header, then [i32 length][raw block] per 32 KiB chunk.
            let mut out = SNAPPY_XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in records.chunks(32 * 1024) {
                let block = encoder.compress_vec(chunk).unwrap();
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Codec::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(records).unwrap();
            e.finish().unwrap()
        }
        Codec::Zstd => zstd::stream::encode_all(records, 3).unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{
        decode_records, validate_for_append, AppendError, RecordBatchHeader, HEADER_BYTES,
        LAST_OFFSET_DELTA_POS, RECORD_COUNT_POS,
    };
    use crate::log::testutil::{
        compress_batch, encode_batch, recompute_crc, with_records_section, TestRecord,
    };

    const CODECS: [Codec; 4] = [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
    const MAX_MESSAGE_BYTES: u32 = 1024 * 1024 + 12;

    fn records(n: usize) -> Vec<TestRecord> {
        (0..n)
            .map(|i| TestRecord {
                key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
                value: (i % 5 != 4).then(|| vec![b'a' + (i % 26) as u8; 100 + i]),
                headers: if i % 2 == 0 {
                    vec![(b"h".to_vec(), Some(b"v".to_vec())), (b"n".to_vec(), None)]
                } else {
                    vec![]
                },
                timestamp_delta: i as i64,
            })
            .collect()
    }

    fn kind(e: &AppendError) -> &'static str {
        match e {
            AppendError::CorruptMessage(_) => "corrupt",
            AppendError::InvalidRecord(_) => "invalid",
            AppendError::MessageTooLarge(_) => "too_large",
            _ => "other",
        }
    }

    #[track_caller]
    fn refuse(b: &[u8]) -> AppendError {
        let e = validate_for_append(b, MAX_MESSAGE_BYTES).expect_err("accepted");
        assert!(
            decode_records(b).is_err(),
            "decode accepts what validation refused: {e}"
        );
        e
    }

    #[test]
    fn every_codec_round_trips() {
        let plain = encode_batch(1_000, &records(50));
        let expected = decode_records(&plain).unwrap();
        for codec in CODECS {
            let b = compress_batch(&plain, codec);
            assert!(b.len() < plain.len(), "{codec:?} did not compress");
            let infos = validate_for_append(&b, MAX_MESSAGE_BYTES)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(infos[0].record_count, 50);
            assert_eq!(
                RecordBatchHeader::parse(&b).unwrap().compression(),
                codec.id()
            );
            assert_eq!(decode_records(&b).unwrap(), expected, "{codec:?}");
        }
    }

    #[test]
    fn raw_snappy_and_concatenated_streams_are_accepted() {
        let plain = encode_batch(0, &records(20));
        let section = &plain[HEADER_BYTES..];
        let (a, b) = section.split_at(section.len() / 2);
        let raw = snap::raw::Encoder::new().compress_vec(section).unwrap();
        let two_gzip = [compress(Codec::Gzip, a), compress(Codec::Gzip, b)].concat();
        let two_lz4 = [compress(Codec::Lz4, a), compress(Codec::Lz4, b)].concat();
        let two_zstd = [compress(Codec::Zstd, a), compress(Codec::Zstd, b)].concat();
        for (codec, bytes) in [
            (Codec::Snappy, raw),
            (Codec::Gzip, two_gzip),
            (Codec::Lz4, two_lz4),
            (Codec::Zstd, two_zstd),
        ] {
            let batch = with_records_section(&plain, codec.id(), &bytes);
            validate_for_append(&batch, MAX_MESSAGE_BYTES)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(decode_records(&batch).unwrap().len(), 20);
        }
    }

    #[test]
    fn damaged_payloads_with_a_good_crc_are_refused() {
        let plain = encode_batch(0, &records(30));
        for codec in CODECS {
            let compressed = compress(codec, &plain[HEADER_BYTES..]);
            let n = compressed.len();
            // Truncated anywhere, the stream or the records in it end early.
            for cut in [1, 2, 5, n / 2, n - 4] {
                let b = with_records_section(&plain, codec.id(), &compressed[..n - cut]);
                refuse(&b);
            }
            // The stream's first byte (magic or length) flipped.
            let mut bad = compressed.clone();
            bad[0] ^= 0x01;
            refuse(&with_records_section(&plain, codec.id(), &bad));
            // Trailing garbage after the stream.
            let mut bad = compressed.clone();
            bad.extend_from_slice(b"\x00garbage");
            refuse(&with_records_section(&plain, codec.id(), &bad));
            // Not compressed at all: the plain records under a codec's flag.
            let e = refuse(&with_records_section(
                &plain,
                codec.id(),
                &plain[HEADER_BYTES..],
            ));
            assert!(e.to_string().contains(codec.name()), "{e}");
        }
        // gzip checks a CRC-32 of its output: a flipped bit anywhere is refused, or (in bits
        // deflate does not use, such as the last byte's padding) changes nothing.
        let compressed = compress(Codec::Gzip, &plain[HEADER_BYTES..]);
        let expected = decode_records(&plain).unwrap();
        let mut refused = 0;
        for pos in 0..compressed.len() {
            let mut bad = compressed.clone();
            bad[pos] ^= 0x10;
            let b = with_records_section(&plain, Codec::Gzip.id(), &bad);
            match validate_for_append(&b, MAX_MESSAGE_BYTES) {
                Ok(_) => assert_eq!(decode_records(&b).unwrap(), expected, "flip at {pos}"),
                Err(_) => refused += 1,
            }
        }
        assert!(
            refused > compressed.len() * 9 / 10,
            "{refused} of {}",
            compressed.len()
        );
        // Plain garbage is corrupt, not merely invalid.
        let b = with_records_section(&plain, Codec::Zstd.id(), b"certainly not zstd");
        assert_eq!(kind(&refuse(&b)), "corrupt");
    }

    /// recordCount and lastOffsetDelta both edited consistently, the CRC recomputed.
    fn with_count(batch: &[u8], count: i32) -> Vec<u8> {
        let mut b = batch.to_vec();
        b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
        b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        recompute_crc(&mut b);
        b
    }

    #[test]
    fn a_lying_record_count_is_refused() {
        let plain = encode_batch(0, &records(10));
        for codec in CODECS {
            let b = compress_batch(&plain, codec);
            let e = refuse(&with_count(&b, 11));
            assert_eq!(kind(&e), "invalid", "{e}");
            assert!(e.to_string().contains("record 10"), "{e}");
            let e = refuse(&with_count(&b, 9));
            assert_eq!(kind(&e), "invalid", "{e}");
            assert!(e.to_string().contains("after the last of 9 records"), "{e}");
        }
        // Records that do not walk: offsetDelta of record 1 wrong (zigzag 1 = 2 -> 4).
        let plain = crate::log::testutil::simple_batch(0, &[b"a", b"b"]);
        let mut section = plain[HEADER_BYTES..].to_vec();
        let rec1 = 1 + section[0] as usize / 2;
        assert_eq!(section[rec1 + 3], 2);
        section[rec1 + 3] = 4;
        for codec in CODECS {
            let b = with_records_section(&plain, codec.id(), &compress(codec, &section));
            let e = refuse(&b);
            assert_eq!(kind(&e), "invalid", "{e}");
            assert!(e.to_string().contains("offsetDelta 2 should be 1"), "{e}");
        }
    }

    /// One record with `value_bytes` zeros and offsetDelta `i`, as a records-section fragment.
    fn zero_record(i: i32, value_bytes: usize) -> Vec<u8> {
        let r = [TestRecord {
            value: Some(vec![0; value_bytes]),
            ..TestRecord::default()
        }];
        let mut section = encode_batch(0, &r)[HEADER_BYTES..].to_vec();
        // encode_batch numbered it 0; renumber (zigzag(i) fits one byte for i < 64).
        assert!(i < 64);
        let len_bytes = section.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        assert_eq!(section[len_bytes + 2], 0);
        section[len_bytes + 2] = (i * 2) as u8;
        section
    }

    /// A bomb: `count` records of 1 MiB of zeros, each compressed on its own (record header,
    /// then the shared compressed 1 MiB of zeros) and concatenated, so it is cheap to build.
    fn bomb(codec: Codec, count: i32) -> Vec<u8> {
        const MIB: usize = 1024 * 1024;
        let first = zero_record(0, MIB);
        let header_len = first.len() - MIB;
        let zeros = compress(codec, &vec![0; MIB]);
        let mut stream = Vec::new();
        if codec == Codec::Snappy {
            // One xerial stream: header once, then chunks.
            stream = compress(Codec::Snappy, &[]);
        }
        for i in 0..count {
            let h = &zero_record(i, MIB)[..header_len];
            let (h, z) = if codec == Codec::Snappy {
                (
                    compress(Codec::Snappy, h)[16..].to_vec(),
                    zeros[16..].to_vec(),
                )
            } else {
                (compress(codec, h), zeros.clone())
            };
            stream.extend_from_slice(&h);
            stream.extend_from_slice(&z);
        }
        stream
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let plain = encode_batch(0, &[TestRecord::default()]);
        // 64 records of 1 MiB: the limit is crossed inside the last one.
        let count = (DECOMPRESSED_BYTES_MAX / (1024 * 1024)) as i32;
        for codec in [Codec::Gzip, Codec::Lz4, Codec::Zstd] {
            let stream = bomb(codec, count);
            let b = with_count(&with_records_section(&plain, codec.id(), &stream), count);
            assert!(
                b.len() < MAX_MESSAGE_BYTES as usize,
                "{codec:?}: {} bytes",
                b.len()
            );
            let e = refuse(&b);
            assert_eq!(kind(&e), "invalid", "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("more than {DECOMPRESSED_BYTES_MAX} bytes")),
                "{e}"
            );
        }
        // Every codec, against a small limit: refused with that limit, not decompressed on.
        for codec in CODECS {
            let stream = bomb(codec, 8);
            let limit = 3 * 1024 * 1024;
            assert_eq!(
                walk_compressed(codec, &stream, 8, limit),
                Err(WalkError::TooLarge { limit_bytes: limit }),
                "{codec:?}"
            );
            assert!(walk_compressed(codec, &stream, 8, 9 * 1024 * 1024).is_ok());
        }
        // Several batches of one buffer share the limit.
        let one = with_count(&with_records_section(&plain, 4, &bomb(Codec::Zstd, 40)), 40);
        validate_for_append(&one, MAX_MESSAGE_BYTES).unwrap();
        let two = [one.clone(), one].concat();
        let e = validate_for_append(&two, MAX_MESSAGE_BYTES).unwrap_err();
        assert!(e.to_string().contains("batch 1 (zstd)"), "{e}");
    }

    #[test]
    fn snappy_lengths_are_checked_before_allocating() {
        // A raw block declaring 2^32-1 bytes from 5 bytes of input.
        let e = walk_compressed(
            Codec::Snappy,
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 0],
            1,
            u64::MAX,
        )
        .unwrap_err();
        assert!(matches!(e, WalkError::Corrupt(_)), "{e:?}");
        // xerial chunks whose declared lengths overrun the stream.
        let mut s = compress(Codec::Snappy, &[]);
        s.extend_from_slice(&1000i32.to_be_bytes());
        s.extend_from_slice(&[0; 10]);
        assert!(matches!(
            walk_compressed(Codec::Snappy, &s, 1, u64::MAX),
            Err(WalkError::Corrupt(_))
        ));
    }

    #[test]
    fn zstd_windows_beyond_the_bound_are_refused() {
        // A frame header declaring a 2^30 window (Window_Descriptor exponent 20): refused
        // before the decoder allocates it.
        let plain = encode_batch(0, &records(3));
        let section = &plain[HEADER_BYTES..];
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(30))
            .unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
            true,
        ))
        .unwrap();
        std::io::Write::write_all(&mut e, section).unwrap();
        let frame = e.finish().unwrap();
        let r = walk_compressed(Codec::Zstd, &frame, 3, DECOMPRESSED_BYTES_MAX);
        assert!(matches!(r, Err(WalkError::Corrupt(_))), "{r:?}");
    }
}
