//! Kafka v2 `RecordBatch` framing: zero-copy header parsing, produce-time validation, and the
//! two in-place patches the broker may make (base offset and partition leader epoch, both
//! outside the CRC). Compressed batches are decompressed only to be checked and read, through
//! the bounded streaming walk in `compression.rs`; nothing here re-encodes a batch.

use std::borrow::Cow;
use std::fmt;
use std::io;

use super::compression::{self, Codec, WalkError, DECOMPRESSED_BYTES_MAX};

/// Bytes before the records: everything up to and including recordCount.
pub const HEADER_BYTES: usize = 61;
/// baseOffset (8) + batchLength (4): the part not counted by batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal batchLength (header minus the log overhead).
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
pub const MAGIC_V2: i8 = 2;

pub const BASE_OFFSET_POS: usize = 0;
pub const BATCH_LENGTH_POS: usize = 8;
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
pub const MAGIC_POS: usize = 16;
pub const CRC_POS: usize = 17;
pub const ATTRIBUTES_POS: usize = 21;
pub const LAST_OFFSET_DELTA_POS: usize = 23;
pub const BASE_TIMESTAMP_POS: usize = 27;
pub const MAX_TIMESTAMP_POS: usize = 35;
pub const PRODUCER_ID_POS: usize = 43;
pub const PRODUCER_EPOCH_POS: usize = 51;
pub const BASE_SEQUENCE_POS: usize = 53;
pub const RECORD_COUNT_POS: usize = 57;

pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub const TRANSACTIONAL_BIT: i16 = 0x10;
pub const CONTROL_BIT: i16 = 0x20;
/// Compression codecs 0 (none) ..= 4 (zstd).
pub const COMPRESSION_CODEC_MAX: i16 = 4;

/// Why an append was refused. Messages name the batch (index in the request) and the reason.
#[derive(Debug)]
pub enum AppendError {
    /// Framing or CRC damage (Kafka CORRUPT_MESSAGE).
    CorruptMessage(String),
    /// Well-framed but semantically invalid (Kafka INVALID_RECORD).
    InvalidRecord(String),
    /// A batch is larger than max_message_bytes (Kafka MESSAGE_TOO_LARGE).
    MessageTooLarge(String),
    /// The storage failed; the log was rolled back to its previous end.
    Storage(io::Error),
    /// An idempotent producer's sequence does not follow its last one (Kafka
    /// OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrderSequence(String),
    /// An idempotent producer's epoch is older than the partition's (Kafka
    /// INVALID_PRODUCER_EPOCH: the producer was fenced).
    InvalidProducerEpoch(String),
    /// A follower append does not start at the log end, or its batches are not contiguous
    /// (Kafka's UnexpectedAppendOffsetException). `got` is the offending batch's base offset.
    OffsetMismatch { expected: i64, got: i64 },
    /// A follower append carries a leader epoch older than the latest in the log.
    LeaderEpochRegression { latest: i32, got: i32 },
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::CorruptMessage(m) => write!(f, "corrupt message: {m}"),
            AppendError::InvalidRecord(m) => write!(f, "invalid record: {m}"),
            AppendError::MessageTooLarge(m) => write!(f, "message too large: {m}"),
            AppendError::Storage(e) => write!(f, "storage error: {e}"),
            AppendError::OutOfOrderSequence(m) => write!(f, "out of order sequence: {m}"),
            AppendError::InvalidProducerEpoch(m) => write!(f, "invalid producer epoch: {m}"),
            AppendError::OffsetMismatch { expected, got } => {
                write!(f, "batch at offset {got}, expected offset {expected}")
            }
            AppendError::LeaderEpochRegression { latest, got } => {
                write!(
                    f,
                    "leader epoch {got} is older than the log's latest {latest}"
                )
            }
        }
    }
}

impl std::error::Error for AppendError {}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Storage(e)
    }
}

fn be_i64(b: &[u8], pos: usize) -> i64 {
    i64::from_be_bytes(b[pos..pos + 8].try_into().unwrap())
}
fn be_i32(b: &[u8], pos: usize) -> i32 {
    i32::from_be_bytes(b[pos..pos + 4].try_into().unwrap())
}
fn be_i16(b: &[u8], pos: usize) -> i16 {
    i16::from_be_bytes(b[pos..pos + 2].try_into().unwrap())
}

