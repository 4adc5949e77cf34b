//! Fuzz the view-only SPICE filter (`gateway::relay::spice::ClientFilter`).
//!
//! The first byte picks the channel and the negotiated capabilities, the rest is what a
//! visitor sends after its link message. Whatever the input: no panic, the output is
//! never longer than the input, and feeding it in two pieces (split where the second
//! byte says) gives the same output, errors and drop count as feeding it whole.
#![no_main]

use gateway::relay::spice::{ChannelType, ClientFilter};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]], channel: ChannelType, sel: bool, mini: bool) -> (Vec<u8>, bool, u64) {
    let mut f = ClientFilter::new(channel, sel, mini);
    let mut out = Vec::new();
    for c in chunks {
        if f.push(c, &mut out).is_err() {
            return (out, true, f.dropped());
        }
    }
    (out, false, f.dropped())
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
    let whole = run(&[input], channel, sel, mini);
    assert!(whole.0.len() <= input.len());
    let (a, b) = input.split_at((*cut as usize).min(input.len()));
    let split = run(&[a, b], channel, sel, mini);
    assert_eq!(whole.1, split.1);
    if !whole.1 {
        assert_eq!(whole, split);
    }
});
