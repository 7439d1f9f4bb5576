//! Any bytes as a request frame: decoding must return a request or an error, never panic, abort
//! or allocate beyond what the frame's length bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = broker::protocol::decode_request(bytes::Bytes::copy_from_slice(data));
});
