//! The binary codec for frames between controller nodes: Raft [`Envelope`]s and opaque
//! controller requests/responses. Pure (no IO): the shell reads bytes, splits frames with
//! [`split_frame`] and decodes them with [`decode_body`]; it encodes with [`encode_frame`].
//!
//! Layout (every integer big-endian):
//!
//! ```text
//! frame    = len:u32 body                      len = body length, at most PEER_FRAME_BYTES_MAX
//! body     = version:u8 (=3) kind:u8 fields   (version 1: Fetch without replica_incarnation;
//!                                              version 2: FetchResponse without log_end_offset)
//! kind 0   Raft               from:i32 to:i32 message
//! kind 1   ControllerRequest  correlation:u64 from:i32 payload:bytes
//! kind 2   ControllerResponse correlation:u64 error_code:i16 message:string payload:bytes
//!
//! bytes    = n:u32 n×u8                        string = bytes holding UTF-8
//! bool     = u8 (0 or 1)                       opt_id = 0:u8 | 1:u8 id:i32
//! snap_id  = end_offset:i64 epoch:i32          entry  = offset:i64 epoch:i32 payload:bytes
//! message  = tag:u8 then, by tag:
//!   0 VoteRequest              epoch:i32 candidate:i32 last_epoch:i32 last_offset:i64 pre_vote:bool
//!   1 VoteResponse             epoch:i32 leader:opt_id granted:bool pre_vote:bool
//!   2 BeginQuorumEpoch         epoch:i32 leader:i32
//!   3 BeginQuorumEpochResponse epoch:i32
//!   4 EndQuorumEpoch           epoch:i32 leader:i32 n:u32 n×successor:i32
//!   5 FetchRequest             correlation:u64 epoch:i32 replica:i32 fetch_offset:i64
//!                              last_fetched_epoch:i32 replica_incarnation:i64
//!   6 FetchResponse            correlation:u64 epoch:i32 leader:opt_id high_watermark:i64
//!                              log_start_offset:i64 log_end_offset:i64 result
//!   7 FetchSnapshotRequest     correlation:u64 epoch:i32 replica:i32 snapshot_id:snap_id
//!                              position:u64
//!   8 FetchSnapshotResponse    correlation:u64 epoch:i32 leader:opt_id snapshot_id:snap_id chunk
//! result   = 0:u8 n:u32 n×entry | 1:u8 epoch:i32 end_offset:i64 | 2:u8 snap_id | 3:u8 (NotLeader)
//! chunk    = 0:u8 size:u64 position:u64 bytes | 1:u8 (NotFound) | 2:u8 (NotLeader)
//! ```
//!
//! Decoding is total: every length is checked against the bytes that remain before anything is
//! allocated, list counts are bounded, tags are validated and trailing bytes are refused.

use std::fmt;

use bytes::Bytes;

use super::types::*;

/// The only body version this codec speaks.
pub const WIRE_VERSION: u8 = 3;

/// The largest body a peer may send: room for an 8 MiB payload (RaftConfig's defaults fetch and
/// chunk 1 MiB) plus headers and entry framing.
pub const PEER_FRAME_BYTES_MAX: usize = 8 * 1024 * 1024 + 64 * 1024;

/// Bytes of the length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Smallest encoding of one entry (offset, epoch, empty payload length).
const ENTRY_MIN_BYTES: usize = 8 + 4 + 4;

const KIND_RAFT: u8 = 0;
const KIND_CONTROLLER_REQUEST: u8 = 1;
const KIND_CONTROLLER_RESPONSE: u8 = 2;

