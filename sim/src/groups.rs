//! Deterministic simulation of the group coordinator: one seed drives the group harness
//! ([`broker::group::harness::GroupHarness`]) with a seeded `ChaCha8Rng` and a per-seed fault mix
//! (persist failures, coordinator crashes, clock jumps, members that go silent until their
//! session expires). Every action's outcome goes into an FNV-1a trace ([`crate::trace`]), so a
//! seed replays byte for byte; the harness checks the user-visible guarantees after each action.

use std::panic::{catch_unwind, AssertUnwindSafe};

use broker::group::harness::{
    ActionWeights, GroupAction, GroupHarness, Violation, ADVANCE_MS_MAX, CLIENTS,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::Trace;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct GroupRunResult {
    /// Broken guarantees (and panics), as text; empty when the seed passed.
    pub violations: Vec<String>,
    /// FNV-1a over the trace lines (same seed ⇒ same hash).
    pub trace_hash: u64,
    /// The trace lines, only when asked for.
    pub trace: Vec<String>,
    /// Coordinator inputs: requests, ticks, persist settlements, restarts.
    pub events: u64,
    /// Virtual time the run covered.
    pub sim_ms: u64,
}

impl GroupRunResult {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The fault mix of one seed.
#[derive(Clone, Debug)]
struct Faults {
    weights: ActionWeights,
    /// Chance per step (in 1/1000) that a clock jump of up to `ADVANCE_MS_MAX` happens.
    clock_jump_permille: u32,
    /// Chance per step (in 1/1000) that a client goes silent.
    vanish_permille: u32,
}

impl Faults {
    fn draw(rng: &mut ChaCha8Rng) -> Faults {
        let weights = ActionWeights {
            persist_fail: rng.gen_range(0..=4),
            crash: rng.gen_range(0..=3),
            advance: rng.gen_range(4..=16),
            restart: rng.gen_range(0..=3),
            leave: rng.gen_range(0..=2),
            delete_group: rng.gen_range(0..=2),
            ..ActionWeights::default()
        };
        Faults {
            weights,
            clock_jump_permille: rng.gen_range(0..=20),
            vanish_permille: rng.gen_range(0..=30),
        }
    }
}

/// Runs one seed for `steps` actions (then drains: everything persists, time passes, every
/// request must be answered). `trace` keeps the trace lines in the result.
pub fn run_group_seed(seed: u64, steps: usize, trace: bool) -> GroupRunResult {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults = Faults::draw(&mut rng);
    let mut harness = GroupHarness::new(seed);
    harness.keep_log(true);
    let mut t = Trace::new(trace);
    t.line(
        0,
        format_args!("seed {seed} steps {steps} faults {faults:?}"),
    );
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        drive(&mut rng, &faults, &mut harness, &mut t, steps)
    }));
    let mut violations = Vec::new();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(v)) => violations.push(v.to_string()),
        Err(p) => violations.push(format!(
            "panic after step {}: {}",
            harness.steps(),
            crate::panic_message(&p)
        )),
    }
    for v in &violations {
        t.line(
            harness.elapsed_ms() * 1_000_000,
            format_args!("VIOLATION {v}"),
        );
    }
    let text = t.take_text().unwrap_or_default();
    GroupRunResult {
        violations,
        trace_hash: t.hash(),
        trace: text.lines().map(str::to_string).collect(),
        events: harness.events(),
        sim_ms: harness.elapsed_ms(),
    }
}

