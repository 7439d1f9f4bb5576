//! Test helpers shared by unit tests, integration tests and the simulator: an encoder for
//! valid uncompressed v2 record batches (what a producer would send), plain or idempotent.

use super::batch::{
    ATTRIBUTES_POS, BASE_SEQUENCE_POS, CRC_POS, HEADER_BYTES, MAGIC_V2, PRODUCER_EPOCH_POS,
    PRODUCER_ID_POS, TRANSACTIONAL_BIT,
};

/// One record to encode.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
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

fn put_nullable(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Encodes a valid uncompressed v2 batch: baseOffset 0, producerId -1, CreateTime,
/// maxTimestamp = base + max(timestamp_delta). Panics on an empty record list.
pub fn encode_batch(base_timestamp_ms: i64, records: &[TestRecord]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varlong(&mut rec, r.timestamp_delta);
        put_varint(&mut rec, i as i32);
        put_nullable(&mut rec, &r.key);
        put_nullable(&mut rec, &r.value);
        put_varint(&mut rec, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_varint(&mut rec, k.len() as i32);
            rec.extend_from_slice(k);
            put_nullable(&mut rec, v);
        }
        put_varint(&mut body, rec.len() as i32);
        body.extend_from_slice(&rec);
    }
    let max_delta = records.iter().map(|r| r.timestamp_delta).max().unwrap();
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    b.extend_from_slice(&((HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
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
    recompute_crc(&mut b);
    b
}

/// Values only (null keys), timestamp delta = record index.
pub fn simple_batch(base_timestamp_ms: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<TestRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| TestRecord {
            value: Some(v.to_vec()),
            timestamp_delta: i as i64,
            ..TestRecord::default()
        })
        .collect();
    encode_batch(base_timestamp_ms, &records)
}

/// Recomputes the CRC after a test edited fields inside it.
pub fn recompute_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Makes a batch idempotent: sets producerId, producerEpoch and baseSequence, fixes the CRC.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(batch.len() >= HEADER_BYTES, "not a batch header");
    batch[PRODUCER_ID_POS..PRODUCER_ID_POS + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_POS..PRODUCER_EPOCH_POS + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&base_sequence.to_be_bytes());
    recompute_crc(batch);
}

/// Sets or clears the transactional attribute bit, fixes the CRC.
pub fn set_transactional(batch: &mut [u8], transactional: bool) {
    let pos = ATTRIBUTES_POS;
    let mut attributes = i16::from_be_bytes([batch[pos], batch[pos + 1]]);
    if transactional {
        attributes |= TRANSACTIONAL_BIT;
    } else {
        attributes &= !TRANSACTIONAL_BIT;
    }
    batch[pos..pos + 2].copy_from_slice(&attributes.to_be_bytes());
    recompute_crc(batch);
}

/// An idempotent batch of `values` (timestamp delta = record index).
pub fn idempotent_batch(
    base_timestamp_ms: i64,
    values: &[&[u8]],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let mut b = simple_batch(base_timestamp_ms, values);
    set_producer(&mut b, producer_id, producer_epoch, base_sequence);
    b
}
