//! Fetch responses whose records are sent from where they are stored.
//!
//! A `FetchReply` is a `FetchResponse` whose non-empty `records` fields hold placeholders (byte
//! slices of one private, never-written static) plus the `StoredRecords` they stand for, in
//! encoding order. `FetchReply::encode` runs kafka-protocol's own encoder into a `ChunkedBuf`,
//! which copies every field as usual but, when the encoder writes a placeholder, cuts the
//! frame there and puts the stored parts in its place. The result is a `Frame`: encoded bytes
//! and file regions in send order, which the connection writer sends with `sendfile` (no copy
//! of the records through the broker) or reads as it goes.
//!
//! The placeholders' contents are never read; a reply's response is never handed out with
//! them in it (`materialize` swaps the real bytes in for callers that want a whole response).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use super::FRAME_SIZE_PREFIX_BYTES;
use crate::log::{RecordsPart, StoredRecords};

/// Most bytes one placeholder stands for; larger records (one partition's share of a fetch
/// above this) are copied into the response instead.
pub const PLACEHOLDER_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Never written and never read: only the addresses of its slices matter. The cell puts it in
/// zero-initialized writable memory (.bss), so it takes no room in the binary and no memory
/// until touched, which it never is; an immutable static would sit in .rodata, in the file.
struct Placeholder(UnsafeCell<[u8; PLACEHOLDER_BYTES_MAX]>);

// SAFETY: nothing ever writes through the cell; only shared references to it are made.
unsafe impl Sync for Placeholder {}

static PLACEHOLDER: Placeholder = Placeholder(UnsafeCell::new([0; PLACEHOLDER_BYTES_MAX]));

fn placeholder_space() -> &'static [u8; PLACEHOLDER_BYTES_MAX] {
    // SAFETY: see `Placeholder`: the bytes never change, so shared references are sound.
    unsafe { &*PLACEHOLDER.0.get() }
}

fn placeholder(len: usize) -> Bytes {
    assert!(len > 0 && len <= PLACEHOLDER_BYTES_MAX);
    Bytes::from_static(&placeholder_space()[..len])
}

fn is_placeholder(s: &[u8]) -> bool {
    let start = placeholder_space().as_ptr() as usize;
    let p = s.as_ptr() as usize;
    !s.is_empty() && p >= start && p < start + PLACEHOLDER_BYTES_MAX
}

/// One piece of a response frame: encoded bytes, or stored bytes named by a file region.
pub type FramePart = RecordsPart;

/// A whole response frame, size prefix included, in send order.
#[derive(Debug, Default)]
pub struct Frame {
    pub parts: Vec<FramePart>,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.parts.iter().map(FramePart::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's bytes, with every region read now.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        for part in &self.parts {
            match part {
                FramePart::Bytes(b) => out.extend_from_slice(b),
                FramePart::File(r) => out.extend_from_slice(&r.to_vec()?),
            }
        }
        Ok(out)
    }
}

/// Collects the stored records of a fetch response as it is built.
#[derive(Debug, Default)]
pub struct RecordsSlots {
    records: Vec<StoredRecords>,
}

impl RecordsSlots {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for a partition's `records` field: empty, a placeholder that `records` will
    /// replace when the response is encoded, or (past `PLACEHOLDER_BYTES_MAX`) a copy.
    pub fn slot(&mut self, records: StoredRecords) -> io::Result<Bytes> {
        if records.is_empty() {
            Ok(Bytes::new())
        } else if records.len() > PLACEHOLDER_BYTES_MAX {
            records.to_bytes()
        } else {
            let p = placeholder(records.len());
            self.records.push(records);
            Ok(p)
        }
    }

    /// The reply: `response` must be the one whose records fields came from `slot`.
    pub fn finish(self, response: FetchResponse) -> FetchReply {
        let reply = FetchReply {
            response,
            records: self.records,
        };
        debug_assert_eq!(reply.placeholders(), reply.records.len());
        reply
    }
}

/// A fetch response with its records still in storage (see the module doc).
#[derive(Debug)]
pub struct FetchReply {
    response: FetchResponse,
    records: Vec<StoredRecords>,
}

impl FetchReply {
    /// A reply whose records are all in the response already.
    pub fn in_memory(response: FetchResponse) -> Self {
        let reply = FetchReply {
            response,
            records: Vec::new(),
        };
        assert_eq!(
            reply.placeholders(),
            0,
            "placeholders without their records"
        );
        reply
    }

    /// The response; its records fields may be placeholders, to be looked at, not sent.
    pub fn response(&self) -> &FetchResponse {
        &self.response
    }

    /// Stored record bytes the reply carries.
    pub fn records_bytes(&self) -> usize {
        self.records.iter().map(StoredRecords::len).sum()
    }

