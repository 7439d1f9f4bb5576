//! Test helpers shared by unit tests, integration tests and the simulator: an encoder for
//! valid v2 record batches (what a producer would send), plain, idempotent or compressed.

use super::batch::{
    NewRecord, ATTRIBUTES_POS, BASE_SEQUENCE_POS, BATCH_LENGTH_POS, CRC_POS, HEADER_BYTES,
    LOG_OVERHEAD_BYTES, PRODUCER_EPOCH_POS, PRODUCER_ID_POS, TRANSACTIONAL_BIT,
};

/// One record to encode.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timestamp_delta: i64,
}

pub use super::batch::{put_varint, put_varlong};

/// Encodes a valid uncompressed v2 batch: baseOffset 0, producerId -1, CreateTime,
/// maxTimestamp = base + max(timestamp_delta). Panics on an empty record list.
pub fn encode_batch(base_timestamp_ms: i64, records: &[TestRecord]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = records
        .iter()
        .map(|r| NewRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect(),
            timestamp_delta: r.timestamp_delta,
        })
        .collect();
    super::batch::encode_batch(base_timestamp_ms, &records)
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

/// Re-encodes a valid uncompressed batch with its records section compressed by `codec`, as a
/// Kafka client would send it (attributes carry the codec; the CRC covers the compressed bytes).
pub fn compress_batch(batch: &[u8], codec: super::compression::Codec) -> Vec<u8> {
    let records = super::compression::compress(codec, &batch[HEADER_BYTES..]);
    with_records_section(batch, codec.id(), &records)
}

/// `batch`'s header (codec bits set to `codec_id`, batchLength and CRC fixed) followed by
/// `records` as its records section, whatever those bytes are.
pub fn with_records_section(batch: &[u8], codec_id: i16, records: &[u8]) -> Vec<u8> {
    let mut b = batch[..HEADER_BYTES].to_vec();
    b.extend_from_slice(records);
    let length = (b.len() - LOG_OVERHEAD_BYTES) as i32;
    b[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&length.to_be_bytes());
    let pos = ATTRIBUTES_POS;
    let attributes = (i16::from_be_bytes([b[pos], b[pos + 1]]) & !0x07) | codec_id;
    b[pos..pos + 2].copy_from_slice(&attributes.to_be_bytes());
    recompute_crc(&mut b);
    b
}