/// One frame between controller nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFrame {
    Raft(Envelope),
    /// A request to the active controller (opaque to this codec).
    ControllerRequest {
        correlation: u64,
        from: NodeId,
        payload: Bytes,
    },
    ControllerResponse {
        correlation: u64,
        error_code: i16,
        message: String,
        payload: Bytes,
    },
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The body ended inside a field.
    Truncated {
        what: &'static str,
    },
    /// Bytes remained after the last field.
    TrailingBytes(usize),
    UnsupportedVersion(u8),
    UnknownTag {
        what: &'static str,
        tag: u8,
    },
    /// A frame length (prefix or encoded body) above [`PEER_FRAME_BYTES_MAX`].
    FrameTooLarge(usize),
    InvalidUtf8,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { what } => write!(f, "peer frame truncated in {what}"),
            WireError::TrailingBytes(n) => write!(f, "{n} trailing bytes after peer frame"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported peer frame version {v}"),
            WireError::UnknownTag { what, tag } => write!(f, "unknown {what} tag {tag}"),
            WireError::FrameTooLarge(n) => write!(
                f,
                "peer frame of {n} bytes above the limit {PEER_FRAME_BYTES_MAX}"
            ),
            WireError::InvalidUtf8 => write!(f, "peer frame string is not UTF-8"),
        }
    }
}

impl std::error::Error for WireError {}

/// Splits one frame off the front of `buf`: `Ok(None)` if more bytes are needed, else the bytes
/// consumed (prefix + body) and the body. Refuses a length prefix above
/// [`PEER_FRAME_BYTES_MAX`] before waiting for its bytes.
pub fn split_frame(buf: &[u8]) -> Result<Option<(usize, &[u8])>, WireError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > PEER_FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLarge(len));
    }
    let end = FRAME_PREFIX_BYTES + len;
    match buf.get(FRAME_PREFIX_BYTES..end) {
        Some(body) => Ok(Some((end, body))),
        None => Ok(None),
    }
}

/// Appends the length prefix and body of `frame` to `out`. Refuses (leaving `out` as it was) a
/// body above [`PEER_FRAME_BYTES_MAX`], which the receiver would refuse.
pub fn encode_frame(frame: &PeerFrame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    encode_body(frame, out);
    let len = out.len() - start - FRAME_PREFIX_BYTES;
    if len > PEER_FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(WireError::FrameTooLarge(len));
    }
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Appends the body of `frame` (no length prefix) to `out`.
pub fn encode_body(frame: &PeerFrame, out: &mut Vec<u8>) {
    out.push(WIRE_VERSION);
    match frame {
        PeerFrame::Raft(env) => {
            out.push(KIND_RAFT);
            put_i32(out, env.from);
            put_i32(out, env.to);
            encode_message(&env.message, out);
        }
        PeerFrame::ControllerRequest {
            correlation,
            from,
            payload,
        } => {
            out.push(KIND_CONTROLLER_REQUEST);
            put_u64(out, *correlation);
            put_i32(out, *from);
            put_bytes(out, payload);
        }
        PeerFrame::ControllerResponse {
            correlation,
            error_code,
            message,
            payload,
        } => {
            out.push(KIND_CONTROLLER_RESPONSE);
            put_u64(out, *correlation);
            out.extend_from_slice(&error_code.to_be_bytes());
            put_bytes(out, message.as_bytes());
            put_bytes(out, payload);
        }
    }
}

/// Decodes a body (without its length prefix).
pub fn decode_body(body: &[u8]) -> Result<PeerFrame, WireError> {
    let mut r = Reader { buf: body };
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let frame = match r.u8("kind")? {
        KIND_RAFT => {
            let from = r.i32("from")?;
            let to = r.i32("to")?;
            let message = decode_message(&mut r)?;
            PeerFrame::Raft(Envelope { from, to, message })
        }
        KIND_CONTROLLER_REQUEST => PeerFrame::ControllerRequest {
            correlation: r.u64("correlation")?,
            from: r.i32("from")?,
            payload: r.bytes("payload")?,
        },
        KIND_CONTROLLER_RESPONSE => PeerFrame::ControllerResponse {
            correlation: r.u64("correlation")?,
            error_code: r.i16("error_code")?,
            message: r.string("message")?,
            payload: r.bytes("payload")?,
        },
        tag => return Err(WireError::UnknownTag { what: "kind", tag }),
    };
    if !r.buf.is_empty() {
        return Err(WireError::TrailingBytes(r.buf.len()));
    }
    Ok(frame)
}

