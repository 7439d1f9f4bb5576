//! Prints the quorum model's state count for a few bounds: `cargo run --release -p models --example quorum_size`.
use models::quorum::QuorumModel;
use stateright::{Checker, Model};
fn main() {
    let a: Vec<u64> = std::env::args()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let m = QuorumModel {
        max_epoch: a[0] as u8,
        max_log: a[1] as usize,
        candidates: a[2] as u8,
        ..QuorumModel::default()
    };
    let t = std::time::Instant::now();
    let c = m
        .checker()
        .threads(2)
        .target_max_depth(a[4] as usize)
        .spawn_bfs()
        .join();
    println!(
        "{:?}: {} unique, {:.1?}",
        a,
        c.unique_state_count(),
        t.elapsed()
    );
}
