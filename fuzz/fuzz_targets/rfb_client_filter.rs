//! Fuzz the RFB client→server filter: `gateway::fuzzing::rfb_client_filter` has the input
//! layout and the checks; its corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::rfb_client_filter(data));