fn encode_message(m: &Message, out: &mut Vec<u8>) {
    match m {
        Message::VoteRequest {
            epoch,
            candidate,
            last_epoch,
            last_offset,
            pre_vote,
        } => {
            out.push(0);
            put_i32(out, *epoch);
            put_i32(out, *candidate);
            put_i32(out, *last_epoch);
            put_i64(out, *last_offset);
            out.push(u8::from(*pre_vote));
        }
        Message::VoteResponse {
            epoch,
            leader,
            granted,
            pre_vote,
        } => {
            out.push(1);
            put_i32(out, *epoch);
            put_opt_id(out, *leader);
            out.push(u8::from(*granted));
            out.push(u8::from(*pre_vote));
        }
        Message::BeginQuorumEpoch { epoch, leader } => {
            out.push(2);
            put_i32(out, *epoch);
            put_i32(out, *leader);
        }
        Message::BeginQuorumEpochResponse { epoch } => {
            out.push(3);
            put_i32(out, *epoch);
        }
        Message::EndQuorumEpoch {
            epoch,
            leader,
            preferred_successors,
        } => {
            out.push(4);
            put_i32(out, *epoch);
            put_i32(out, *leader);
            put_u32(out, preferred_successors.len() as u32);
            for s in preferred_successors {
                put_i32(out, *s);
            }
        }
        Message::FetchRequest {
            correlation,
            epoch,
            replica,
            fetch_offset,
            last_fetched_epoch,
            replica_incarnation,
        } => {
            out.push(5);
            put_u64(out, *correlation);
            put_i32(out, *epoch);
            put_i32(out, *replica);
            put_i64(out, *fetch_offset);
            put_i32(out, *last_fetched_epoch);
            put_i64(out, *replica_incarnation);
        }
        Message::FetchResponse {
            correlation,
            epoch,
            leader,
            high_watermark,
            log_start_offset,
            log_end_offset,
            result,
        } => {
            out.push(6);
            put_u64(out, *correlation);
            put_i32(out, *epoch);
            put_opt_id(out, *leader);
            put_i64(out, *high_watermark);
            put_i64(out, *log_start_offset);
            put_i64(out, *log_end_offset);
            match result {
                FetchResult::Entries(entries) => {
                    out.push(0);
                    put_u32(out, entries.len() as u32);
                    for e in entries {
                        put_i64(out, e.offset);
                        put_i32(out, e.epoch);
                        put_bytes(out, &e.payload);
                    }
                }
                FetchResult::Diverging { epoch, end_offset } => {
                    out.push(1);
                    put_i32(out, *epoch);
                    put_i64(out, *end_offset);
                }
                FetchResult::SnapshotNeeded(id) => {
                    out.push(2);
                    put_snapshot_id(out, *id);
                }
                FetchResult::NotLeader => out.push(3),
            }
        }
        Message::FetchSnapshotRequest {
            correlation,
            epoch,
            replica,
            snapshot_id,
            position,
        } => {
            out.push(7);
            put_u64(out, *correlation);
            put_i32(out, *epoch);
            put_i32(out, *replica);
            put_snapshot_id(out, *snapshot_id);
            put_u64(out, *position);
        }
        Message::FetchSnapshotResponse {
            correlation,
            epoch,
            leader,
            snapshot_id,
            chunk,
        } => {
            out.push(8);
            put_u64(out, *correlation);
            put_i32(out, *epoch);
            put_opt_id(out, *leader);
            put_snapshot_id(out, *snapshot_id);
            match chunk {
                SnapshotChunk::Chunk {
                    size,
                    position,
                    bytes,
                } => {
                    out.push(0);
                    put_u64(out, *size);
                    put_u64(out, *position);
                    put_bytes(out, bytes);
                }
                SnapshotChunk::NotFound => out.push(1),
                SnapshotChunk::NotLeader => out.push(2),
            }
        }
    }
}

