//! Sweep raft seeds and print seeds/second (until the lead wires `sim raft` into the CLI):
//! `cargo run --release -p sim --example raft_probe -- COUNT [START] [PLANTED-BUG]`.
use sim::raft::*;
fn main() {
    sim::install_panic_hook();
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let start: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(b) = args.get(3) {
        assert!(broker::planted::plant(&[
            broker::planted::PlantedBug::from_name(b).unwrap()
        ]));
    }
    let mut cfg = RaftSimConfig::default();
    if let Ok(n) = std::env::var("NODES") {
        cfg.nodes = n.parse().unwrap();
    }
    let t = std::time::Instant::now();
    let (mut bad, mut live, mut ev) = (0, 0, 0);
    for s in start..start + n {
        let r = run_raft_seed(s, &cfg);
        ev += r.events;
        if !r.violations.is_empty() {
            bad += 1;
            if bad <= 5 {
                println!("seed {s}: {:?}", &r.violations[..r.violations.len().min(3)]);
            }
        }
        if !r.liveness.is_empty() {
            live += 1;
            if live <= 5 {
                println!("seed {s} liveness: {:?}", r.liveness);
            }
        }
        if s < start + 3 {
            println!(
                "seed {s}: events {} sim_ms {} elections {} committed {} snaps {} crashes {}",
                r.events, r.sim_ms, r.elections, r.committed, r.snapshots_installed, r.crashes
            );
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{n} seeds, {bad} unsafe, {live} not live, {:.1} seeds/s, {:.0} events/s",
        n as f64 / dt,
        ev as f64 / dt
    );
}