/// A view of the first 61 bytes of a batch. Only checks the length; callers validate fields.
#[derive(Clone, Copy)]
pub struct RecordBatchHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordBatchHeader<'a> {
    /// None if `bytes` is shorter than a header. `bytes` may extend past the header.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= HEADER_BYTES).then_some(RecordBatchHeader { bytes })
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, BASE_OFFSET_POS)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, BATCH_LENGTH_POS)
    }
    /// Whole batch size including the 12-byte log overhead (may be bogus if batch_length is).
    pub fn total_size(&self) -> i64 {
        self.batch_length() as i64 + LOG_OVERHEAD_BYTES as i64
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, PARTITION_LEADER_EPOCH_POS)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[MAGIC_POS] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, CRC_POS) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, ATTRIBUTES_POS)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, LAST_OFFSET_DELTA_POS)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(self.last_offset_delta() as i64)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, BASE_TIMESTAMP_POS)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, MAX_TIMESTAMP_POS)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, PRODUCER_ID_POS)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, PRODUCER_EPOCH_POS)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, BASE_SEQUENCE_POS)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.bytes, RECORD_COUNT_POS)
    }
}

/// What validation learned about one batch of a produce buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the validated buffer.
    pub pos: usize,
    /// Whole batch size in bytes (batchLength + 12).
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// CRC-32C over bytes 21.. of a whole batch matches the stored crc. False if too short.
pub fn crc_ok(batch: &[u8]) -> bool {
    match RecordBatchHeader::parse(batch) {
        Some(h) => crc32c::crc32c(&batch[ATTRIBUTES_POS..]) == h.crc(),
        None => false,
    }
}

