//! The quorum's vocabulary: node ids, log entries, the persistent quorum state, snapshots, the
//! messages voters exchange (an internal wire model whose fields follow Kafka's Vote,
//! BeginQuorumEpoch, EndQuorumEpoch, Fetch and FetchSnapshot messages), the storage operations the
//! core asks its caller to perform, and the configuration.

use bytes::Bytes;

/// A voter's or observer's id (Kafka's `replicaId` / `node.id`).
pub type NodeId = i32;

/// One metadata log entry. The core replicates `payload` as opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub offset: i64,
    /// The leader epoch in which the entry was appended.
    pub epoch: i32,
    pub payload: Bytes,
}

/// What must be durable before a vote is granted or a new epoch is acted on (Kafka's
/// `quorum-state` file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumState {
    pub epoch: i32,
    pub voted_for: Option<NodeId>,
    pub leader: Option<NodeId>,
    /// This voter started with nothing stored (a first start, or a wiped or replaced disk: the
    /// two look alike) and may not vote or stand until it knows it has forgotten nothing it
    /// acknowledged or voted for (see [`super::RaftCore::is_rejoining`]). Durable, so a
    /// crash before that point does not make a half-filled log look like a trustworthy one.
    pub rejoining: bool,
}

/// Kafka's `SnapshotId`: the snapshot covers every offset below `end_offset`; `epoch` is the
/// epoch of the entry at `end_offset - 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub end_offset: i64,
    pub epoch: i32,
}

/// A snapshot of the applied state at `id.end_offset` (opaque bytes to the core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub data: Bytes,
}

/// Result of a Fetch: entries, or what the follower must do first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchResult {
    /// Entries starting at the fetch offset (possibly none: the follower is caught up).
    Entries(Vec<Entry>),
    /// The follower's log diverges: truncate to at most `end_offset` (the end of `epoch` in the
    /// leader's log) and fetch again. Kafka's `DivergingEpoch`.
    Diverging { epoch: i32, end_offset: i64 },
    /// The fetch offset is below the leader's log start: fetch this snapshot. Kafka's
    /// `SnapshotId` field in the FetchResponse.
    SnapshotNeeded(SnapshotId),
    /// The request's epoch is not the responder's (or the responder is not the leader); the
    /// response's `epoch`/`leader` tell the requester what the responder knows.
    NotLeader,
}

/// Result of a FetchSnapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotChunk {
    Chunk {
        /// Total snapshot size in bytes.
        size: u64,
        position: u64,
        bytes: Bytes,
    },
    /// The leader no longer has that snapshot (`SNAPSHOT_NOT_FOUND`): fetch again.
    NotFound,
    NotLeader,
}

/// Messages between voters. Every request carries the sender's epoch; every response carries the
/// responder's epoch and known leader. `correlation` is the transport's correlation id: responses
/// echo it so the requester can discard stale or duplicated responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Kafka `Vote` (KIP-595), with KIP-996's `PreVote` flag. For a pre-vote `epoch` is the epoch
    /// the candidate would use (its current epoch + 1); it is not persisted by anyone.
    VoteRequest {
        epoch: i32,
        candidate: NodeId,
        last_epoch: i32,
        /// The candidate's log end offset.
        last_offset: i64,
        pre_vote: bool,
    },
    VoteResponse {
        epoch: i32,
        leader: Option<NodeId>,
        granted: bool,
        pre_vote: bool,
    },
    /// Kafka `BeginQuorumEpoch`: the sender won `epoch`.
    BeginQuorumEpoch {
        epoch: i32,
        leader: NodeId,
    },
    BeginQuorumEpochResponse {
        epoch: i32,
    },
    /// Kafka `EndQuorumEpoch`: the leader of `epoch` resigned; `preferred_successors` in
    /// preference order (most up to date first).
    EndQuorumEpoch {
        epoch: i32,
        leader: NodeId,
        preferred_successors: Vec<NodeId>,
    },
    /// Kafka `Fetch` from a follower (voter or observer) to the leader.
    FetchRequest {
        correlation: u64,
        epoch: i32,
        replica: NodeId,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        /// The fetching process's broker incarnation (Kafka's `ReplicaState.ReplicaEpoch`),
        /// -1 for none: the controller learns which process holds which prefix of the log.
        replica_incarnation: i64,
    },
    FetchResponse {
        correlation: u64,
        epoch: i32,
        leader: Option<NodeId>,
        high_watermark: i64,
        log_start_offset: i64,
        /// The responder's own log end (a leader's or not), -1 where unknown: a voter that
        /// starts with nothing stored learns from it whether anything can have been committed.
        log_end_offset: i64,
        result: FetchResult,
    },
    /// Kafka `FetchSnapshot`.
    FetchSnapshotRequest {
        correlation: u64,
        epoch: i32,
        replica: NodeId,
        snapshot_id: SnapshotId,
        position: u64,
    },
    FetchSnapshotResponse {
        correlation: u64,
        epoch: i32,
        leader: Option<NodeId>,
        snapshot_id: SnapshotId,
        chunk: SnapshotChunk,
    },
}

