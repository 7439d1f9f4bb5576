//! What the coordinator persists: the records of Kafka's `__consumer_offsets` log, as Rust values.
//!
//! The shell appends each record durably in the order [`super::GroupCoordinator::poll_record`]
//! yields them, and on start hands every record back, in log order, to
//! [`super::GroupCoordinator::replay`]. Replay semantics (last record wins):
//!
//! - `Offset`: the committed offset of one partition for a group (creates the group, Empty, if it
//!   is unknown).
//! - `OffsetTombstone`: drop that partition's committed offset.
//! - `Group`: the group's membership after a rebalance completed (members with their assignment;
//!   the group is loaded Stable) or after it emptied (no members; loaded Empty). Members get fresh
//!   session deadlines in [`super::GroupCoordinator::loaded`].
//! - `GroupTombstone`: the group was deleted: drop it **and all its committed offsets**.

use serde::{Deserialize, Serialize};

/// One member of a group as persisted in a [`GroupRecord::Group`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's protocol metadata for the group's selected protocol.
    pub subscription: Vec<u8>,
    /// The assignment the leader gave this member (empty when it gave none).
    pub assignment: Vec<u8>,
}

/// A record of the internal offsets log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: Option<String>,
        commit_timestamp_ms: i64,
    },
    OffsetTombstone {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
        protocol_type: Option<String>,
        protocol: Option<String>,
        generation: i32,
        leader: Option<String>,
        members: Vec<MemberRecord>,
    },
    /// The group and all its committed offsets are gone.
    GroupTombstone { group: String },
}

impl GroupRecord {
    /// The group this record belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. }
            | GroupRecord::OffsetTombstone { group, .. }
            | GroupRecord::Group { group, .. }
            | GroupRecord::GroupTombstone { group } => group,
        }
    }
}