fn decode_message(r: &mut Reader<'_>) -> Result<Message, WireError> {
    Ok(match r.u8("message tag")? {
        0 => Message::VoteRequest {
            epoch: r.i32("epoch")?,
            candidate: r.i32("candidate")?,
            last_epoch: r.i32("last_epoch")?,
            last_offset: r.i64("last_offset")?,
            pre_vote: r.bool("pre_vote")?,
        },
        1 => Message::VoteResponse {
            epoch: r.i32("epoch")?,
            leader: r.opt_id("leader")?,
            granted: r.bool("granted")?,
            pre_vote: r.bool("pre_vote")?,
        },
        2 => Message::BeginQuorumEpoch {
            epoch: r.i32("epoch")?,
            leader: r.i32("leader")?,
        },
        3 => Message::BeginQuorumEpochResponse {
            epoch: r.i32("epoch")?,
        },
        4 => {
            let epoch = r.i32("epoch")?;
            let leader = r.i32("leader")?;
            let n = r.count("preferred_successors", 4)?;
            let mut preferred_successors = Vec::with_capacity(n);
            for _ in 0..n {
                preferred_successors.push(r.i32("preferred_successors")?);
            }
            Message::EndQuorumEpoch {
                epoch,
                leader,
                preferred_successors,
            }
        }
        5 => Message::FetchRequest {
            correlation: r.u64("correlation")?,
            epoch: r.i32("epoch")?,
            replica: r.i32("replica")?,
            fetch_offset: r.i64("fetch_offset")?,
            last_fetched_epoch: r.i32("last_fetched_epoch")?,
            replica_incarnation: r.i64("replica_incarnation")?,
        },
        6 => {
            let correlation = r.u64("correlation")?;
            let epoch = r.i32("epoch")?;
            let leader = r.opt_id("leader")?;
            let high_watermark = r.i64("high_watermark")?;
            let log_start_offset = r.i64("log_start_offset")?;
            let log_end_offset = r.i64("log_end_offset")?;
            let result = match r.u8("fetch result tag")? {
                0 => {
                    let n = r.count("entries", ENTRY_MIN_BYTES)?;
                    let mut entries = Vec::with_capacity(n);
                    for _ in 0..n {
                        entries.push(Entry {
                            offset: r.i64("entry offset")?,
                            epoch: r.i32("entry epoch")?,
                            payload: r.bytes("entry payload")?,
                        });
                    }
                    FetchResult::Entries(entries)
                }
                1 => FetchResult::Diverging {
                    epoch: r.i32("diverging epoch")?,
                    end_offset: r.i64("diverging end_offset")?,
                },
                2 => FetchResult::SnapshotNeeded(r.snapshot_id()?),
                3 => FetchResult::NotLeader,
                tag => {
                    return Err(WireError::UnknownTag {
                        what: "fetch result",
                        tag,
                    })
                }
            };
            Message::FetchResponse {
                correlation,
                epoch,
                leader,
                high_watermark,
                log_start_offset,
                log_end_offset,
                result,
            }
        }
        7 => Message::FetchSnapshotRequest {
            correlation: r.u64("correlation")?,
            epoch: r.i32("epoch")?,
            replica: r.i32("replica")?,
            snapshot_id: r.snapshot_id()?,
            position: r.u64("position")?,
        },
        8 => {
            let correlation = r.u64("correlation")?;
            let epoch = r.i32("epoch")?;
            let leader = r.opt_id("leader")?;
            let snapshot_id = r.snapshot_id()?;
            let chunk = match r.u8("snapshot chunk tag")? {
                0 => SnapshotChunk::Chunk {
                    size: r.u64("chunk size")?,
                    position: r.u64("chunk position")?,
                    bytes: r.bytes("chunk bytes")?,
                },
                1 => SnapshotChunk::NotFound,
                2 => SnapshotChunk::NotLeader,
                tag => {
                    return Err(WireError::UnknownTag {
                        what: "snapshot chunk",
                        tag,
                    })
                }
            };
            Message::FetchSnapshotResponse {
                correlation,
                epoch,
                leader,
                snapshot_id,
                chunk,
            }
        }
        tag => {
            return Err(WireError::UnknownTag {
                what: "message",
                tag,
            })
        }
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Callers keep frames below PEER_FRAME_BYTES_MAX (encode_frame checks), far below u32::MAX.
    let len = u32::try_from(b.len()).expect("field above 4 GiB");
    put_u32(out, len);
    out.extend_from_slice(b);
}

fn put_opt_id(out: &mut Vec<u8>, id: Option<NodeId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_i32(out, id);
        }
    }
}

