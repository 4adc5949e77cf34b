#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crate::relay::rfb::clipboard::{EXT_CAPS, EXT_NOTIFY, EXT_PROVIDE, EXT_REQUEST};
use crate::relay::rfb::ENCODING_EXTENDED_CLIPBOARD;
use ClipboardPolicy::*;

fn server_init(bpp: u8, name: &[u8]) -> Vec<u8> {
    let mut m = vec![
        0x04, 0x00, 0x03, 0x00, bpp, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0,
    ];
    m.extend_from_slice(&[0, 0, 0]);
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name);
    m
}

fn fbu(rects: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![0, 0];
    m.extend_from_slice(&(rects.len() as u16).to_be_bytes());
    for r in rects {
        m.extend_from_slice(r);
    }
    m
}

fn rect(w: u16, h: u16, enc: i32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2];
    m.extend_from_slice(&w.to_be_bytes());
    m.extend_from_slice(&h.to_be_bytes());
    m.extend_from_slice(&enc.to_be_bytes());
    m.extend_from_slice(data);
    m
}

fn length_prefixed(data: &[u8]) -> Vec<u8> {
    let mut m = (data.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(data);
    m
}

fn cut_text(text: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 0, 0, 0];
    m.extend_from_slice(&(text.len() as u32).to_be_bytes());
    m.extend_from_slice(text);
    m
}

