//! Any bytes as a controller-to-controller frame body: decoding must return a frame or an error,
//! never panic; a decoded frame must re-encode to the same bytes and decode to the same frame.
//! Body: `broker_fuzz::quorum_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::quorum_frame(data));
