//! The KRaft-style metadata quorum, sans-IO: elections with pre-vote, pull-based replication
//! with diverging epochs, the high watermark, snapshots, and the metadata records and image the
//! cluster replicates. Nothing here does IO; a shell (not yet written) or the simulator
//! (`sim/src/raft.rs`) drives [`RaftCore`].
//!
//! - [`types`]: messages, storage operations, quorum state, configuration.
//! - [`log`]: the in-memory view of the replicated log and its epoch queries.
//! - [`core`]: [`RaftCore`], one voter's state machine.
//! - [`metadata`]: [`MetadataRecord`] encoding and the [`MetadataImage`] state machine.
//! - [`wire`]: the binary codec of frames between controller nodes ([`PeerFrame`]).
//! - [`store`]: [`RaftStore`], durable storage of quorum state, log and snapshots.

pub mod core;
pub mod log;
pub mod metadata;
pub mod store;
pub mod types;
pub mod wire;

#[cfg(test)]
mod tests;

pub use self::core::{
    Committed, ProposeError, QuorumDescription, RaftCore, ReplicaDescription, Role, OBSERVERS_MAX,
};
pub use self::log::RaftLog;
pub use self::metadata::{MetadataImage, MetadataRecord};

pub use self::store::RaftStore;
pub use self::types::*;
pub use self::wire::{
    decode_body, encode_frame, split_frame, PeerFrame, WireError, PEER_FRAME_BYTES_MAX,
};
