//! Fuzz the RFB server→visitor parser: `gateway::fuzzing::rfb_server_filter` has the input
//! layout and the checks; its corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::rfb_server_filter(data));
