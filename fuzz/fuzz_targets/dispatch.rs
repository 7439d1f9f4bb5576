//! Up to 8 length-prefixed request frames against a fresh in-memory broker: decode, then
//! `KafkaApis::handle`, and immediate responses must encode. Body: `broker_fuzz::dispatch`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_fuzz::dispatch(data));
