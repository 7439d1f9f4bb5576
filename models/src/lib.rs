//! Model checks of the protocols (stateright).
//!
//! * [`quorum`]: the metadata quorum's election and commit rules (one leader per epoch,
//!   committed entries never lost), also with a voter that loses its disk and rejoins, and
//!   planted bugs (vote twice, commit from the leader alone, a wiped voter that votes at once,
//!   a rejoining voter that follows too early) as refuted variants.

pub mod quorum;
pub mod replication;
