//! Fuzz the SPICE visitor→console filter (`gateway::relay::spice::ClientFilter`).
//!
//! The first byte picks the channel and the negotiated capabilities (bits 0-3), the
//! clipboard policy (bits 4-5: none, to_guest, from_guest, both) and whether the link is
//! interactive (bit 6; else view-only), the rest is what a visitor sends after its link
//! message. Whatever the input: no panic, the output stays within 5× the input (a
//! refused agent chunk becomes a 20-byte filler), and feeding it in two pieces (split
//! where the second byte says) gives the same output, errors and drop counts as feeding
//! it whole.
#![no_main]

use gateway::model::clipboard::ClipboardPolicy;
use gateway::relay::spice::{ChannelType, ClientFilter};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<u8>, bool, u64, u64);

fn run(chunks: &[&[u8]], make: &dyn Fn() -> ClientFilter) -> Outcome {
    let mut f = make();
    let mut out = Vec::new();
    for c in chunks {
        if f.push(c, &mut out).is_err() {
            return (out, true, f.dropped(), f.clipboard_dropped());
        }
    }
    (out, false, f.dropped(), f.clipboard_dropped())
}

fuzz_target!(|data: &[u8]| {
    let [mode, cut, input @ ..] = data else {
        return;
    };
    let channel = match mode & 3 {
        0 => ChannelType::Main,
        1 => ChannelType::Display,
        2 => ChannelType::Cursor,
        _ => ChannelType::Playback,
    };
    let (sel, mini) = (mode & 4 != 0, mode & 8 != 0);
    let view_only = mode & 0x40 == 0;
    let policy = match (mode >> 4) & 3 {
        0 => ClipboardPolicy::None,
        1 => ClipboardPolicy::ToGuest,
        2 => ClipboardPolicy::FromGuest,
        _ => ClipboardPolicy::Both,
    }
    .effective(view_only);
    let make = || ClientFilter::with_policy(channel, sel, mini, view_only, policy, 3000);
    let whole = run(&[input], &make);
    assert!(whole.0.len() <= input.len() * 5);
    let (a, b) = input.split_at((*cut as usize).min(input.len()));
    let split = run(&[a, b], &make);
    assert_eq!(whole.1, split.1);
    if !whole.1 {
        assert_eq!(whole, split);
    }
});