fn put_snapshot_id(out: &mut Vec<u8>, id: SnapshotId) {
    put_i64(out, id.end_offset);
    put_i32(out, id.epoch);
}

/// A cursor over a body; every read checks the remaining length first.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::UnknownTag { what, tag }),
        }
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn opt_id(&mut self, what: &'static str) -> Result<Option<NodeId>, WireError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.i32(what)?)),
            tag => Err(WireError::UnknownTag { what, tag }),
        }
    }

    fn snapshot_id(&mut self) -> Result<SnapshotId, WireError> {
        Ok(SnapshotId {
            end_offset: self.i64("snapshot end_offset")?,
            epoch: self.i32("snapshot epoch")?,
        })
    }

    /// A list count whose elements take at least `min_bytes` each: refused if the remaining
    /// bytes cannot hold that many, so the count bounds no allocation beyond the body.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_bytes) > self.buf.len() {
            return Err(WireError::Truncated { what });
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let n = self.u32(what)? as usize;
        Ok(Bytes::copy_from_slice(self.take(n, what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| WireError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn arb_snapshot_id() -> impl Strategy<Value = SnapshotId> {
        (any::<i64>(), any::<i32>())
            .prop_map(|(end_offset, epoch)| SnapshotId { end_offset, epoch })
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (any::<i64>(), any::<i32>(), arb_bytes()).prop_map(|(offset, epoch, payload)| Entry {
            offset,
            epoch,
            payload,
        })
    }

    fn arb_fetch_result() -> impl Strategy<Value = FetchResult> {
        prop_oneof![
            prop::collection::vec(arb_entry(), 0..5).prop_map(FetchResult::Entries),
            (any::<i32>(), any::<i64>())
                .prop_map(|(epoch, end_offset)| FetchResult::Diverging { epoch, end_offset }),
            arb_snapshot_id().prop_map(FetchResult::SnapshotNeeded),
            Just(FetchResult::NotLeader),
        ]
    }

    fn arb_chunk() -> impl Strategy<Value = SnapshotChunk> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), arb_bytes()).prop_map(|(size, position, bytes)| {
                SnapshotChunk::Chunk {
                    size,
                    position,
                    bytes,
                }
            }),
            Just(SnapshotChunk::NotFound),
            Just(SnapshotChunk::NotLeader),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let id = any::<i32>();
        let opt = || any::<Option<i32>>();
        prop_oneof![
            (id, id, id, any::<i64>(), any::<bool>()).prop_map(
                |(epoch, candidate, last_epoch, last_offset, pre_vote)| {
                    Message::VoteRequest {
                        epoch,
                        candidate,
                        last_epoch,
                        last_offset,
                        pre_vote,
                    }
                }
            ),
            (id, opt(), any::<bool>(), any::<bool>()).prop_map(
                |(epoch, leader, granted, pre_vote)| Message::VoteResponse {
                    epoch,
                    leader,
                    granted,
                    pre_vote
                }
            ),
            (id, id).prop_map(|(epoch, leader)| Message::BeginQuorumEpoch { epoch, leader }),
            id.prop_map(|epoch| Message::BeginQuorumEpochResponse { epoch }),
            (id, id, prop::collection::vec(any::<i32>(), 0..5)).prop_map(
                |(epoch, leader, preferred_successors)| {
                    Message::EndQuorumEpoch {
                        epoch,
                        leader,
                        preferred_successors,
                    }
                }
            ),
            (any::<u64>(), id, id, any::<i64>(), id, any::<i64>()).prop_map(
                |(correlation, epoch, replica, fetch_offset, last_fetched_epoch, incarnation)| {
                    Message::FetchRequest {
                        correlation,
                        epoch,
                        replica,
                        fetch_offset,
                        last_fetched_epoch,
                        replica_incarnation: incarnation,
                    }
                }
            ),
            (
                any::<u64>(),
                id,
                opt(),
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
                arb_fetch_result()
            )
                .prop_map(
                    |(
                        correlation,
                        epoch,
                        leader,
                        high_watermark,
                        log_start_offset,
                        log_end_offset,
                        result,
                    )| {
                        Message::FetchResponse {
                            correlation,
                            epoch,
                            leader,
                            high_watermark,
                            log_start_offset,
                            log_end_offset,
                            result,
                        }
                    }
                ),
            (any::<u64>(), id, id, arb_snapshot_id(), any::<u64>()).prop_map(
                |(correlation, epoch, replica, snapshot_id, position)| {
                    Message::FetchSnapshotRequest {
                        correlation,
                        epoch,
                        replica,
                        snapshot_id,
                        position,
                    }
                }
            ),
            (any::<u64>(), id, opt(), arb_snapshot_id(), arb_chunk()).prop_map(
                |(correlation, epoch, leader, snapshot_id, chunk)| {
                    Message::FetchSnapshotResponse {
                        correlation,
                        epoch,
                        leader,
                        snapshot_id,
                        chunk,
                    }
                }
            ),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = PeerFrame> {
        prop_oneof![
            (any::<i32>(), any::<i32>(), arb_message())
                .prop_map(|(from, to, message)| PeerFrame::Raft(Envelope { from, to, message })),
            (any::<u64>(), any::<i32>(), arb_bytes()).prop_map(|(correlation, from, payload)| {
                PeerFrame::ControllerRequest {
                    correlation,
                    from,
                    payload,
                }
            }),
            (any::<u64>(), any::<i16>(), ".{0,20}", arb_bytes()).prop_map(
                |(correlation, error_code, message, payload)| PeerFrame::ControllerResponse {
                    correlation,
                    error_code,
                    message,
                    payload,
                }
            ),
        ]
    }

    fn encoded(frame: &PeerFrame) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(frame, &mut out).unwrap();
        out
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in arb_frame()) {
            let buf = encoded(&frame);
            let (used, body) = split_frame(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(decode_body(body).unwrap(), frame);
        }

        #[test]
        fn every_strict_prefix_of_a_body_is_refused(frame in arb_frame()) {
            let buf = encoded(&frame);
            let body = &buf[FRAME_PREFIX_BYTES..];
            for cut in 0..body.len() {
                prop_assert!(decode_body(&body[..cut]).is_err());
                // The splitter waits for the rest.
                prop_assert_eq!(split_frame(&buf[..FRAME_PREFIX_BYTES + cut]).unwrap(), None);
            }
            let mut long = body.to_vec();
            long.push(0);
            prop_assert_eq!(decode_body(&long), Err(WireError::TrailingBytes(1)));
        }

        #[test]
        fn any_bytes_decode_or_error_and_reencode_identically(
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(frame) = decode_body(&body) {
                let mut again = Vec::new();
                encode_body(&frame, &mut again);
                prop_assert_eq!(again, body);
            }
        }

        #[test]
        fn mutated_frames_never_panic(frame in arb_frame(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut buf = encoded(&frame);
            let i = pos % buf.len();
            buf[i] = byte;
            if let Ok(Some((_, body))) = split_frame(&buf) {
                let _ = decode_body(body);
            }
        }
    }

    #[test]
    fn frames_concatenate_and_split_one_by_one() {
        let a = PeerFrame::ControllerRequest {
            correlation: 7,
            from: 2,
            payload: Bytes::from_static(b"abc"),
        };
        let b = PeerFrame::Raft(Envelope {
            from: 1,
            to: 3,
            message: Message::BeginQuorumEpochResponse { epoch: 4 },
        });
        let mut buf = Vec::new();
        encode_frame(&a, &mut buf).unwrap();
        encode_frame(&b, &mut buf).unwrap();
        let (n, body) = split_frame(&buf).unwrap().unwrap();
        assert_eq!(decode_body(body).unwrap(), a);
        let (m, body) = split_frame(&buf[n..]).unwrap().unwrap();
        assert_eq!(decode_body(body).unwrap(), b);
        assert_eq!(n + m, buf.len());
        assert_eq!(split_frame(&buf[..3]).unwrap(), None);
    }

    #[test]
    fn the_documented_layout() {
        let f = PeerFrame::Raft(Envelope {
            from: 1,
            to: 2,
            message: Message::VoteResponse {
                epoch: 5,
                leader: Some(3),
                granted: true,
                pre_vote: false,
            },
        });
        let buf = encoded(&f);
        assert_eq!(
            buf,
            [
                0, 0, 0, 22, // length
                3, 0, // version, kind Raft
                0, 0, 0, 1, 0, 0, 0, 2, // from, to
                1, 0, 0, 0, 5, // VoteResponse, epoch
                1, 0, 0, 0, 3, // leader Some(3)
                1, 0, // granted, pre_vote
            ]
        );
    }

    #[test]
    fn limits_and_bad_tags_are_refused() {
        let mut huge = ((PEER_FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        assert_eq!(
            split_frame(&huge),
            Err(WireError::FrameTooLarge(PEER_FRAME_BYTES_MAX + 1))
        );
        huge.clear();
        let big = PeerFrame::ControllerRequest {
            correlation: 0,
            from: 0,
            payload: Bytes::from(vec![0u8; PEER_FRAME_BYTES_MAX]),
        };
        let mut out = vec![9];
        assert!(matches!(
            encode_frame(&big, &mut out),
            Err(WireError::FrameTooLarge(_))
        ));
        assert_eq!(out, [9], "a refused frame leaves the buffer as it was");
        // The defaults' largest messages fit.
        let cfg = RaftConfig::new(1, vec![1], 0);
        let chunk = PeerFrame::Raft(Envelope {
            from: 1,
            to: 2,
            message: Message::FetchSnapshotResponse {
                correlation: 1,
                epoch: 1,
                leader: Some(1),
                snapshot_id: SnapshotId::default(),
                chunk: SnapshotChunk::Chunk {
                    size: 1,
                    position: 0,
                    bytes: Bytes::from(vec![
                        0u8;
                        cfg.snapshot_chunk_bytes.max(cfg.max_fetch_bytes)
                    ]),
                },
            },
        });
        encode_frame(&chunk, &mut Vec::new()).unwrap();

        // Version 1 (a node from before the Fetch carried its incarnation), 2 (before the
        // FetchResponse carried the responder's log end) and unknown ones.
        assert_eq!(decode_body(&[1, 0]), Err(WireError::UnsupportedVersion(1)));
        assert_eq!(decode_body(&[2, 0]), Err(WireError::UnsupportedVersion(2)));
        assert_eq!(decode_body(&[4, 0]), Err(WireError::UnsupportedVersion(4)));
        assert!(matches!(
            decode_body(&[WIRE_VERSION, 3]),
            Err(WireError::UnknownTag { what: "kind", .. })
        ));
        assert!(matches!(
            decode_body(&[WIRE_VERSION, 0, 0, 0, 0, 1, 0, 0, 0, 2, 9]),
            Err(WireError::UnknownTag {
                what: "message",
                ..
            })
        ));
        // VoteRequest with pre_vote = 2.
        let mut v = vec![WIRE_VERSION, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0];
        v.extend_from_slice(&[0; 4 + 4 + 4 + 8]);
        v.push(2);
        assert!(matches!(decode_body(&v), Err(WireError::UnknownTag { .. })));
        // An entry count far above what the body holds is refused before allocating.
        let mut v = vec![WIRE_VERSION, 0, 0, 0, 0, 1, 0, 0, 0, 2, 6];
        v.extend_from_slice(&[0; 8 + 4 + 1 + 8 + 8 + 8]);
        v.push(0);
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_body(&v),
            Err(WireError::Truncated { what: "entries" })
        ));
        // Invalid UTF-8 in a response message.
        let mut v = vec![WIRE_VERSION, 2];
        v.extend_from_slice(&[0; 8 + 2]);
        v.extend_from_slice(&1u32.to_be_bytes());
        v.push(0xff);
        v.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode_body(&v), Err(WireError::InvalidUtf8));
        assert!(decode_body(&[]).is_err());
    }
}
