//! Fuzz the RFB client→server filter.
//!
//! Input layout: byte 0 selects the mode (bit 0: view-only) and a chunk size
//! (bits 1..8, plus one); the rest is the browser's byte stream after the
//! handshake (ClientInit first). The stream is filtered in one push and again
//! in chunks; both runs must agree exactly. The same check replays the corpus
//! in `gateway/src/relay/rfb.rs` (`replay_rfb_client_filter_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../gateway/src/relay/rfb.rs"]
mod rfb;

use rfb::{ClientFilter, RfbError, RfbLimits};

fn limits() -> RfbLimits {
    // A small cut-text limit so the fuzzer reaches the boundary.
    RfbLimits {
        max_cut_text: 4096,
        ..RfbLimits::default()
    }
}

fn run(view_only: bool, input: &[u8], chunk: usize) -> (Result<(), String>, Vec<u8>, u64, u64) {
    let mut f = ClientFilter::with_limits(view_only, limits());
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in input.chunks(chunk.max(1)) {
        if let Err(e) = f.push(piece, &mut out) {
            assert!(!matches!(e, RfbError::Internal), "internal error: {e:?}");
            result = Err(format!("{e:?}"));
            // A failed filter stays failed.
            assert!(matches!(
                f.push(b"\x03", &mut out),
                Err(RfbError::FilterFailed)
            ));
            break;
        }
        assert!(f.buffered() <= f.max_buffered());
    }
    assert!(out.len() <= input.len(), "output longer than input");
    (result, out, f.dropped(), f.passed())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let view_only = sel & 1 == 1;
    let chunk = usize::from(sel >> 1) + 1;
    let whole = run(view_only, input, input.len());
    let pieces = run(view_only, input, chunk);
    assert_eq!(whole, pieces, "output depends on how the input is split");
    if !view_only {
        assert_eq!(whole.2, 0, "interactive mode dropped a message");
    }
});