fn ext_clip(flags: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 0, 0, 0];
    m.extend_from_slice(&(-(4 + data.len() as i32)).to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// A session's worth of server traffic without clipboard messages.
fn display_traffic(bpp: u8) -> Vec<Vec<u8>> {
    let px = usize::from(bpp / 8);
    vec![
        server_init(bpp, b"vm-01"),
        fbu(&[rect(1024, 768, enc::DESKTOP_SIZE, &[])]),
        fbu(&[
            rect(3, 2, enc::RAW, &vec![0xAB; 3 * 2 * px]),
            rect(5, 5, enc::COPY_RECT, &[0, 1, 0, 1]),
            rect(64, 64, enc::ZRLE, &length_prefixed(&[3u8; 300])),
            rect(8, 8, enc::ZLIB, &length_prefixed(&[])),
            rect(16, 16, enc::ZYWRLE, &length_prefixed(&[9; 17])),
        ]),
        fbu(&[]),
        vec![2],
        vec![1, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        fbu(&[
            rect(9, 3, enc::CURSOR, &vec![1; 9 * 3 * px + 2 * 3]),
            rect(0, 0, enc::POINTER_TYPE_CHANGE, &[]),
            rect(0, 0, enc::QEMU_EXT_KEY_EVENT, &[]),
            rect(0, 0, enc::QEMU_AUDIO, &[]),
            rect(0, 0, enc::QEMU_LED_STATE, &[4]),
        ]),
        fbu(&[rect(
            800,
            600,
            enc::EXTENDED_DESKTOP_SIZE,
            &[
                2, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                2, 2, 2, 2, 2, 2, 2, 2,
            ],
        )]),
        vec![255, 1, 0, 1],
        {
            let mut m = vec![255, 1, 0, 2, 0, 0, 0, 3];
            m.extend_from_slice(&[7, 7, 7]);
            m
        },
        vec![255, 1, 0, 0],
        // LastRect ends an update early.
        {
            let mut m = vec![0, 0, 0xff, 0xff];
            m.extend_from_slice(&rect(1, 1, enc::RAW, &vec![5; px]));
            m.extend_from_slice(&rect(0, 0, enc::LAST_RECT, &[]));
            m
        },
    ]
}

fn run(
    policy: ClipboardPolicy,
    share: &PixelFormatShare,
    input: &[u8],
    chunk: usize,
) -> (Result<(), String>, Vec<u8>, u64) {
    let mut f = ServerFilter::new(policy, share.clone());
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        if let Err(e) = f.push(piece, &mut out) {
            return (Err(e.to_string()), out, f.clipboard_dropped());
        }
        assert!(f.buffered() <= ServerFilter::max_buffered());
    }
    (Ok(()), out, f.clipboard_dropped())
}

fn cat(msgs: &[Vec<u8>]) -> Vec<u8> {
    msgs.concat()
}

#[test]
fn every_display_message_passes_unchanged_in_any_split() {
    for bpp in [8u8, 16, 32] {
        let input = cat(&display_traffic(bpp));
        for chunk in [1, 2, 3, 7, 13, 64, input.len()] {
            let (r, out, dropped) = run(None, &PixelFormatShare::new(), &input, chunk);
            assert_eq!(r, Ok(()), "bpp {bpp} chunk {chunk}");
            assert_eq!(out, input);
            assert_eq!(dropped, 0);
        }
    }
}

#[test]
fn the_visitors_pixel_format_counts_raw_pixels() {
    // The server announces 32 bits per pixel, the visitor chose 16.
    let share = PixelFormatShare::new();
    share.set_bits_per_pixel(16);
    let mut input = server_init(32, b"x");
    input.extend(fbu(&[rect(4, 4, enc::RAW, &[0; 4 * 4 * 2])]));
    input.extend(cut_text(b"secret"));
    let (r, out, dropped) = run(None, &share, &input, 5);
    assert_eq!(r, Ok(()));
    assert_eq!(dropped, 1);
    assert_eq!(out.len(), input.len() - cut_text(b"secret").len());
}

#[test]
fn clipboard_from_the_guest_leaves_only_when_allowed() {
    let guest_text = b"the guest's secret".to_vec();
    let clip_msgs = [
        cut_text(&guest_text),
        ext_clip(EXT_NOTIFY | 1, &[]),
        ext_clip(EXT_PROVIDE | 1, &guest_text),
    ];
    let mut msgs = display_traffic(32);
    let mut with_clip = Vec::new();
    for (i, m) in msgs.drain(..).enumerate() {
        with_clip.push(m);
        if i > 0 {
            with_clip.extend(clip_msgs.iter().cloned());
        }
    }
    let input = cat(&with_clip);
    let display = cat(&display_traffic(32));
    for policy in [None, ToGuest] {
        for chunk in [1, 5, 11, input.len()] {
            let (r, out, dropped) = run(policy, &PixelFormatShare::new(), &input, chunk);
            assert_eq!(r, Ok(()));
            assert_eq!(out, display, "{policy:?}: only the display messages remain");
            assert_eq!(dropped, 3 * 11);
            assert!(!out.windows(guest_text.len()).any(|w| w == guest_text));
        }
    }
    for policy in [FromGuest, Both] {
        let (r, out, dropped) = run(policy, &PixelFormatShare::new(), &input, 7);
        assert_eq!(r, Ok(()));
        assert_eq!(out, input);
        assert_eq!(dropped, 0);
    }
}

#[test]
fn servers_clipboard_requests_need_to_guest_and_caps_always_pass() {
    let mut input = server_init(32, b"");
    let caps = ext_clip(EXT_CAPS | 1, &[0, 0, 0, 0]);
    let request = ext_clip(EXT_REQUEST | 1, &[]);
    input.extend(&caps);
    input.extend(&request);
    let base = server_init(32, b"");
    let (_, out, d) = run(None, &PixelFormatShare::new(), &input, 3);
    assert_eq!((out, d), ([base.clone(), caps.clone()].concat(), 1));
    let (_, out, d) = run(FromGuest, &PixelFormatShare::new(), &input, 3);
    assert_eq!((out, d), ([base.clone(), caps.clone()].concat(), 1));
    let (_, out, d) = run(ToGuest, &PixelFormatShare::new(), &input, 3);
    assert_eq!((out, d), (input.clone(), 0));
}

#[test]
fn huge_payloads_are_counted_not_held() {
    // A 65535x65535 raw rectangle and a 2 GiB cut text, announced but only partly sent.
    let mut input = server_init(32, b"");
    input.extend(fbu(&[rect(65535, 65535, enc::RAW, &[0; 1000])]));
    let mut f = ServerFilter::new(None, PixelFormatShare::new());
    let mut out = Vec::new();
    f.push(&input, &mut out).unwrap();
    assert_eq!(out, input);
    assert_eq!(f.buffered(), 0);
    let mut f = ServerFilter::new(None, PixelFormatShare::new());
    let mut input = server_init(32, b"");
    input.extend([3, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    input.extend(vec![b'x'; 100_000]);
    let mut out = Vec::new();
    f.push(&input, &mut out).unwrap();
    assert_eq!(out, server_init(32, b""));
    assert_eq!(f.clipboard_dropped(), 1);
}

#[test]
fn unknown_things_end_the_session_and_stay_failed() {
    let bad = [
        [server_init(32, b""), vec![7]].concat(),
        [server_init(32, b""), fbu(&[rect(1, 1, 7, &[])])].concat(),
        [server_init(32, b""), fbu(&[rect(1, 1, 5, &[])])].concat(),
        [server_init(32, b""), vec![255, 2]].concat(),
        [server_init(32, b""), vec![255, 1, 0, 9]].concat(),
        [
            server_init(32, b""),
            vec![3, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe],
        ]
        .concat(),
        server_init(24, b""),
    ];
    for input in bad {
        let mut f = ServerFilter::new(Both, PixelFormatShare::new());
        let mut out = Vec::new();
        assert!(f.push(&input, &mut out).is_err());
        assert!(matches!(
            f.push(&[2], &mut out),
            Err(RfbError::FilterFailed)
        ));
    }
}

#[test]
fn negotiable_encodings() {
    for e in [
        0,
        1,
        6,
        16,
        17,
        -223,
        -239,
        -257,
        -258,
        -259,
        -261,
        -308,
        -32,
        -23,
        -256,
        -247,
        ENCODING_EXTENDED_CLIPBOARD,
    ] {
        assert!(parses_encoding(e), "{e}");
    }
    // Tight, Hextile, RRE, TightPNG, WMVi (would change the pixel format under us),
    // alpha cursor, fences, continuous updates, JPEG.
    for e in [7, 5, 2, -260, 0x574D_5669, -314, -312, -313, 21] {
        assert!(!parses_encoding(e), "{e}");
    }
}
