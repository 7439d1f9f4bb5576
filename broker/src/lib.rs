//! A Kafka-compatible broker whose cores are sans-IO state machines.
//!
//! - [`log`]: the partition log (segments, indexes, recovery, retention) over a [`storage`] trait.
//! - [`storage`]: the file system seam: real files in production, an in-memory disk with faults
//!   for simulation.
//! - [`protocol`]: request frames to typed requests and responses to frames.
//! - [`apis`]: KafkaApis, one handler per request type.
//! - [`replica`]: ReplicaManager, the topics and partitions this broker hosts.
//! - [`server`]: the tokio shell: listener, connections, background loops, shutdown.
//! - [`config`]: flags, environment and file configuration.
//! - [`dev_cluster`]: `broker dev-cluster`, an N-node loopback cluster of child processes.
//! - [`cluster`]: the replicated cluster: the controller (sans-IO), the quorum shell, partition
//!   replication and the view request handlers read.
//! - [`raft`]: the KRaft-style metadata quorum core (sans-IO), its durable store and wire codec.
//! - [`planted`]: deliberate bugs behind the `planted-bugs` feature, for the simulator to catch.
//!
//! ARCHITECTURE.md at the repository root explains how they fit together.

pub mod apis;
pub mod blocking;
pub mod cluster;
pub mod config;
pub mod dev_cluster;
pub mod group;
pub mod log;
pub mod metrics;
pub mod planted;
pub mod protocol;
pub mod raft;
pub mod replica;
pub mod server;
pub mod storage;
pub mod sync;
