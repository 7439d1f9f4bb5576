//! The planted bug `commit-before-persist` is caught by the group harness: by the durability
//! check the moment the early acknowledgement arrives, by the crash audit when that check is off,
//! and by random action sequences. Planting is process-wide, so this file holds one test.

#![cfg(feature = "planted-bugs")]

use broker::group::harness::{CommitAs, GroupAction, GroupHarness};
use broker::planted::{self, PlantedBug};

fn standalone_commit() -> GroupAction {
    GroupAction::Commit {
        client: 0,
        commit_as: CommitAs::Standalone,
    }
}

#[test]
fn commit_before_persist_is_caught() {
    assert!(planted::plant(&[PlantedBug::CommitBeforePersist]));

    // The acknowledgement arrives before the record is durable.
    let mut h = GroupHarness::new(1);
    let v = h.step(standalone_commit()).expect_err("caught at once");
    assert_eq!(v.invariant, "durability", "{v}");

    // Without that check, the crash loses an acknowledged commit and the audit sees it.
    let mut h = GroupHarness::new(1);
    h.check_response_durability = false;
    h.step(standalone_commit()).expect("acknowledged early");
    let v = h
        .step(GroupAction::Crash)
        .expect_err("the lost commit is found");
    assert_eq!(v.invariant, "offsets", "{v}");

    // Random programs find it too.
    let mut found = 0;
    for seed in 0..50u64 {
        let mut h = GroupHarness::new(seed);
        h.check_response_durability = false;
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut pick = |n: u32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(n)) as u32
        };
        let mut result = Ok(());
        for _ in 0..2_000 {
            result = h.step(GroupAction::choose(&mut pick));
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            found += 1;
        }
    }
    planted::plant(&[]);
    assert!(found > 0, "no random program found the planted bug");
}