impl Message {
    /// The sender's epoch.
    pub fn epoch(&self) -> i32 {
        match self {
            Message::VoteRequest { epoch, .. }
            | Message::VoteResponse { epoch, .. }
            | Message::BeginQuorumEpoch { epoch, .. }
            | Message::BeginQuorumEpochResponse { epoch }
            | Message::EndQuorumEpoch { epoch, .. }
            | Message::FetchRequest { epoch, .. }
            | Message::FetchResponse { epoch, .. }
            | Message::FetchSnapshotRequest { epoch, .. }
            | Message::FetchSnapshotResponse { epoch, .. } => *epoch,
        }
    }

    /// Short name, for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::VoteRequest { pre_vote: true, .. } => "PreVote",
            Message::VoteRequest { .. } => "Vote",
            Message::VoteResponse { pre_vote: true, .. } => "PreVoteResp",
            Message::VoteResponse { .. } => "VoteResp",
            Message::BeginQuorumEpoch { .. } => "BeginQuorumEpoch",
            Message::BeginQuorumEpochResponse { .. } => "BeginQuorumEpochResp",
            Message::EndQuorumEpoch { .. } => "EndQuorumEpoch",
            Message::FetchRequest { .. } => "Fetch",
            Message::FetchResponse { .. } => "FetchResp",
            Message::FetchSnapshotRequest { .. } => "FetchSnapshot",
            Message::FetchSnapshotResponse { .. } => "FetchSnapshotResp",
        }
    }
}

/// A message with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
}

/// What the caller must do to storage, in order. Writes need not be durable until a `Sync`;
/// after a crash any prefix of the unsynced operations may have reached the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Replace the quorum-state file.
    PersistQuorumState(QuorumState),
    /// Append entries at the log end.
    Append(Vec<Entry>),
    /// Remove every entry at or above `end_offset`.
    Truncate { end_offset: i64 },
    /// Store this snapshot (of committed state); entries below its end offset may be dropped.
    WriteSnapshot(Snapshot),
    /// Replace the whole log with this snapshot (a follower that fell behind the leader's log
    /// start): the log afterwards is empty and starts at the snapshot's end offset.
    InstallSnapshot(Snapshot),
    /// Make every operation above durable (fsync log, snapshot and quorum-state files), then
    /// call [`super::RaftCore::synced`] with `token`.
    Sync { token: u64 },
}

/// What the caller recovered from storage at start.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub quorum_state: QuorumState,
    pub snapshot: Option<Snapshot>,
    /// The log entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// Limits and timeouts. Every limit the core enforces lives here.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The voter set (static for now; KIP-853 reconfiguration is future work).
    pub voters: Vec<NodeId>,
    /// Base election timeout; each election waits this plus a random jitter.
    pub election_timeout_ms: u64,
    pub election_jitter_ms: u64,
    /// A follower that has not heard from its leader within this starts an election; a leader
    /// that has not been fetched from by a majority within this resigns (check-quorum); a voter
    /// that heard from a leader within this refuses pre-votes.
    pub fetch_timeout_ms: u64,
    /// How long a caught-up follower waits before fetching again.
    pub fetch_backoff_ms: u64,
    /// An unanswered Fetch / FetchSnapshot is resent after this.
    pub request_timeout_ms: u64,
    pub max_fetch_entries: usize,
    pub max_fetch_bytes: usize,
    pub snapshot_chunk_bytes: usize,
    /// A follower refuses to buffer a snapshot larger than this.
    pub max_snapshot_bytes: usize,
    /// [`super::RaftCore::snapshot_hint`] asks for a snapshot once the log holds more entries.
    pub max_log_entries: usize,
    /// Proposals are refused while this many entries are uncommitted.
    pub max_uncommitted_entries: usize,
    pub max_payload_bytes: usize,
    /// KIP-996 pre-vote: ask for pre-votes before bumping the epoch (off: classic elections, as
    /// a cluster without the feature runs).
    pub pre_vote: bool,
    /// Seed for the election jitter (the shell can use the node id and boot time).
    pub seed: u64,
    /// This process's broker incarnation, sent with every Fetch; -1 for none.
    pub incarnation: i64,
}

impl RaftConfig {
    pub fn new(node_id: NodeId, voters: Vec<NodeId>, seed: u64) -> Self {
        RaftConfig {
            node_id,
            voters,
            election_timeout_ms: 1000,
            election_jitter_ms: 1000,
            fetch_timeout_ms: 2000,
            fetch_backoff_ms: 50,
            request_timeout_ms: 2000,
            max_fetch_entries: 500,
            max_fetch_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 30,
            max_log_entries: 100_000,
            max_uncommitted_entries: 10_000,
            max_payload_bytes: 1 << 20,
            pre_vote: true,
            seed,
            incarnation: -1,
        }
    }

    pub(crate) fn validate(&self) {
        let mut v = self.voters.clone();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), self.voters.len(), "duplicate voters");
        assert!(!v.is_empty(), "no voters");
        assert!(self.election_timeout_ms > 0 && self.fetch_timeout_ms > 0);
        assert!(self.max_fetch_entries > 0 && self.max_fetch_bytes > 0);
        assert!(self.snapshot_chunk_bytes > 0 && self.max_log_entries > 0);
        assert!(self.max_uncommitted_entries > 0 && self.request_timeout_ms > 0);
    }
}
