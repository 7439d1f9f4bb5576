//! The Kafka protocol client the workloads use: the broker's own minimal client
//! (`broker::protocol::client`), re-exported so the simulator and the follower fetchers speak
//! through the same code.

pub use broker::protocol::client::*;