    fn placeholders(&self) -> usize {
        self.response
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.records.as_deref().is_some_and(is_placeholder))
            .count()
    }

    /// The response with the stored bytes read into it now.
    pub fn materialize(self) -> io::Result<FetchResponse> {
        let FetchReply {
            mut response,
            records,
        } = self;
        let mut records = records.into_iter();
        for p in response
            .responses
            .iter_mut()
            .flat_map(|t| &mut t.partitions)
        {
            if p.records.as_deref().is_some_and(is_placeholder) {
                let stored = records.next().expect("a stored records per placeholder");
                let bytes = stored.to_bytes()?;
                assert_eq!(Some(bytes.len()), p.records.as_ref().map(Bytes::len));
                p.records = Some(bytes);
            }
        }
        assert!(
            records.next().is_none(),
            "stored records without a placeholder"
        );
        Ok(response)
    }

    /// The whole response frame (size prefix, header, body) for `version`, records as parts.
    pub fn encode(self, version: i16, correlation_id: i32) -> anyhow::Result<Frame> {
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        let header_version = ApiKey::Fetch.response_header_version(version);
        let size = header.compute_size(header_version)? + self.response.compute_size(version)?;
        let size_i32 =
            i32::try_from(size).map_err(|_| anyhow::anyhow!("response of {size} bytes"))?;
        let records_bytes = self.records_bytes();
        let mut buf = ChunkedBuf {
            // Everything but the records, which are spliced in rather than copied.
            current: BytesMut::with_capacity(
                FRAME_SIZE_PREFIX_BYTES + size.saturating_sub(records_bytes) + 64,
            ),
            frame: Frame::default(),
            records: self.records.into(),
            before_current: 0,
        };
        buf.put_i32(size_i32);
        header.encode(&mut buf, header_version)?;
        self.response.encode(&mut buf, version)?;
        let ChunkedBuf {
            current,
            mut frame,
            records,
            ..
        } = buf;
        anyhow::ensure!(records.is_empty(), "records the encoder did not write");
        if !current.is_empty() {
            frame.parts.push(FramePart::Bytes(current.freeze()));
        }
        anyhow::ensure!(
            frame.len() == FRAME_SIZE_PREFIX_BYTES + size,
            "frame of {} bytes, computed {}",
            frame.len(),
            FRAME_SIZE_PREFIX_BYTES + size
        );
        Ok(frame)
    }
}

/// A `ByteBufMut` that writes into `current` and, on a placeholder, closes `current` as a
/// part and appends the next stored records' parts instead of the placeholder's bytes.
struct ChunkedBuf {
    current: BytesMut,
    frame: Frame,
    records: VecDeque<StoredRecords>,
    /// Frame bytes in `frame` (the offset where `current` starts).
    before_current: usize,
}

impl ChunkedBuf {
    fn splice(&mut self, len: usize) {
        let stored = self
            .records
            .pop_front()
            .expect("a stored records per placeholder");
        assert_eq!(
            stored.len(),
            len,
            "placeholder and records differ in length"
        );
        if !self.current.is_empty() {
            let done = self.current.split().freeze();
            self.before_current += done.len();
            self.frame.parts.push(FramePart::Bytes(done));
        }
        for part in stored.parts() {
            self.before_current += part.len();
            self.frame.parts.push(part.clone());
        }
    }
}

// SAFETY: every method forwards to `current`, a `BytesMut`, except `put_slice` of a placeholder,
// which writes nothing into it.
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialized `cnt` bytes of `chunk_mut`, which is `current`'s.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_placeholder(src) {
            self.splice(src.len());
        } else {
            self.current.extend_from_slice(src);
        }
    }
}

impl ByteBufMut for ChunkedBuf {
    fn offset(&self) -> usize {
        self.before_current + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.before_current, "seek into a finished part");
        self.current.resize(offset - self.before_current, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.before_current, "range in a finished part");
        &mut self.current[r.start - self.before_current..r.end - self.before_current]
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kafka_protocol::messages::fetch_response::{
        EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::protocol::{encode_response, SUPPORTED_APIS};
    use crate::storage::{FileStorage, MemStorage, Storage, StorageFile};

    fn fetch_versions() -> std::ops::RangeInclusive<i16> {
        let (_, min, max) = SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == ApiKey::Fetch)
            .copied()
            .expect("fetch is supported");
        min..=max
    }

    /// Stored records: two regions of `file` with an in-memory run between them.
    fn stored<F: StorageFile>(file: &F) -> StoredRecords {
        let mut r = StoredRecords::new();
        r.push(RecordsPart::File(file.region(3, 40).expect("regions")));
        r.push(RecordsPart::Bytes(Bytes::from_static(b"in memory")));
        r.push(RecordsPart::File(file.region(100, 1000).expect("regions")));
        r
    }

