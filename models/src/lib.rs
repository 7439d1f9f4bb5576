//! Model checks of the protocols (stateright).
//!
//! * [`quorum`]: the metadata quorum's election and commit rules (one leader per epoch,
//!   committed entries never lost), also with a voter that loses its disk and rejoins, and
//!   planted bugs (vote twice, commit from the leader alone, a wiped voter that votes at once,
//!   a rejoining voter that follows too early) as refuted variants.
//! * [`replication`]: partition replication under a controller (ISR and ELR, AlterPartition,
//!   the high watermark, truncation, fencing, crashes, reassignments and replaced disks): the
//!   ISR and ELR always hold every committed entry, and replicas serve nothing else; planted
//!   variants (among them five rules the broker had until this model or the sims found them
//!   wrong) are refuted.

pub mod quorum;
pub mod replication;
