//! Fuzz the SPICE main channel's console→visitor filter (the clipboard policy's guest
//! side): `gateway::fuzzing::spice_server_filter` has the input layout and the checks;
//! its corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::spice_server_filter(data));
