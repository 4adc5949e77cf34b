//! Fuzz the SPICE visitor→console filter (view-only filtering and the clipboard
//! policy's visitor side): `gateway::fuzzing::spice_client_filter` has the input layout
//! and the checks; its corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::spice_client_filter(data));
