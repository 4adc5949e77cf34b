//! Fuzz both RFB handshakes with an untrusted peer: `rfb::fuzz::handshake` in
//! `gateway/src/relay/rfb.rs` has the input layout and the checks; the corpus replays in
//! that file's tests (`replay_rfb_handshake_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../gateway/src/relay/rfb.rs"]
mod rfb;

fuzz_target!(|data: &[u8]| rfb::fuzz::handshake(data));
