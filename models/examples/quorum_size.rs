//! Prints the quorum model's state count for some bounds:
//! `cargo run --release -p models --example quorum_size -- EPOCHS LOG CANDIDATES DEPTH [WIPES WIPEABLE]`
//! (WIPEABLE is a bit per voter; DEPTH 0 is unbounded; EARLY_FOLLOW=1 plants that bug).
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
        wipes_max: a.get(4).copied().unwrap_or(0) as u8,
        wipeable: a.get(5).copied().unwrap_or(0) as u8,
        early_follow: std::env::var("EARLY_FOLLOW").is_ok(),
        ..QuorumModel::default()
    };
    let t = std::time::Instant::now();
    let mut c = m.checker().threads(2);
    if a[3] > 0 {
        c = c.target_max_depth(a[3] as usize);
    }
    let c = c.spawn_bfs().join();
    println!(
        "{:?}: {} unique, {:.1?}",
        a,
        c.unique_state_count(),
        t.elapsed()
    );
    c.assert_properties();
}
