//! cargo-fuzz entry point for the `storage_faults` target (body in `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz::storage_faults(data));
