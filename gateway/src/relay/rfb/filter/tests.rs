//! Tests of the client filter, and the replay of its fuzz corpus.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crate::model::clipboard::ClipboardPolicy;
use crate::relay::rfb::fuzz::corpus_files;
use crate::relay::rfb::ENCODING_EXTENDED_CLIPBOARD;
use rand::{Rng, SeedableRng};

// ---- message builders -------------------------------------------------

fn pixel_format(bpp: u8, depth: u8, shifts: [u8; 3]) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, bpp, depth, 0, 1];
    m.extend_from_slice(&255u16.to_be_bytes());
    m.extend_from_slice(&255u16.to_be_bytes());
    m.extend_from_slice(&255u16.to_be_bytes());
    m.extend_from_slice(&shifts);
    m.extend_from_slice(&[0, 0, 0]);
    assert_eq!(m.len(), 20);
    m
}

fn set_encodings(encs: &[i32]) -> Vec<u8> {
    let mut m = vec![2, 0];
    m.extend_from_slice(&(encs.len() as u16).to_be_bytes());
    for e in encs {
        m.extend_from_slice(&e.to_be_bytes());
    }
    m
}

fn fbur(incremental: bool) -> Vec<u8> {
    vec![3, incremental as u8, 0, 0, 0, 0, 2, 128, 1, 224]
}

fn key(down: bool, keysym: u32) -> Vec<u8> {
    let mut m = vec![4, down as u8, 0, 0];
    m.extend_from_slice(&keysym.to_be_bytes());
    m
}

fn pointer(mask: u8, x: u16, y: u16) -> Vec<u8> {
    let mut m = vec![5, mask];
    m.extend_from_slice(&x.to_be_bytes());
    m.extend_from_slice(&y.to_be_bytes());
    m
}

fn cut_text(text: &[u8]) -> Vec<u8> {
    let mut m = vec![6, 0, 0, 0];
    m.extend_from_slice(&(text.len() as u32).to_be_bytes());
    m.extend_from_slice(text);
    m
}

fn ext_clipboard(flags: u32, data: &[u8]) -> Vec<u8> {
    let len = -((4 + data.len()) as i32);
    let mut m = vec![6, 0, 0, 0];
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(data);
    m
}

fn cut_text_header(raw_len: u32) -> Vec<u8> {
    let mut m = vec![6, 0, 0, 0];
    m.extend_from_slice(&raw_len.to_be_bytes());
    m
}

fn continuous_updates(enable: bool) -> Vec<u8> {
    vec![150, enable as u8, 0, 0, 0, 0, 2, 128, 1, 224]
}

fn fence(flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![248, 0, 0, 0];
    m.extend_from_slice(&flags.to_be_bytes());
    m.push(payload.len() as u8);
    m.extend_from_slice(payload);
    m
}

fn xvp(op: u8) -> Vec<u8> {
    vec![250, 0, 1, op]
}

fn desktop_size(w: u16, h: u16, screens: u8) -> Vec<u8> {
    let mut m = vec![251, 0];
    m.extend_from_slice(&w.to_be_bytes());
    m.extend_from_slice(&h.to_be_bytes());
    m.extend_from_slice(&[screens, 0]);
    for i in 0..screens {
        let mut s = [0u8; 16];
        s[3] = i;
        s[8..10].copy_from_slice(&w.to_be_bytes());
        s[10..12].copy_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&s);
    }
    m
}

