//! Any bytes as a produce buffer through `validate_for_append` and `decode_records`.
//! Body: `broker_fuzz::record_batch`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::record_batch(data));
