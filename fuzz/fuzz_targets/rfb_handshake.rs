//! Fuzz both RFB handshakes with an untrusted peer: `gateway::fuzzing::rfb_handshake`
//! (`relay::rfb::fuzz::handshake`) has the input layout and the checks; its corpus replays
//! in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::rfb_handshake(data));