/// Overwrites baseOffset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= HEADER_BYTES, "not a batch header");
    batch[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(batch.len() >= HEADER_BYTES, "not a batch header");
    batch[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Validates a produce buffer of one or more concatenated v2 batches (all-or-nothing).
/// Compressed batches are decompressed as a stream and walked like uncompressed ones; all the
/// batches of one buffer together may decompress to at most [`DECOMPRESSED_BYTES_MAX`].
pub fn validate_for_append(
    bytes: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchInfo>, AppendError> {
    validate_for_append_limited(bytes, max_message_bytes, DECOMPRESSED_BYTES_MAX)
}

/// [`validate_for_append`] with another decompression limit (the fuzzer uses a small one so
/// that bombs cost it milliseconds, not a quarter second each).
pub fn validate_for_append_limited(
    bytes: &[u8],
    max_message_bytes: u32,
    decompressed_bytes_max: u64,
) -> Result<Vec<BatchInfo>, AppendError> {
    validate_batches(bytes, max_message_bytes, Some(decompressed_bytes_max))
}

/// Validates batches a follower copies from its leader: framing, magic, size, CRC and the
/// header fields, not the records inside. The leader walked those records (decompressing
/// them) when it accepted them, and the CRC proves these are the same bytes; a follower that
/// judged them again could only disagree by refusing what the partition already holds, and
/// would then never catch up. Kafka's followers check the same way.
pub fn validate_replicated(
    bytes: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchInfo>, AppendError> {
    validate_batches(bytes, max_message_bytes, None)
}

/// The checks of both; records are walked (and decompressed, within the budget) only when
/// `decompressed_bytes_max` is given.
fn validate_batches(
    bytes: &[u8],
    max_message_bytes: u32,
    decompressed_bytes_max: Option<u64>,
) -> Result<Vec<BatchInfo>, AppendError> {
    if bytes.is_empty() {
        return Err(AppendError::InvalidRecord(
            "no record batches in the request".into(),
        ));
    }
    let mut infos = Vec::new();
    let mut pos = 0usize;
    let walk = decompressed_bytes_max.is_some();
    let mut decompressed_budget_bytes = decompressed_bytes_max.unwrap_or(0);
    while pos < bytes.len() {
        let index = infos.len();
        let rest = &bytes[pos..];
        if rest.len() < LOG_OVERHEAD_BYTES {
            return Err(AppendError::CorruptMessage(format!(
                "batch {index}: {} trailing bytes after the last batch",
                rest.len()
            )));
        }
        let batch_length = be_i32(rest, BATCH_LENGTH_POS);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(AppendError::CorruptMessage(format!(
                "batch {index}: batchLength {batch_length} is below the minimum {BATCH_LENGTH_MIN}"
            )));
        }
        let size = batch_length as usize + LOG_OVERHEAD_BYTES;
        if size > rest.len() {
            return Err(AppendError::CorruptMessage(format!(
                "batch {index}: batchLength {batch_length} overruns the buffer ({} bytes left)",
                rest.len()
            )));
        }
        let batch = &rest[..size];
        let h = RecordBatchHeader::parse(batch).expect("size >= header checked above");
        if h.magic() != MAGIC_V2 {
            return Err(AppendError::InvalidRecord(format!(
                "batch {index}: magic {} is not supported; only v2 record batches (magic 2) are accepted",
                h.magic()
            )));
        }
        if size > max_message_bytes as usize {
            return Err(AppendError::MessageTooLarge(format!(
                "batch {index}: {size} bytes exceeds max.message.bytes {max_message_bytes}"
            )));
        }
        if !crc_ok(batch) {
            return Err(AppendError::CorruptMessage(format!(
                "batch {index}: CRC mismatch (stored {:#010x}, computed {:#010x})",
                h.crc(),
                crc32c::crc32c(&batch[ATTRIBUTES_POS..])
            )));
        }
        let compression = h.compression();
        if compression > COMPRESSION_CODEC_MAX {
            return Err(AppendError::InvalidRecord(format!(
                "batch {index}: unknown compression codec {compression}"
            )));
        }
        let count = h.record_count();
        if count <= 0 {
            return Err(AppendError::InvalidRecord(format!(
                "batch {index}: recordCount {count} must be positive"
            )));
        }
        if h.last_offset_delta() != count - 1 {
            return Err(AppendError::InvalidRecord(format!(
                "batch {index}: lastOffsetDelta {} does not match recordCount {count}",
                h.last_offset_delta()
            )));
        }
        if !walk {
            // Replicated: the leader walked the records; the CRC covers them.
        } else if let Some(codec) = Codec::from_id(compression) {
            let records = &batch[HEADER_BYTES..];
            match compression::walk_compressed(codec, records, count, decompressed_budget_bytes) {
                Ok(size) => decompressed_budget_bytes -= size,
                Err(e) => return Err(walk_error(index, codec, e)),
            }
        } else if let Err(why) = walk_records(&batch[HEADER_BYTES..], count) {
            return Err(AppendError::InvalidRecord(format!("batch {index}: {why}")));
        }
        infos.push(BatchInfo {
            pos,
            size,
            attributes: h.attributes(),
            last_offset_delta: h.last_offset_delta(),
            record_count: count,
            base_timestamp: h.base_timestamp(),
            max_timestamp: h.max_timestamp(),
            producer_id: h.producer_id(),
            producer_epoch: h.producer_epoch(),
            base_sequence: h.base_sequence(),
        });
        pos += size;
    }
    debug_assert_eq!(pos, bytes.len());
    Ok(infos)
}

/// A compressed batch's refusal: a payload that is not a valid stream of its codec is corrupt
/// (CORRUPT_MESSAGE, like a CRC mismatch); records that do not walk, or that decompress past the
/// limit, are invalid (INVALID_RECORD, like the same records uncompressed).
fn walk_error(index: usize, codec: Codec, e: WalkError) -> AppendError {
    let name = codec.name();
    match e {
        WalkError::Corrupt(m) => {
            AppendError::CorruptMessage(format!("batch {index} ({name}): {m}"))
        }
        e @ (WalkError::Invalid(_) | WalkError::TooLarge { .. }) => {
            AppendError::InvalidRecord(format!("batch {index} ({name}): {e}"))
        }
    }
}

/// Cursor over the uncompressed records section.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn uvarint(&mut self, max_bytes: usize) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("varint runs past the end at byte {}", self.pos))?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "varint longer than {max_bytes} bytes at byte {}",
            self.pos
        ))
    }
    fn varint(&mut self) -> Result<i32, String> {
        let u = self.uvarint(5)?;
        if u > u32::MAX as u64 {
            return Err("varint overflows 32 bits".into());
        }
        let u = u as u32;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }
    fn varlong(&mut self) -> Result<i64, String> {
        let u = self.uvarint(10)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn skip(&mut self, n: usize, what: &str) -> Result<(), String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("{what} of {n} bytes runs past the end"));
        }
        self.pos += n;
        Ok(())
    }
    /// A nullable byte field: length -1 is null, other negatives are invalid.
    fn bytes_field(&mut self, what: &str, nullable: bool) -> Result<(), String> {
        self.bytes_slice(what, nullable).map(|_| ())
    }
    /// A nullable byte field, returned as a slice of the buffer.
    fn bytes_slice(&mut self, what: &str, nullable: bool) -> Result<Option<&'a [u8]>, String> {
        let len = self.varint()?;
        if len == -1 && nullable {
            return Ok(None);
        }
        if len < 0 {
            return Err(format!("{what} length {len} is invalid"));
        }
        let start = self.pos;
        self.skip(len as usize, what)?;
        Ok(Some(&self.buf[start..self.pos]))
    }
}

