//! Any bytes as a request frame: decoding must return a request or an error, never panic, abort
//! or allocate beyond what the frame's length bounds. Body: `broker_fuzz::request_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::request_frame(data));
