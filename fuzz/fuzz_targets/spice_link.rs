//! Fuzz the SPICE link header check: `gateway::fuzzing::spice_link` has the checks; its
//! corpus replays in `gateway/src/fuzzing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The gateway library's own module (it also holds the async view-only link, which needs
// the gateway's WebSocket dependencies, so it is no longer included by #[path]).
use gateway::relay::spice::{parse_link_header, LINK_HEADER_LEN, LINK_MESS_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let whole = parse_link_header(data);
    match &whole {
        Ok(Some(h)) => {
            assert!(h.total_len <= data.len());
            assert!(h.total_len <= LINK_HEADER_LEN + LINK_MESS_MAX_LEN as usize);
            assert_eq!(parse_link_header(&data[..h.total_len]), whole);
        }
        Ok(None) => {
            assert!(data.len() < LINK_HEADER_LEN + LINK_MESS_MAX_LEN as usize);
        }
        Err(_) => {}
    }
    // Check a few prefixes: they need more bytes, or fail exactly like the whole.
    for cut in [0, 3, 4, 7, 8, 15, 16, 20, 33, data.len() / 2] {
        if cut > data.len() {
            continue;
        }
        match parse_link_header(&data[..cut]) {
            Ok(None) => {}
            Ok(Some(h)) => assert_eq!(Ok(Some(h)), whole),
            Err(e) => assert_eq!(Err(e), whole),
        }
    }
});