/// One record of a batch, as decoded by [`decode_records`]: key and value borrow the batch when
/// it is uncompressed and are owned when it was decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Option<Cow<'a, [u8]>>,
}

/// Decodes the records of one v2 batch (the broker's own internal records, tests' and fuzzers'
/// reads). A compressed batch is decompressed through the same bounded stream as validation
/// (at most [`DECOMPRESSED_BYTES_MAX`], with the same record checks).
pub fn decode_records(batch: &[u8]) -> Result<Vec<DecodedRecord<'_>>, String> {
    decode_records_limited(batch, DECOMPRESSED_BYTES_MAX)
}

/// [`decode_records`] with another decompression limit (see [`validate_for_append_limited`]).
pub fn decode_records_limited(
    batch: &[u8],
    decompressed_bytes_max: u64,
) -> Result<Vec<DecodedRecord<'_>>, String> {
    let header = RecordBatchHeader::parse(batch).ok_or("shorter than a batch header")?;
    if header.batch_length() < BATCH_LENGTH_MIN || header.total_size() as usize > batch.len() {
        return Err("batch length overruns the buffer".into());
    }
    if header.compression() != 0 {
        let codec = Codec::from_id(header.compression())
            .ok_or_else(|| format!("unknown compression codec {}", header.compression()))?;
        let records = &batch[HEADER_BYTES..header.total_size() as usize];
        let count = header.record_count();
        let decoded = compression::decode_compressed(codec, records, count, decompressed_bytes_max)
            .map_err(|e| format!("{}: {e}", codec.name()))?;
        return Ok(decoded
            .into_iter()
            .map(|r| DecodedRecord {
                offset: header.base_offset().saturating_add(r.offset_delta as i64),
                timestamp_ms: header.base_timestamp().saturating_add(r.timestamp_delta),
                key: r.key.map(Cow::Owned),
                value: r.value.map(Cow::Owned),
            })
            .collect());
    }
    let count = header.record_count().clamp(0, RECORDS_PER_BATCH_MAX);
    let mut r = Reader {
        buf: &batch[..header.total_size() as usize],
        pos: HEADER_BYTES,
    };
    // Every record takes at least 7 bytes: never let the declared count size the allocation.
    let mut out = Vec::with_capacity((count as usize).min(batch.len() / 7));
    for i in 0..count {
        let len = r.varint()?;
        if len <= 0 || len as usize > r.buf.len() - r.pos {
            return Err(format!("record {i}: length {len} overruns the batch"));
        }
        r.skip(1, "attributes")?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.bytes_slice("key", true)?;
        let value = r.bytes_slice("value", true)?;
        let headers = r.varint()?;
        for h in 0..headers.max(0) {
            r.bytes_field(&format!("header {h} key"), false)?;
            r.bytes_field(&format!("header {h} value"), true)?;
        }
        out.push(DecodedRecord {
            offset: header.base_offset().saturating_add(offset_delta as i64),
            timestamp_ms: header.base_timestamp().saturating_add(timestamp_delta),
            key: key.map(Cow::Borrowed),
            value: value.map(Cow::Borrowed),
        });
    }
    Ok(out)
}

