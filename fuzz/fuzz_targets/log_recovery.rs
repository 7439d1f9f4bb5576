//! Any bytes as a crashed partition directory (segment, optional indexes, checkpoint and
//! clean-shutdown marker): `Log::open` recovers or errors, and what it keeps is readable.
//! Body and input layout: `broker_fuzz::log_recovery`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::log_recovery(data));
