//! Prints the replication model's state count for some bounds:
//! `cargo run --release -p models --example replication_size -- ENTRIES CHANGES FENCES CRASHES DEPTH`
//! (DEPTH 0 is unbounded). REASSIGNS, WIPES, START (the first replicas, a bit each),
//! START_ENTRIES and NO_FETCH_LOSS set those bounds; the planted flags' names in capitals
//! (AP_CHECKS_ISR, REASSIGN_DROPS_IN_SYNC, ...) plant those variants. MIN_ISR and
//! MIN_ISR_CHANGES set min.insync.replicas at the start and how often an operator changes it.
use models::replication::ReplicationModel;
use stateright::{Checker, Model};
fn env_u8(name: &str, default: u8) -> u8 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap())
}
fn main() {
    let a: Vec<u64> = std::env::args()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let m = ReplicationModel {
        entries_max: a[0] as u8,
        changes_max: a[1] as u8,
        fences_max: a[2] as u8,
        crashes_max: a[3] as u8,
        ap_checks_isr: std::env::var("AP_CHECKS_ISR").is_ok(),
        hw_ignores_pending: std::env::var("HW_IGNORES_PENDING").is_ok(),
        hw_below_min_isr: std::env::var("HW_BELOW_MIN_ISR").is_ok(),
        restart_keeps_epoch: std::env::var("RESTART_KEEPS_EPOCH").is_ok(),
        join_before_epoch_start: std::env::var("JOIN_BEFORE_EPOCH_START").is_ok(),
        elect_any: std::env::var("ELECT_ANY").is_ok(),
        refusal_ignores_ask: std::env::var("REFUSAL_IGNORES_ASK").is_ok(),
        refusal_keeps_epoch: std::env::var("REFUSAL_KEEPS_EPOCH").is_ok(),
        reassign_drops_in_sync: std::env::var("REASSIGN_DROPS_IN_SYNC").is_ok(),
        reassign_trusts_isr: std::env::var("REASSIGN_TRUSTS_ISR").is_ok(),
        min_isr_after_isr: std::env::var("MIN_ISR_AFTER_ISR").is_ok(),
        min_isr: env_u8("MIN_ISR", 2),
        min_isr_changes_max: env_u8("MIN_ISR_CHANGES", 0),
        reassigns_max: env_u8("REASSIGNS", 0),
        wipes_max: env_u8("WIPES", 0),
        start_replicas: env_u8("START", 0b111),
        start_entries: env_u8("START_ENTRIES", 0),
        fetch_loss: std::env::var("NO_FETCH_LOSS").is_err(),
        ..ReplicationModel::default()
    };
    let t = std::time::Instant::now();
    let mut c = m.checker().threads(2);
    if a[4] > 0 {
        c = c.target_max_depth(a[4] as usize);
    }
    let c = c
        .finish_when(stateright::HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    println!(
        "{:?}: {} unique, {:.1?}",
        a,
        c.unique_state_count(),
        t.elapsed()
    );
    c.assert_properties();
}