fn drive(
    rng: &mut ChaCha8Rng,
    faults: &Faults,
    h: &mut GroupHarness,
    t: &mut Trace,
    steps: usize,
) -> Result<(), Violation> {
    // Steps until each client may act again (0: it is live).
    let mut silent_until = [0usize; CLIENTS];
    for step in 0..steps {
        if rng.gen_range(0..1000) < faults.vanish_permille {
            // A consumer stalls (GC pause, network loss): long enough for its session to end.
            let c = rng.gen_range(0..CLIENTS);
            silent_until[c] = step + rng.gen_range(20..200);
        }
        let action = if rng.gen_range(0..1000) < faults.clock_jump_permille {
            GroupAction::Advance {
                ms: rng.gen_range(1..=ADVANCE_MS_MAX),
            }
        } else {
            let mut pick = |n: u32| rng.gen_range(0..n);
            GroupAction::choose_weighted(&mut pick, &faults.weights)
        };
        let action = match client_of(&action) {
            Some(c) if silent_until[c] > step => GroupAction::Advance { ms: 100 },
            _ => action,
        };
        let result = h.step(action);
        flush(h, t);
        result?;
    }
    let result = h.finish();
    flush(h, t);
    result
}

fn client_of(action: &GroupAction) -> Option<usize> {
    match *action {
        GroupAction::Act { client }
        | GroupAction::Join { client }
        | GroupAction::Restart { client }
        | GroupAction::Sync { client }
        | GroupAction::Heartbeat { client }
        | GroupAction::Leave { client }
        | GroupAction::Commit { client, .. } => Some(usize::from(client) % CLIENTS),
        _ => None,
    }
}

fn flush(h: &mut GroupHarness, t: &mut Trace) {
    let time_ns = h.elapsed_ms() * 1_000_000;
    for line in h.take_log() {
        t.line(time_ns, format_args!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Planting is process-wide: group tests hold this so none runs while a bug is planted.
    static PLANT_LOCK: Mutex<()> = Mutex::new(());

    const STEPS: usize = 400;

    #[test]
    fn two_hundred_seeds_run_clean() {
        let _guard = PLANT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = 0;
        for seed in 0..200 {
            let r = run_group_seed(seed, STEPS, false);
            assert!(r.passed(), "seed {seed}: {:?}", r.violations);
            events += r.events;
        }
        assert!(events > 200 * STEPS as u64 / 2, "the seeds did work");
    }

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let _guard = PLANT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for seed in [0, 7, 12345] {
            let a = run_group_seed(seed, STEPS, true);
            let b = run_group_seed(seed, STEPS, true);
            assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
            assert_eq!(a.trace, b.trace, "seed {seed}");
            assert!(a.trace.len() > STEPS);
            let c = run_group_seed(seed, STEPS, false);
            assert_eq!(
                c.trace_hash, a.trace_hash,
                "keeping the trace changes nothing"
            );
            assert!(c.trace.is_empty());
        }
        assert_ne!(
            run_group_seed(1, STEPS, false).trace_hash,
            run_group_seed(2, STEPS, false).trace_hash
        );
    }

    /// Release-mode speed: `cargo test -p sim --release groups_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn groups_speed() {
        let _guard = PLANT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let seeds = 2_000u64;
        let t0 = std::time::Instant::now();
        let mut events = 0;
        for seed in 0..seeds {
            let r = run_group_seed(seed, 1_000, false);
            assert!(r.passed(), "seed {seed}: {:?}", r.violations);
            events += r.events;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{seeds} seeds x 1000 steps in {secs:.2}s: {:.0} seeds/s, {:.0} events/s",
            seeds as f64 / secs,
            events as f64 / secs
        );
    }

    #[cfg(feature = "planted-bugs")]
    #[test]
    fn commit_before_persist_is_caught() {
        use broker::planted::{self, PlantedBug};
        let _guard = PLANT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        assert!(planted::plant(&[PlantedBug::CommitBeforePersist]));
        let caught = (0..200).find(|seed| !run_group_seed(*seed, STEPS, false).passed());
        planted::plant(&[]);
        let seed = caught.expect("commit-before-persist caught within 200 seeds");
        eprintln!("commit-before-persist caught at seed {seed}");
        let r = run_group_seed(seed, STEPS, false);
        assert!(r.passed(), "unplanted, seed {seed} passes");
    }
}