/// Records one batch may carry when the broker builds or decodes it itself.
pub const RECORDS_PER_BATCH_MAX: i32 = 1_000_000;

/// One record for [`encode_batch`].
#[derive(Clone, Debug, Default)]
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    pub timestamp_delta: i64,
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Encodes a valid uncompressed v2 batch as a producer would send it: baseOffset 0, producerId
/// -1, CreateTime, maxTimestamp = base + max(timestamp_delta). Used for the broker's internal
/// records (group offsets) and by tests and the simulator.
pub fn encode_batch(base_timestamp_ms: i64, records: &[NewRecord<'_>]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch needs at least one record");
    assert!(
        records.len() <= RECORDS_PER_BATCH_MAX as usize,
        "too many records for one batch"
    );
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varlong(&mut rec, r.timestamp_delta);
        put_varint(&mut rec, i as i32);
        put_nullable(&mut rec, r.key);
        put_nullable(&mut rec, r.value);
        put_varint(&mut rec, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_varint(&mut rec, k.len() as i32);
            rec.extend_from_slice(k);
            put_nullable(&mut rec, *v);
        }
        put_varint(&mut body, rec.len() as i32);
        body.extend_from_slice(&rec);
    }
    let max_delta = records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    b.extend_from_slice(&((HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
    b.extend_from_slice(&base_timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(base_timestamp_ms + max_delta).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    debug_assert_eq!(b.len(), HEADER_BYTES);
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_POS..]);
    b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(
        validate_for_append(&b, u32::MAX).is_ok(),
        "encode_batch wrote an invalid batch"
    );
    b
}

/// Walks `count` uncompressed records that must exactly fill `records`.
fn walk_records(records: &[u8], count: i32) -> Result<(), String> {
    let mut r = Reader {
        buf: records,
        pos: 0,
    };
    for i in 0..count {
        let len = r.varint().map_err(|e| format!("record {i}: {e}"))?;
        if len <= 0 || len as usize > records.len() - r.pos {
            return Err(format!(
                "record {i}: length {len} is invalid or overruns the batch"
            ));
        }
        let end = r.pos + len as usize;
        let mut rec = Reader {
            buf: &records[..end],
            pos: r.pos,
        };
        let check = |rec: &mut Reader| -> Result<(), String> {
            rec.skip(1, "attributes")?;
            rec.varlong()?; // timestampDelta
            let offset_delta = rec.varint()?;
            if offset_delta != i {
                return Err(format!("offsetDelta {offset_delta} should be {i}"));
            }
            rec.bytes_field("key", true)?;
            rec.bytes_field("value", true)?;
            let headers = rec.varint()?;
            if headers < 0 {
                return Err(format!("header count {headers} is negative"));
            }
            for h in 0..headers {
                rec.bytes_field(&format!("header {h} key"), false)?;
                rec.bytes_field(&format!("header {h} value"), true)?;
            }
            Ok(())
        };
        check(&mut rec).map_err(|e| format!("record {i}: {e}"))?;
        if rec.pos != end {
            return Err(format!(
                "record {i}: {} unused bytes inside the record",
                end - rec.pos
            ));
        }
        r.pos = end;
    }
    if r.pos != records.len() {
        return Err(format!(
            "{} bytes after the last of {count} records",
            records.len() - r.pos
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testutil::{self, recompute_crc, simple_batch, TestRecord};

    #[test]
    fn encode_then_decode_records_round_trips() {
        let header_value: &[u8] = b"hv";
        let records = [
            NewRecord {
                key: Some(b"k1"),
                value: Some(b"v1"),
                headers: vec![],
                timestamp_delta: 0,
            },
            NewRecord {
                key: None,
                value: None,
                headers: vec![(b"h", Some(header_value))],
                timestamp_delta: 5,
            },
            NewRecord {
                key: Some(b""),
                value: Some(&[7u8; 300]),
                headers: vec![],
                timestamp_delta: 2,
            },
        ];
        let mut batch = encode_batch(1000, &records);
        set_base_offset(&mut batch, 40);
        let decoded = decode_records(&batch).unwrap();
        assert_eq!(decoded.len(), 3);
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(d.offset, 40 + i as i64);
            assert_eq!(d.timestamp_ms, 1000 + r.timestamp_delta);
            assert_eq!((d.key.as_deref(), d.value.as_deref()), (r.key, r.value));
        }
        assert!(
            decode_records(&batch[..batch.len() - 1]).is_err(),
            "a short batch is refused"
        );
    }

    fn kind(e: &AppendError) -> &'static str {
        match e {
            AppendError::CorruptMessage(_) => "corrupt",
            AppendError::InvalidRecord(_) => "invalid",
            AppendError::MessageTooLarge(_) => "too_large",
            AppendError::Storage(_) => "storage",
            AppendError::OutOfOrderSequence(_) => "out_of_order",
            AppendError::InvalidProducerEpoch(_) => "epoch",
            AppendError::OffsetMismatch { .. } => "offset_mismatch",
            AppendError::LeaderEpochRegression { .. } => "leader_epoch",
        }
    }

    fn err(bytes: &[u8]) -> AppendError {
        validate_for_append(bytes, 1 << 20).unwrap_err()
    }

    #[test]
    fn valid_batches_parse() {
        let mut buf = simple_batch(1000, &[b"a", b"bb", b"ccc"]);
        buf.extend(simple_batch(2000, &[b"d"]));
        let infos = validate_for_append(&buf, 1 << 20).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].record_count, 3);
        assert_eq!(infos[0].last_offset_delta, 2);
        assert_eq!(infos[0].max_timestamp, 1002);
        assert_eq!(infos[1].pos, infos[0].size);
        assert_eq!(infos[1].pos + infos[1].size, buf.len());
        let h = RecordBatchHeader::parse(&buf).unwrap();
        assert_eq!(h.magic(), 2);
        assert!(crc_ok(&buf[..infos[0].size]));
        // Headers, null key/value are fine.
        let b = testutil::encode_batch(
            5,
            &[TestRecord {
                key: None,
                value: None,
                headers: vec![(b"h".to_vec(), None), (b"k".to_vec(), Some(b"v".to_vec()))],
                timestamp_delta: 0,
            }],
        );
        validate_for_append(&b, 1 << 20).unwrap();
    }

    #[test]
    fn patches_do_not_break_crc() {
        let mut b = simple_batch(0, &[b"x"]);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        assert!(crc_ok(&b));
        let h = RecordBatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset(), h.partition_leader_epoch()), (42, 7));
    }

    #[test]
    fn corrupt_cases() {
        let good = simple_batch(0, &[b"hello"]);
        // CRC mismatch.
        let mut b = good.clone();
        let n = b.len();
        b[n - 1] ^= 1;
        let e = err(&b);
        assert_eq!(kind(&e), "corrupt");
        assert!(e.to_string().contains("CRC"));
        // Overrun.
        let e = err(&good[..n - 1]);
        assert!(e.to_string().contains("overruns"), "{e}");
        // batchLength < 49.
        let mut b = good.clone();
        b[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert!(err(&b).to_string().contains("minimum"));
        // Trailing garbage.
        let mut b = good.clone();
        b.extend_from_slice(&[0, 0, 0]);
        let e = err(&b);
        assert_eq!(kind(&e), "corrupt");
        assert!(e.to_string().contains("batch 1"), "{e}");
        // Empty.
        assert_eq!(kind(&err(&[])), "invalid");
    }

    #[test]
    fn replicated_batches_are_checked_by_their_crc_not_by_walking_records() {
        // recordCount 3 over 2 records, CRC recomputed: a leader refuses it...
        let mut b = simple_batch(0, &[b"a", b"b"]);
        b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&3i32.to_be_bytes());
        b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&2i32.to_be_bytes());
        recompute_crc(&mut b);
        assert!(validate_for_append(&b, 1 << 20).is_err());
        // ...a follower copies what its leader stored, records unexamined...
        let infos = validate_replicated(&b, 1 << 20).unwrap();
        assert_eq!((infos.len(), infos[0].record_count), (1, 3));
        // ...but not bytes that changed on the way: the CRC covers the records.
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            validate_replicated(&b, 1 << 20),
            Err(AppendError::CorruptMessage(_))
        ));
        // Framing and header checks still apply.
        assert!(validate_replicated(&b[..b.len() - 3], 1 << 20).is_err());
        assert!(matches!(
            validate_replicated(&simple_batch(0, &[b"a"]), 10),
            Err(AppendError::MessageTooLarge(_))
        ));
    }

    #[test]
    fn invalid_cases() {
        let good = simple_batch(0, &[b"a", b"b"]);
        // Magic.
        let mut b = good.clone();
        b[MAGIC_POS] = 1;
        let e = err(&b);
        assert_eq!(kind(&e), "invalid");
        assert!(e.to_string().contains("magic 1"), "{e}");
        // recordCount 0.
        let mut b = good.clone();
        b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&0i32.to_be_bytes());
        recompute_crc(&mut b);
        assert!(err(&b).to_string().contains("recordCount 0"));
        // lastOffsetDelta mismatch.
        let mut b = good.clone();
        b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&5i32.to_be_bytes());
        recompute_crc(&mut b);
        assert!(err(&b).to_string().contains("lastOffsetDelta"));
        // recordCount says 3 but only 2 records present (lastOffsetDelta consistent).
        let mut b = good.clone();
        b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&3i32.to_be_bytes());
        b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&2i32.to_be_bytes());
        recompute_crc(&mut b);
        let e = err(&b);
        assert_eq!(kind(&e), "invalid");
        assert!(e.to_string().contains("record 2"), "{e}");
        // offsetDelta wrong in record 1: records are [len, attr, tsDelta, offDelta, ...].
        let mut b = good.clone();
        let rec1 = HEADER_BYTES + 1 + b[HEADER_BYTES] as usize / 2; // zigzag len of record 0
        assert_eq!(b[rec1 + 3], 2); // zigzag(1)
        b[rec1 + 3] = 4; // zigzag(2)
        recompute_crc(&mut b);
        assert!(err(&b).to_string().contains("offsetDelta 2 should be 1"));
        // Value length overruns its record.
        let mut b = good.clone();
        // record 0: len, attr, ts(0), off(0), keylen(-1 = 0x01), vallen(zigzag 1 = 2), 'a', hdrs(0)
        assert_eq!(b[HEADER_BYTES + 5], 2);
        b[HEADER_BYTES + 5] = 6;
        recompute_crc(&mut b);
        assert_eq!(kind(&err(&b)), "invalid");
        // Unknown compression.
        let mut b = good.clone();
        b[ATTRIBUTES_POS + 1] |= 0x07;
        recompute_crc(&mut b);
        assert!(err(&b).to_string().contains("compression"));
    }

    #[test]
    fn compressed_batches_are_walked() {
        let mut b = simple_batch(0, &[b"a"]);
        b[ATTRIBUTES_POS + 1] |= 0x01; // gzip flag over plain records: not a gzip stream
        recompute_crc(&mut b);
        let e = err(&b);
        assert_eq!(kind(&e), "corrupt", "{e}");
        assert!(e.to_string().contains("batch 0 (gzip)"), "{e}");
        let gzip = testutil::compress_batch(&simple_batch(0, &[b"a"]), Codec::Gzip);
        validate_for_append(&gzip, 1 << 20).unwrap();
    }

    #[test]
    fn too_large() {
        let b = simple_batch(0, &[&[0u8; 500]]);
        let e = validate_for_append(&b, 400).unwrap_err();
        assert_eq!(kind(&e), "too_large");
        assert!(e.to_string().contains("batch 0"));
        validate_for_append(&b, b.len() as u32).unwrap();
    }
}
