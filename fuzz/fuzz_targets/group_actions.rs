//! Bytes as a program of group actions (joins, syncs, commits, persist faults, crashes) against
//! the group coordinator under the group harness's checks. Body: `broker_fuzz::group_actions`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::group_actions(data));
