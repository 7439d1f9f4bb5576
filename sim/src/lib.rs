//! Deterministic simulation of the broker: its sans-IO cores, and the whole server.
//!
//! Two layers. The core stepper ([`world`]) is a seeded, single-threaded discrete-event
//! stepper over one broker node: an in-memory disk with faults
//! ([`broker::storage::MemStorage`]), 1–3 partitions each driven by the production
//! [`broker::replica::PartitionCore`], a group-commit flusher, pipelining producers and
//! manually assigned consumers. Everything the clients see is recorded into an
//! [`invariants`] history and checked at the end of the run.
//!
//! * [`world`]: the core stepper ([`world::run`] runs one seed).
//! * [`system`]: the whole-system layer: the real broker server under turmoil, with network,
//!   crash, disk and clock faults, driven by the Jepsen workload.
//! * [`workload`], [`group_member`] and [`client`]: that workload (idempotent producers, an
//!   assigned consumer, a consumer group committing offsets) and its minimal Kafka client;
//!   `sim check` runs the same workload against any real bootstrap address.
//! * [`trace`]: the FNV-1a-hashed event trace (same seed ⇒ same hash, byte for byte).
//! * [`cluster`]: three real broker nodes (quorum voters and brokers) replicating under
//!   turmoil, with crashes, isolations and clock skew ([`cluster::run_cluster_seed`]).
//! * [`raft`]: the multi-node metadata-quorum simulation ([`raft::run_raft_seed`]).
//! * [`decode`]: the consumer side of the record-batch format (CRC check, record parsing).
//! * [`groups`]: the group coordinator under simulated consumers, persist failures and
//!   crashes ([`groups::run_group_seed`] runs one seed).

pub mod client;
pub mod cluster;
pub mod decode;
pub mod group_member;
pub mod groups;
pub mod raft;
pub mod replication;
pub mod system;
pub mod trace;
pub mod workload;
pub mod world;

pub use world::{run, Faults, RunConfig, RunResult};

use std::sync::Mutex;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic hook (which prints to stderr) with one that remembers the
/// message and location for [`panic_message`]: a panic inside a seed is a finding, reported
/// with the seed, not noise in the middle of a sweep.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = payload_text(info.payload());
        let text = match info.location() {
            Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
            None => msg,
        };
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }));
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Takes the message of the last panic the hook saw (a panic inside a task of the simulated
/// broker is caught by tokio; the whole-system layer reports it as a finding).
pub fn take_panic() -> Option<String> {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// One turmoil step. An error, or a panic inside turmoil itself (a full listen backlog), comes
/// back as the seed's violation, so it fails the seed with its trace instead of ending a sweep
/// (the panic hook keeps messages for per-seed reports, so an uncaught one printed nothing).
pub fn step_turmoil(sim: &mut turmoil::Sim<'_>, at_ms: u64) -> Result<bool, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(format!("simulation error at {at_ms} ms: {e}")),
        Err(payload) => Err(format!(
            "the simulated network panicked at {at_ms} ms: {}",
            panic_message(&payload)
        )),
    }
}

/// The message of a caught panic, with its location when the hook saw it.
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    let hooked = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
    hooked.unwrap_or_else(|| payload_text(payload.as_ref()))
}
