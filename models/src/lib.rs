//! Model checks of the protocols (stateright).
//!
//! * [`quorum`]: the metadata quorum's election and commit rules (one leader per epoch,
//!   committed entries never lost), with the vote-twice bug as a refuted variant.

pub mod quorum;
