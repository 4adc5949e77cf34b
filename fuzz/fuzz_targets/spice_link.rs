//! Fuzz the SPICE link header check: `gateway::fuzzing::spice_link` has the checks; its
//! corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::spice_link(data));