fn gii(big_endian: bool, subtype: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u16;
    let mut m = vec![253, subtype | if big_endian { 0x80 } else { 0 }];
    if big_endian {
        m.extend_from_slice(&len.to_be_bytes());
    } else {
        m.extend_from_slice(&len.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

fn qemu_key(down: bool, keysym: u32, keycode: u32) -> Vec<u8> {
    let mut m = vec![255, 0];
    m.extend_from_slice(&(down as u16).to_be_bytes());
    m.extend_from_slice(&keysym.to_be_bytes());
    m.extend_from_slice(&keycode.to_be_bytes());
    m
}

fn qemu_audio(op: u16) -> Vec<u8> {
    let mut m = vec![255, 1];
    m.extend_from_slice(&op.to_be_bytes());
    m
}

fn qemu_audio_format(fmt: u8, channels: u8, freq: u32) -> Vec<u8> {
    let mut m = qemu_audio(2);
    m.extend_from_slice(&[fmt, channels]);
    m.extend_from_slice(&freq.to_be_bytes());
    m
}

/// ClientInit followed by the given messages.
fn stream<M: AsRef<[u8]>>(messages: &[M]) -> Vec<u8> {
    let mut s = vec![1];
    for m in messages {
        s.extend_from_slice(m.as_ref());
    }
    s
}

fn run(filter: &mut ClientFilter, input: &[u8]) -> Result<Vec<u8>, RfbError> {
    let mut out = Vec::new();
    filter.push(input, &mut out)?;
    Ok(out)
}

type Outcome = (Result<(), String>, Vec<u8>, u64);

fn one_shot(view_only: bool, input: &[u8]) -> Outcome {
    one_shot_with(view_only, 1 << 20, input)
}

fn one_shot_with(view_only: bool, max_cut_text: usize, input: &[u8]) -> Outcome {
    let mut f = ClientFilter::new(view_only, max_cut_text);
    let mut out = Vec::new();
    let r = f.push(input, &mut out).map_err(|e| format!("{e:?}"));
    (r, out, f.dropped())
}

fn chunked(view_only: bool, input: &[u8], sizes: &mut dyn FnMut() -> usize) -> Outcome {
    chunked_with(view_only, 1 << 20, input, sizes)
}

fn chunked_with(
    view_only: bool,
    max_cut_text: usize,
    input: &[u8],
    sizes: &mut dyn FnMut() -> usize,
) -> Outcome {
    let mut f = ClientFilter::new(view_only, max_cut_text);
    let mut out = Vec::new();
    let mut rest = input;
    let mut result = Ok(());
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = f.push(chunk, &mut out) {
            result = Err(format!("{e:?}"));
            break;
        }
        assert!(f.buffered() <= f.max_buffered());
    }
    (result, out, f.dropped())
}

fn every_message() -> Vec<Vec<u8>> {
    vec![
        pixel_format(32, 24, [16, 8, 0]),
        set_encodings(&[
            7,
            16,
            5,
            2,
            0,
            1,
            -223,
            -224,
            -239,
            -258,
            -308,
            -313,
            ENCODING_EXTENDED_CLIPBOARD,
        ]),
        fbur(false),
        key(true, 0xff0d),
        pointer(1, 100, 200),
        cut_text(b"hello clipboard"),
        ext_clipboard(0x0100_0001, &[0, 0, 1, 0]),
        continuous_updates(true),
        fence(0x8000_0003, b"fence-data"),
        xvp(2),
        desktop_size(1024, 768, 2),
        gii(false, 1, &[1, 0]),
        gii(true, 0, &[9; 24]),
        qemu_key(true, 0x61, 0x1e),
        qemu_audio(0),
        qemu_audio_format(3, 2, 44_100),
        qemu_audio(1),
        fbur(true),
        cut_text(b""),
        key(false, 0xff0d),
    ]
}

// ---- per-message behaviour ---------------------------------------------

#[test]
fn every_valid_message_passes_unchanged() {
    for m in every_message() {
        let mut f = ClientFilter::new(false, 1 << 20);
        let input = stream(std::slice::from_ref(&m));
        let out = run(&mut f, &input).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(out, input, "message {m:?}");
        assert_eq!(f.buffered(), 0, "message {m:?} left bytes buffered");
        assert_eq!(f.passed(), 1);
        assert_eq!(f.dropped(), 0);
    }
}

#[test]
fn whole_stream_passes_in_interactive_mode() {
    let input = stream(&every_message());
    let mut f = ClientFilter::new(false, 1 << 20);
    assert_eq!(run(&mut f, &input).unwrap(), input);
    assert_eq!(f.passed(), every_message().len() as u64);
}

#[test]
fn incomplete_message_is_held_back() {
    let m = key(true, 0x41);
    let mut f = ClientFilter::new(false, 1 << 20);
    let out = run(&mut f, &stream(&[m[..5].to_vec()])).unwrap();
    assert_eq!(out, vec![1], "only ClientInit may pass");
    assert_eq!(f.buffered(), 5);
    let out = run(&mut f, &m[5..]).unwrap();
    assert_eq!(out, m);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn view_only_drops_input_and_passes_display() {
    let display = [
        pixel_format(32, 24, [16, 8, 0]),
        set_encodings(&[0, 7]),
        fbur(true),
        continuous_updates(false),
        fence(1, b"x"),
        qemu_audio(0),
        qemu_audio_format(0, 1, 8000),
    ];
    let input_msgs = [
        key(true, 0x41),
        pointer(0, 1, 2),
        cut_text(b"secret"),
        ext_clipboard(0x0200_0001, &[]),
        qemu_key(true, 0x41, 0x1e),
        desktop_size(800, 600, 1),
        xvp(4),
        gii(false, 0, &[0; 8]),
    ];
    let mut all = Vec::new();
    for (i, m) in input_msgs.iter().enumerate() {
        all.push(m.clone());
        all.push(display[i % display.len()].clone());
    }
    let mut expected = vec![1];
    for i in 0..input_msgs.len() {
        expected.extend_from_slice(&display[i % display.len()]);
    }
    let mut f = ClientFilter::new(true, 1 << 20);
    let out = run(&mut f, &stream(&all)).unwrap();
    assert_eq!(out, expected);
    assert_eq!(f.dropped(), input_msgs.len() as u64);
    assert_eq!(f.passed(), input_msgs.len() as u64);
    assert!(f.view_only());
}

#[test]
fn view_only_forces_shared_flag() {
    let mut f = ClientFilter::with_limits(
        true,
        RfbLimits {
            force_shared: false,
            ..RfbLimits::default()
        },
    );
    assert_eq!(run(&mut f, &[0]).unwrap(), vec![1]);
}

#[test]
fn shared_flag_forced_by_default_and_kept_when_disabled() {
    let mut f = ClientFilter::new(false, 1 << 20);
    assert_eq!(run(&mut f, &[0]).unwrap(), vec![1]);
    let mut f = ClientFilter::with_limits(
        false,
        RfbLimits {
            force_shared: false,
            ..RfbLimits::default()
        },
    );
    assert_eq!(run(&mut f, &[0]).unwrap(), vec![0]);
}

#[test]
fn cut_text_0xffffffff_is_rejected_without_allocation() {
    let mut f = ClientFilter::new(false, 1 << 20);
    let err = run(&mut f, &stream(&[cut_text_header(0xFFFF_FFFF)])).unwrap_err();
    // As i32 this is -1: an extended clipboard message too short for flags.
    assert!(
        matches!(err, RfbError::ExtendedClipboardTooShort { len: 1 }),
        "{err:?}"
    );
    assert!(f.buf.capacity() <= 8, "capacity {}", f.buf.capacity());
}

#[test]
fn huge_cut_text_lengths_are_rejected() {
    for raw in [
        0x7FFF_FFFFu32,
        0x8000_0000,
        0x8000_0001,
        (1 << 20) + 1,
        (-(1i32 << 21)) as u32,
    ] {
        let mut f = ClientFilter::new(false, 1 << 20);
        let mut out = Vec::new();
        let err = f
            .push(&stream(&[cut_text_header(raw)]), &mut out)
            .unwrap_err();
        assert!(
            matches!(err, RfbError::CutTextTooLong { .. }),
            "{raw:#x}: {err:?}"
        );
        assert_eq!(out, vec![1], "no byte of the rejected message may pass");
        assert!(f.buf.capacity() <= 8);
    }
}

#[test]
fn cut_text_limit_is_configurable_and_inclusive() {
    let mut f = ClientFilter::new(false, 16);
    assert!(run(&mut f, &stream(&[cut_text(&[b'a'; 16])])).is_ok());
    let mut f = ClientFilter::new(false, 16);
    assert!(matches!(
        run(&mut f, &stream(&[cut_text(&[b'a'; 17])])),
        Err(RfbError::CutTextTooLong { len: 17, max: 16 })
    ));
    let mut f = ClientFilter::new(false, 16);
    assert!(matches!(
        run(&mut f, &stream(&[ext_clipboard(1, &[0; 13])])),
        Err(RfbError::CutTextTooLong { len: 17, max: 16 })
    ));
}

#[test]
fn cut_text_payload_is_streamed_not_buffered() {
    let text = vec![b'x'; 100_000];
    let m = cut_text(&text);
    let mut f = ClientFilter::new(false, 1 << 20);
    let mut out = Vec::new();
    for chunk in stream(&[&m]).chunks(1000) {
        f.push(chunk, &mut out).unwrap();
        assert!(f.buf.capacity() <= 8, "payload must not be buffered");
    }
    assert_eq!(&out[1..], &m[..]);
}

#[test]
fn extended_clipboard_can_be_disabled() {
    let limits = RfbLimits {
        allow_extended_clipboard: false,
        ..RfbLimits::default()
    };
    let mut f = ClientFilter::with_limits(false, limits.clone());
    let encs = set_encodings(&[
        7,
        ENCODING_EXTENDED_CLIPBOARD,
        0,
        ENCODING_EXTENDED_CLIPBOARD,
        -224,
    ]);
    let out = run(&mut f, &stream(&[encs, cut_text(b"plain is fine")])).unwrap();
    let mut expected = stream(&[set_encodings(&[7, 0, -224])]);
    expected.extend_from_slice(&cut_text(b"plain is fine"));
    assert_eq!(out, expected);
    let mut f = ClientFilter::with_limits(false, limits);
    assert!(matches!(
        run(&mut f, &stream(&[ext_clipboard(0x0100_0001, &[0; 4])])),
        Err(RfbError::ExtendedClipboardDisabled)
    ));
}

#[test]
fn extended_clipboard_needs_flags_word() {
    for len in [-1i32, -2, -3] {
        let mut f = ClientFilter::new(false, 1 << 20);
        let r = run(&mut f, &stream(&[cut_text_header(len as u32)]));
        assert!(
            matches!(r, Err(RfbError::ExtendedClipboardTooShort { .. })),
            "{len}"
        );
    }
}

#[test]
fn set_encodings_65535_is_rejected_without_allocation() {
    let mut f = ClientFilter::new(false, 1 << 20);
    let mut m = vec![2, 0, 0xFF, 0xFF];
    m.extend_from_slice(&[0; 64]);
    let err = run(&mut f, &stream(&[m])).unwrap_err();
    assert!(
        matches!(
            err,
            RfbError::TooManyEncodings {
                count: 65535,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert!(f.buf.capacity() <= 8);
}

#[test]
fn set_encodings_at_limit_is_accepted() {
    let encs: Vec<i32> = (0..1024).collect();
    let m = set_encodings(&encs);
    let mut f = ClientFilter::new(false, 1 << 20);
    assert_eq!(run(&mut f, &stream(&[&m])).unwrap()[1..], m[..]);
    let encs: Vec<i32> = (0..1025).collect();
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(matches!(
        run(&mut f, &stream(&[set_encodings(&encs)])),
        Err(RfbError::TooManyEncodings { count: 1025, .. })
    ));
}

#[test]
fn unknown_message_types_are_rejected() {
    for t in [1u8, 7, 8, 100, 149, 151, 200, 247, 249, 252, 254] {
        let mut f = ClientFilter::new(false, 1 << 20);
        let mut out = Vec::new();
        let err = f
            .push(&[1, t, 0, 0, 0, 0, 0, 0, 0, 0], &mut out)
            .unwrap_err();
        assert!(
            matches!(err, RfbError::UnknownMessageType(x) if x == t),
            "{t}: {err:?}"
        );
        assert_eq!(out, vec![1]);
    }
}

#[test]
fn filter_stays_failed_after_error() {
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(run(&mut f, &[1, 7]).is_err());
    assert!(matches!(
        run(&mut f, &fbur(true)),
        Err(RfbError::FilterFailed)
    ));
}

#[test]
fn bad_pixel_formats_are_rejected() {
    for (bpp, depth, shifts) in [
        (0u8, 0u8, [0u8, 0, 0]),
        (24, 24, [16, 8, 0]),
        (7, 7, [0, 0, 0]),
        (16, 24, [0, 5, 11]),
        (32, 24, [16, 8, 32]),
        (8, 8, [0, 3, 200]),
    ] {
        let mut f = ClientFilter::new(false, 1 << 20);
        let r = run(&mut f, &stream(&[pixel_format(bpp, depth, shifts)]));
        assert!(
            matches!(r, Err(RfbError::InvalidPixelFormat(_))),
            "{bpp}/{depth}/{shifts:?}"
        );
    }
    // Colour-map formats ignore the shifts; noVNC's 8-bit format passes.
    let mut m = pixel_format(8, 8, [200, 200, 200]);
    m[7] = 0;
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(run(&mut f, &stream(&[m, pixel_format(8, 8, [0, 2, 4])])).is_ok());
}

#[test]
fn fence_payload_limit() {
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(run(&mut f, &stream(&[fence(0, &[7; 64])])).is_ok());
    let mut m = fence(0, &[]);
    m[8] = 65;
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(matches!(
        run(&mut f, &stream(&[m])),
        Err(RfbError::FenceTooLong(65))
    ));
}

#[test]
fn desktop_size_with_255_screens() {
    let m = desktop_size(1920, 1080, 255);
    assert_eq!(m.len(), 8 + 255 * 16);
    let mut f = ClientFilter::new(false, 1 << 20);
    assert_eq!(run(&mut f, &stream(&[&m])).unwrap()[1..], m[..]);
}

#[test]
fn gii_endianness_and_subtypes() {
    // Little-endian length 0x0102 = 258 bytes.
    let m = gii(false, 0, &[5; 258]);
    assert_eq!(&m[2..4], &[0x02, 0x01]);
    let mut f = ClientFilter::new(false, 1 << 20);
    let input = stream(&[m, fbur(true)]);
    assert_eq!(run(&mut f, &input).unwrap(), input);
    assert_eq!(f.passed(), 2);
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(matches!(
        run(&mut f, &stream(&[gii(true, 4, &[])])),
        Err(RfbError::UnknownGiiSubtype(4))
    ));
}

#[test]
fn qemu_messages_are_validated() {
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![255, 2, 0, 0], "UnknownQemuSubtype(2)"),
        (qemu_audio(3), "UnknownQemuAudioOp(3)"),
        (qemu_audio_format(6, 2, 44_100), "InvalidAudioFormat"),
        (qemu_audio_format(3, 0, 44_100), "InvalidAudioFormat"),
        (qemu_audio_format(3, 3, 44_100), "InvalidAudioFormat"),
        (qemu_audio_format(3, 2, 0), "InvalidAudioFormat"),
        (qemu_audio_format(3, 2, 48_001), "InvalidAudioFormat"),
    ];
    for (m, want) in bad {
        let mut f = ClientFilter::new(false, 1 << 20);
        let err = run(&mut f, &stream(&[&m])).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{m:?}: {err:?}");
    }
    let mut f = ClientFilter::new(false, 1 << 20);
    assert!(run(&mut f, &stream(&[qemu_audio_format(5, 1, 48_000)])).is_ok());
}

#[test]
fn output_never_exceeds_input() {
    let input = stream(&every_message());
    for view_only in [false, true] {
        let (_, out, _) = one_shot(view_only, &input);
        assert!(out.len() <= input.len());
    }
}

// ---- streaming exactness -------------------------------------------------

fn long_stream() -> Vec<u8> {
    let mut msgs = Vec::new();
    for i in 0..5 {
        msgs.extend(every_message());
        msgs.push(cut_text(&vec![b'a' + i; 3000]));
        msgs.push(set_encodings(&(0..(100 * i as i32)).collect::<Vec<_>>()));
    }
    stream(&msgs)
}

#[test]
fn byte_by_byte_equals_one_shot() {
    let input = long_stream();
    for view_only in [false, true] {
        let expected = one_shot(view_only, &input);
        assert!(expected.0.is_ok());
        assert_eq!(chunked(view_only, &input, &mut || 1), expected);
    }
}

#[test]
fn random_chunks_equal_one_shot() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x005e_ed0f_f11e);
    let mut input = long_stream();
    // Also cover a stream that fails part-way: an unknown type at the end.
    let mut failing = input.clone();
    failing.extend_from_slice(&[7, 0, 0, 0]);
    for (view_only, data) in [
        (false, &input),
        (true, &input),
        (false, &failing),
        (true, &failing),
    ] {
        let expected = one_shot(view_only, data);
        for _ in 0..50 {
            let max = rng.gen_range(1..=64usize);
            let got = chunked(view_only, data, &mut || rng.gen_range(1..=max));
            assert_eq!(got, expected);
        }
    }
    assert!(one_shot(false, &failing).0.is_err());
    // And random byte soup must behave the same however it is split.
    for _ in 0..200 {
        let len = rng.gen_range(0..400);
        input = (0..len).map(|_| rng.gen()).collect();
        // Bias towards valid message types so parsing gets somewhere.
        for b in input.iter_mut().step_by(7) {
            *b = [0u8, 2, 3, 4, 5, 6, 150, 248, 250, 251, 253, 255][(*b % 12) as usize];
        }
        let view_only = rng.gen();
        let expected = one_shot(view_only, &input);
        let got = chunked(view_only, &input, &mut || rng.gen_range(1..=9));
        assert_eq!(got, expected);
    }
}

// ---- corpus replay -------------------------------------------------------

/// Mirrors `fuzz_targets/rfb_client_filter.rs`: byte 0 selects mode and a
/// chunk size, the rest is the client stream.
#[test]
fn replay_rfb_client_filter_corpus() {
    for (path, data) in corpus_files("rfb_client_filter") {
        let Some((&sel, input)) = data.split_first() else {
            continue;
        };
        let view_only = sel & 1 == 1;
        let chunk = usize::from(sel >> 1) + 1;
        // Same cut-text limit as the fuzz target.
        let expected = one_shot_with(view_only, 4096, input);
        let got = chunked_with(view_only, 4096, input, &mut || chunk);
        assert_eq!(got, expected, "{}", path.display());
        assert!(expected.1.len() <= input.len());
        assert!(
            !expected.0.as_ref().is_err_and(|e| e.contains("Internal")),
            "{}",
            path.display()
        );
    }
}

// ---- clipboard policy and server parsing ------------------------------

fn policy_run(view_only: bool, policy: ClipboardPolicy, input: &[u8]) -> (Vec<u8>, u64) {
    let mut whole = ClientFilter::new(view_only, 1 << 20).with_clipboard(policy);
    let out = run(&mut whole, input).expect("valid");
    // The same, byte by byte.
    let mut bytes = ClientFilter::new(view_only, 1 << 20).with_clipboard(policy);
    let mut out2 = Vec::new();
    for b in input {
        bytes
            .push(std::slice::from_ref(b), &mut out2)
            .expect("valid");
    }
    assert_eq!(out, out2);
    assert_eq!(whole.clipboard_dropped(), bytes.clipboard_dropped());
    (out, whole.clipboard_dropped())
}

#[test]
fn clipboard_policy_decides_each_cut_text_message() {
    use crate::model::clipboard::ClipboardPolicy::*;
    use crate::relay::rfb::clipboard::{EXT_CAPS, EXT_NOTIFY, EXT_PROVIDE, EXT_REQUEST};
    let classic = cut_text(b"visitor text");
    let caps = ext_clipboard(EXT_CAPS | 1, &[0, 0, 0, 0]);
    let notify = ext_clipboard(EXT_NOTIFY | 1, &[]);
    let provide = ext_clipboard(EXT_PROVIDE | 1, b"zlib data");
    let request = ext_clipboard(EXT_REQUEST | 1, &[]);
    let all = [
        classic.clone(),
        caps.clone(),
        notify.clone(),
        provide.clone(),
        request.clone(),
    ];
    let input = stream(&all);
    // (policy, view-only) -> what passes
    let cases: [(ClipboardPolicy, bool, Vec<Vec<u8>>); 7] = [
        (None, false, vec![caps.clone()]),
        (
            ToGuest,
            false,
            vec![
                classic.clone(),
                caps.clone(),
                notify.clone(),
                provide.clone(),
            ],
        ),
        (FromGuest, false, vec![caps.clone(), request.clone()]),
        (Both, false, all.to_vec()),
        // View-only links never write to the guest, whatever the policy.
        (Both, true, vec![caps.clone(), request.clone()]),
        (ToGuest, true, vec![caps.clone()]),
        (None, true, vec![caps.clone()]),
    ];
    for (policy, view_only, passes) in cases {
        let (out, dropped) = policy_run(view_only, policy, &input);
        assert_eq!(out, stream(&passes), "{policy:?} view_only={view_only}");
        assert_eq!(dropped as usize, all.len() - passes.len());
    }
}

#[test]
fn server_parsing_limits_encodings_and_freezes_the_pixel_format() {
    use crate::relay::rfb::PixelFormatShare;
    let share = PixelFormatShare::new();
    let mut f = ClientFilter::new(false, 1 << 20).with_server_parsing(share.clone());
    let pf = pixel_format(16, 16, [11, 5, 0]);
    let out = run(
        &mut f,
        &stream(&[
            pf.clone(),
            set_encodings(&[
                7,
                -260,
                16,
                5,
                0,
                -223,
                0x574D_5669,
                -312,
                ENCODING_EXTENDED_CLIPBOARD,
            ]),
        ]),
    )
    .unwrap();
    assert_eq!(
        out,
        stream(&[
            pf.clone(),
            set_encodings(&[16, 0, -223, ENCODING_EXTENDED_CLIPBOARD])
        ])
    );
    assert_eq!(share.bits_per_pixel(), Some(16));
    // Once SetEncodings went out, the pixel format may not change.
    assert!(matches!(run(&mut f, &pf), Err(RfbError::LatePixelFormat)));
    // Without server parsing, nothing changes (the old behaviour).
    let mut plain = ClientFilter::new(false, 1 << 20);
    let input = stream(&[set_encodings(&[7, 5]), fbur(false), pf.clone()]);
    assert_eq!(run(&mut plain, &input).unwrap(), input);
    // A FramebufferUpdateRequest freezes it too.
    let mut f = ClientFilter::new(false, 1 << 20).with_server_parsing(PixelFormatShare::new());
    assert!(run(&mut f, &stream(&[fbur(false), pf])).is_err());
}

#[test]
fn recorded_sessions_get_a_full_refresh_request_between_messages_when_due() {
    use std::time::Duration;
    // Due at once: nothing is added before the visitor set its encodings or asked for
    // an update, nor inside a message; then once per interval, after a whole message.
    let mut f = ClientFilter::new(true, 1 << 20).with_refresh(Duration::ZERO);
    let pf = pixel_format(32, 24, [16, 8, 0]);
    let first = stream(std::slice::from_ref(&pf));
    assert_eq!(run(&mut f, &first).unwrap(), first);
    let enc = set_encodings(&[16, 0]);
    assert_eq!(run(&mut f, &enc[..3]).unwrap(), b"");
    let mut want = enc[..3].to_vec();
    want.extend_from_slice(&enc[3..]);
    want.extend_from_slice(&FULL_REFRESH);
    assert_eq!(run(&mut f, &enc[3..]).unwrap(), want);
    // An input event dropped (view-only) still ends at a boundary.
    let key = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
    assert_eq!(run(&mut f, &key).unwrap(), FULL_REFRESH);
    // Not due: nothing added.
    let mut g = ClientFilter::new(false, 1 << 20).with_refresh(Duration::from_secs(3600));
    let input = stream(&[set_encodings(&[16]), fbur(true)]);
    assert_eq!(run(&mut g, &input).unwrap(), input);
    // The request is one the filter itself lets through.
    let mut check = ClientFilter::new(true, 1 << 20);
    assert_eq!(
        run(&mut check, &stream(&[FULL_REFRESH])).unwrap(),
        stream(&[FULL_REFRESH])
    );
}
