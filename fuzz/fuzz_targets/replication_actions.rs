//! Bytes as a program of replication actions (appends, fetch rounds, fsyncs, metadata
//! deliveries, crashes, partitions, controller failovers) on the simulator's replication
//! stepper under its checks. Body: `broker_fuzz::replication_actions`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::replication_actions(data));
