//! Print one raft seed's trace: `cargo run --release -p sim --example raft_trace -- SEED [PLANTED-BUG]`.
use sim::raft::*;
fn main() {
    sim::install_panic_hook();
    let args: Vec<String> = std::env::args().collect();
    let s: u64 = args[1].parse().unwrap();
    if let Some(b) = args.get(2) {
        assert!(broker::planted::plant(&[
            broker::planted::PlantedBug::from_name(b).unwrap()
        ]));
    }
    let mut cfg = RaftSimConfig {
        trace: true,
        ..RaftSimConfig::default()
    };
    if let Ok(n) = std::env::var("NODES") {
        cfg.nodes = n.parse().unwrap();
    }
    if std::env::var("NOFAULTS").is_ok() {
        cfg.faults = RaftFaults::NONE;
    }
    let r = run_raft_seed(s, &cfg);
    for l in &r.trace {
        println!("{l}");
    }
    println!("{:?} {:?}", r.violations, r.liveness);
}