    fn partition(index: i32, version: i16) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(77)
            .with_last_stable_offset(77)
            .with_log_start_offset(if version >= 5 { 3 } else { -1 })
            .with_aborted_transactions(Some(Vec::new()))
    }

    /// A reply mixing stored, in-memory, empty and failed partitions, and the whole response
    /// it stands for.
    fn reply<F: StorageFile>(file: &F, version: i16) -> (FetchReply, FetchResponse) {
        let mut slots = RecordsSlots::new();
        let mut whole = Vec::new();
        let mut with_slots = Vec::new();
        for name in ["a", "b"] {
            let mut ps = Vec::new();
            let mut ws = Vec::new();
            for i in 0..4 {
                let p = partition(i, version);
                let (p, records) = match i {
                    0 => (p, stored(file)),
                    1 => (p, StoredRecords::new()),
                    2 if version >= 12 => (
                        p.with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(4).with_end_offset(9),
                        )
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(2))
                                .with_leader_epoch(5),
                        ),
                        stored(file),
                    ),
                    2 => (p, stored(file)),
                    _ => (
                        p.with_error_code(6).with_records(None),
                        StoredRecords::new(),
                    ),
                };
                if i == 3 {
                    ps.push(p.clone());
                    ws.push(p);
                    continue;
                }
                ws.push(p.clone().with_records(Some(records.to_bytes().unwrap())));
                ps.push(p.with_records(Some(slots.slot(records).unwrap())));
            }
            let topic = TopicName(StrBytes::from_static_str(name));
            with_slots.push(
                FetchableTopicResponse::default()
                    .with_topic(topic.clone())
                    .with_partitions(ps),
            );
            whole.push(
                FetchableTopicResponse::default()
                    .with_topic(topic)
                    .with_partitions(ws),
            );
        }
        let r = FetchResponse::default().with_throttle_time_ms(0);
        (
            slots.finish(r.clone().with_responses(with_slots)),
            r.with_responses(whole),
        )
    }

    fn fill<F: StorageFile>(file: &F) {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
        file.append(&data).unwrap();
    }

    fn frames_equal_the_library_encoding<S: Storage>(storage: &S, dir: &Path) {
        storage.create_dir_all(dir).unwrap();
        let file = storage.open(&dir.join("seg")).unwrap();
        fill(&file);
        for version in fetch_versions() {
            let (reply, whole) = reply(&file, version);
            let expected = encode_response(
                ApiKey::Fetch,
                version,
                42,
                &ResponseKind::Fetch(whole.clone()),
            )
            .unwrap();
            let frame = reply.encode(version, 42).unwrap();
            // Four stored partitions (two per topic), two regions each: sent, not copied.
            let regions = frame
                .parts
                .iter()
                .filter(|p| matches!(p, FramePart::File(_)))
                .count();
            assert_eq!(regions, 8, "v{version}");
            assert_eq!(frame.to_vec().unwrap(), expected.to_vec(), "v{version}");
            let (reply, _) = self::reply(&file, version);
            assert_eq!(reply.materialize().unwrap(), whole, "v{version}");
        }
    }

    #[test]
    fn file_backed_frames_equal_the_library_encoding_in_every_version() {
        let dir = tempfile::tempdir().unwrap();
        frames_equal_the_library_encoding(&FileStorage::new(), dir.path());
    }

    #[test]
    fn memory_backed_frames_equal_the_library_encoding_in_every_version() {
        frames_equal_the_library_encoding(&MemStorage::new(), Path::new("/m"));
    }

    #[test]
    fn a_truncated_file_fails_the_frame_instead_of_sending_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new();
        let file = s.open(&dir.path().join("seg")).unwrap();
        fill(&file);
        let (reply, _) = reply(&file, 12);
        let frame = reply.encode(12, 1).unwrap();
        // Same length again, other bytes: only the truncation count can tell.
        file.truncate(0).unwrap();
        file.append(&[0xee; 2000]).unwrap();
        let e = frame.to_vec().unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn a_reply_without_stored_records_encodes_as_the_library_does() {
        for version in fetch_versions() {
            let response =
                FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![partition(0, version)
                        .with_records(Some(Bytes::from_static(b"already here")))])]);
            let expected = encode_response(
                ApiKey::Fetch,
                version,
                7,
                &ResponseKind::Fetch(response.clone()),
            )
            .unwrap();
            let frame = FetchReply::in_memory(response).encode(version, 7).unwrap();
            assert_eq!(frame.to_vec().unwrap(), expected.to_vec(), "v{version}");
        }
    }
}
