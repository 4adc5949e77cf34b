//! Fuzz `gateway::fuzzing::proxy_header`; its corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::proxy_header(data));
