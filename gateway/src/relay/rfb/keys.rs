//! Key points of VNC recordings: the recording's writer task (never the relay) follows
//! the recorded server stream with the [`ServerFilter`]'s parser and marks each
//! FramebufferUpdate that repaints the whole screen (the answer to the gateway's own
//! full refresh requests, see [`super::ClientFilter::with_refresh`]) as a key point:
//! where it starts, the ServerInit a fresh decoder needs, and the state of the zlib
//! streams (QEMU's ZRLE and Zlib encodings keep one stream each for the whole
//! connection, flushed with `Z_SYNC_FLUSH` after every rectangle, so a raw inflater
//! given the last 32 KiB the stream inflated as its dictionary continues it from a
//! rectangle boundary). See `docs/recordings.md`.

use flate2::{Decompress, FlushDecompress, Status};

use super::server::{enc, HeaderKind, Observer, ServerFilter};
use super::{u16_at, u32_at, PixelFormatShare};
use crate::engine::recordings::format::{KeyPoint, MAX_DICTIONARY};
use crate::engine::recordings::Indexer;
use crate::model::clipboard::ClipboardPolicy;

/// A zlib stream of the server (ZRLE's or Zlib's), inflated to know its window.
struct Stream {
    encoding: i32,
    inflater: Decompress,
    /// The last bytes inflated (at least the window's worth once there are that many).
    history: Vec<u8>,
    started: bool,
}

impl Stream {
    fn new(encoding: i32) -> Stream {
        Stream {
            encoding,
            inflater: Decompress::new(true),
            history: Vec::new(),
            started: false,
        }
    }

    /// Inflates `data` (compressed bytes of a rectangle); `false` if it cannot be
    /// followed (then no more key points are made).
    fn feed(&mut self, mut data: &[u8], scratch: &mut [u8]) -> bool {
        self.started = true;
        while !data.is_empty() {
            let (in0, out0) = (self.inflater.total_in(), self.inflater.total_out());
            let status = self
                .inflater
                .decompress(data, scratch, FlushDecompress::None);
            let used = usize::try_from(self.inflater.total_in() - in0).unwrap_or(usize::MAX);
            let made = usize::try_from(self.inflater.total_out() - out0).unwrap_or(usize::MAX);
            self.history
                .extend_from_slice(scratch.get(..made).unwrap_or_default());
            if self.history.len() > 2 * MAX_DICTIONARY {
                let cut = self.history.len() - MAX_DICTIONARY;
                self.history.drain(..cut);
            }
            data = data.get(used..).unwrap_or_default();
            match status {
                // QEMU never ends its streams; a stuck or broken one cannot be followed.
                Err(_) | Ok(Status::StreamEnd) => return false,
                Ok(_) if used == 0 && made == 0 => return false,
                Ok(_) => {}
            }
        }
        true
    }

    fn dictionary(&self) -> Vec<u8> {
        self.history
            .get(self.history.len().saturating_sub(MAX_DICTIONARY)..)
            .unwrap_or_default()
            .to_vec()
    }
}

/// A FramebufferUpdate that may become a key point.
struct Candidate {
    at: u64,
    t_us: u64,
    prefix: Vec<u8>,
    dictionaries: Vec<(i32, Vec<u8>)>,
    /// Screen area its rectangles repaint (they do not overlap in QEMU's updates).
    area: u64,
    width: u16,
    height: u16,
}

/// What the parser reports, and what it makes of it.
struct Track {
    /// The handshake the visitor read, recorded before the relayed stream.
    preamble: Vec<u8>,
    /// ServerInit as received (fixed part and name).
    init: Vec<u8>,
    in_init_name: bool,
    width: u16,
    height: u16,
    /// Where the payload of the current rectangle goes (a zlib stream's index).
    payload_to: Option<usize>,
    streams: [Stream; 2],
    scratch: Vec<u8>,
    candidate: Option<Candidate>,
    found: Option<(u64, KeyPoint)>,
    /// Offset of the stream's start within the recording's stream (the preamble).
    base: u64,
    t_us: u64,
    last_key: Option<u64>,
    /// Least time between two key points (half the refresh interval).
    gap_us: u64,
    failed: bool,
}

impl Track {
    fn due(&self) -> bool {
        match self.last_key {
            None => true,
            Some(t) => self.t_us.saturating_sub(t) >= self.gap_us,
        }
    }

    /// The handshake and a ServerInit with the screen size in effect now.
    fn prefix(&self) -> Vec<u8> {
        let mut init = self.init.clone();
        if init.len() >= 4 {
            let size = self.width.to_be_bytes().into_iter();
            init.splice(0..4, size.chain(self.height.to_be_bytes()));
        }
        let mut p = self.preamble.clone();
        p.extend_from_slice(&init);
        p
    }
}

impl Observer for Track {
    fn header(&mut self, at: u64, kind: HeaderKind, bytes: &[u8]) {
        self.payload_to = None;
        self.in_init_name = false;
        match kind {
            HeaderKind::ServerInit => {
                self.init = bytes.to_vec();
                self.width = u16_at(bytes, 0).unwrap_or(0);
                self.height = u16_at(bytes, 2).unwrap_or(0);
                self.in_init_name = true;
            }
            HeaderKind::Message => {
                if bytes.first() == Some(&0) && self.due() && !self.failed {
                    self.candidate = Some(Candidate {
                        at: self.base + at,
                        t_us: self.t_us,
                        prefix: self.prefix(),
                        dictionaries: self
                            .streams
                            .iter()
                            .filter(|s| s.started)
                            .map(|s| (s.encoding, s.dictionary()))
                            .collect(),
                        area: 0,
                        width: self.width,
                        height: self.height,
                    });
                }
            }
            HeaderKind::Rect => {
                let at16 = |i| u64::from(u16_at(bytes, i).unwrap_or(0));
                let (x, y, w, h) = (at16(0), at16(2), at16(4), at16(6));
                let e = i32::from_be_bytes(u32_at(bytes, 8).unwrap_or(0).to_be_bytes());
                match e {
                    enc::ZRLE | enc::ZYWRLE => self.payload_to = Some(0),
                    enc::ZLIB => self.payload_to = Some(1),
                    _ => {}
                }
                if matches!(e, enc::DESKTOP_SIZE | enc::EXTENDED_DESKTOP_SIZE) {
                    self.width = u16::try_from(w).unwrap_or(0);
                    self.height = u16::try_from(h).unwrap_or(0);
                    if let Some(c) = &mut self.candidate {
                        // Counted again at the new size.
                        c.area = 0;
                        c.width = self.width;
                        c.height = self.height;
                    }
                }
                if let Some(c) = &mut self.candidate {
                    if matches!(e, enc::RAW | enc::ZLIB | enc::ZRLE | enc::ZYWRLE) {
                        let cw = u64::from(c.width).saturating_sub(x).min(w);
                        let ch = u64::from(c.height).saturating_sub(y).min(h);
                        c.area += cw * ch;
                    }
                }
            }
        }
    }

    fn payload(&mut self, bytes: &[u8]) {
        if self.in_init_name {
            self.init.extend_from_slice(bytes);
            return;
        }
        let Some(i) = self.payload_to else {
            return;
        };
        if self.failed {
            return;
        }
        let Track {
            streams, scratch, ..
        } = self;
        if let Some(s) = streams.get_mut(i) {
            if !s.feed(bytes, scratch) {
                self.failed = true;
                self.candidate = None;
            }
        }
    }

    fn message_end(&mut self) {
        self.payload_to = None;
        self.in_init_name = false;
        let Some(c) = self.candidate.take() else {
            return;
        };
        let screen = u64::from(c.width) * u64::from(c.height);
        if screen > 0 && c.area >= screen && !self.failed {
            self.last_key = Some(c.t_us);
            self.found = Some((
                c.t_us,
                KeyPoint {
                    offset: c.at,
                    prefix: c.prefix,
                    dictionaries: c.dictionaries,
                },
            ));
        }
    }
}

/// The key point indexer of a recorded VNC session.
pub struct KeyIndexer {
    parser: ServerFilter,
    track: Track,
    out: Vec<u8>,
}

impl std::fmt::Debug for KeyIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndexer")
            .field("last_key_us", &self.track.last_key)
            .field("failed", &self.track.failed)
            .finish_non_exhaustive()
    }
}

impl KeyIndexer {
    /// An indexer for a session whose visitor's pixel format is shared through `share`
    /// (its client filter parses for the server stream), whose recording starts with
    /// `preamble`, with a refresh every `every`.
    pub fn new(share: PixelFormatShare, preamble: &[u8], every: std::time::Duration) -> Self {
        KeyIndexer {
            parser: ServerFilter::new(ClipboardPolicy::Both, share),
            track: Track {
                preamble: preamble.to_vec(),
                init: Vec::new(),
                in_init_name: false,
                width: 0,
                height: 0,
                payload_to: None,
                streams: [Stream::new(enc::ZRLE), Stream::new(enc::ZLIB)],
                scratch: vec![0; 64 * 1024],
                candidate: None,
                found: None,
                base: u64::try_from(preamble.len()).unwrap_or(0),
                t_us: 0,
                last_key: None,
                gap_us: u64::try_from(every.as_micros() / 2).unwrap_or(u64::MAX),
                failed: false,
            },
            out: Vec::new(),
        }
    }
}

impl Indexer for KeyIndexer {
    fn to_client(&mut self, _offset: u64, t_us: u64, data: &[u8]) -> Option<(u64, KeyPoint)> {
        if self.track.failed {
            return None;
        }
        self.track.t_us = t_us;
        self.out.clear();
        if self
            .parser
            .push_observed(data, &mut self.out, &mut self.track)
            .is_err()
        {
            self.track.failed = true;
            self.track.candidate = None;
        }
        self.track.found.take()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use std::time::Duration;

    fn server_init(w: u16, h: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        m.extend_from_slice(&2u32.to_be_bytes());
        m.extend_from_slice(b"vm");
        m
    }

    /// A FramebufferUpdate of ZRLE rectangles (x, y, w, h, compressed data).
    fn update(rects: &[(u16, u16, u16, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![0, 0];
        m.extend_from_slice(&(rects.len() as u16).to_be_bytes());
        for (x, y, w, h, data) in rects {
            for v in [x, y, w, h] {
                m.extend_from_slice(&v.to_be_bytes());
            }
            m.extend_from_slice(&enc::ZRLE.to_be_bytes());
            m.extend_from_slice(&(data.len() as u32).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    /// One rectangle's data as QEMU makes it: the connection's stream, sync-flushed.
    fn compress(z: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1024);
        let start = z.total_in();
        z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!((z.total_in() - start) as usize, data.len());
        out
    }

    /// Inflates `data` with a raw inflater primed with `dict` (as a stored block, which
    /// fills the window as a dictionary does): what a player continuing the stream at a
    /// key point gets.
    fn inflate_from(dict: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let mut raw = Vec::new();
        if !dict.is_empty() {
            let n = dict.len() as u16;
            raw.push(0);
            raw.extend_from_slice(&n.to_le_bytes());
            raw.extend_from_slice(&(!n).to_le_bytes());
            raw.extend_from_slice(dict);
        }
        raw.extend_from_slice(data);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&raw, &mut out, FlushDecompress::Sync)
            .ok()?;
        Some(out.split_off(dict.len()))
    }

    fn pattern(seed: u32, n: usize) -> Vec<u8> {
        // Compressible but not trivial: words drawn from a small set.
        let words: [&[u8]; 5] = [b"alpha ", b"beta ", b"gamma ", b"delta ", b"epsilon "];
        let mut x = seed;
        let mut v = Vec::new();
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(words[(x >> 16) as usize % 5]);
        }
        v.truncate(n);
        v
    }

    #[test]
    fn full_updates_become_key_points_that_continue_the_zlib_stream() {
        let pre = crate::engine::recordings::VNC_PREAMBLE;
        let mut ix = KeyIndexer::new(PixelFormatShare::new(), pre, Duration::from_secs(2));
        let mut z = Compress::new(Compression::default(), true);
        let (a, b, c) = (pattern(1, 50_000), pattern(2, 3000), pattern(1, 40_000));
        let init = server_init(64, 64);
        let fbu1 = update(&[(0, 0, 64, 64, compress(&mut z, &a))]);
        let fbu2 = update(&[(0, 0, 8, 8, compress(&mut z, &b))]);
        let c_data = compress(&mut z, &c);
        let fbu3 = update(&[
            (0, 0, 64, 32, c_data.clone()),
            (0, 32, 64, 32, compress(&mut z, b"x")),
        ]);
        let base = pre.len() as u64;
        let mut at = base;
        fn feed_at(
            ix: &mut KeyIndexer,
            at: &mut u64,
            t: u64,
            bytes: &[u8],
        ) -> Option<(u64, KeyPoint)> {
            // In small pieces: the parse does not depend on how the stream is cut.
            let mut found = None;
            for piece in bytes.chunks(777) {
                if let Some(k) = ix.to_client(*at, t, piece) {
                    assert!(found.is_none());
                    found = Some(k);
                }
                *at += piece.len() as u64;
            }
            found
        }
        macro_rules! feed {
            ($ix:expr, $t:expr, $b:expr) => {
                feed_at($ix, &mut at, $t, $b)
            };
        }
        assert_eq!(feed!(&mut ix, 0, &init), None);
        // The first full update: a key point before any zlib data (no dictionary).
        let (t, k1) = feed!(&mut ix, 5, &fbu1).expect("a key point");
        assert_eq!(t, 5);
        assert_eq!(k1.offset, base + init.len() as u64);
        assert!(k1.dictionaries.is_empty());
        let mut want_prefix = pre.to_vec();
        want_prefix.extend_from_slice(&init);
        assert_eq!(k1.prefix, want_prefix);
        // A partial update is none.
        assert_eq!(feed!(&mut ix, 1_000_000, &fbu2), None);
        let at3 = at;
        let (t, k3) = feed!(&mut ix, 1_500_000, &fbu3).expect("a key point");
        assert_eq!((t, k3.offset), (1_500_000, at3));
        assert_eq!(k3.dictionaries.len(), 1);
        let (e, dict) = &k3.dictionaries[0];
        assert_eq!(*e, enc::ZRLE);
        // The dictionary is the stream's last 32 KiB, and continues it.
        let mut inflated = a.clone();
        inflated.extend_from_slice(&b);
        assert_eq!(dict[..], inflated[inflated.len() - MAX_DICTIONARY..]);
        assert_eq!(inflate_from(dict, &c_data), Some(c.clone()));
        // Without it, the continuation does not decode to the same bytes.
        assert_ne!(inflate_from(&[], &c_data), Some(c.clone()));
        // A full update too soon after the last is none; after the gap, a full update
        // of a resized screen is one, its prefix with the size in effect where it
        // starts.
        let again = update(&[(0, 0, 64, 64, compress(&mut z, b"z"))]);
        assert_eq!(feed!(&mut ix, 1_600_000, &again), None);
        let mut resize = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 32, 0, 16];
        resize.extend_from_slice(&enc::DESKTOP_SIZE.to_be_bytes());
        assert_eq!(feed!(&mut ix, 2_000_000, &resize), None);
        let fbu4 = update(&[(0, 0, 32, 16, compress(&mut z, b"y"))]);
        let (_, k4) = feed!(&mut ix, 3_000_000, &fbu4).expect("a key point");
        let p = &k4.prefix[pre.len()..];
        assert_eq!((&p[..4], &p[4..]), (&[0, 32, 0, 16][..], &init[4..]));
    }

    #[test]
    fn a_stream_it_cannot_follow_ends_its_key_points() {
        let mut ix = KeyIndexer::new(PixelFormatShare::new(), b"", Duration::ZERO);
        assert!(ix.to_client(0, 0, &server_init(8, 8)).is_none());
        let bad = update(&[(0, 0, 8, 8, vec![0xFF; 40])]);
        assert!(ix.to_client(0, 1, &bad).is_none());
        let mut z = Compress::new(Compression::default(), true);
        let good = update(&[(0, 0, 8, 8, compress(&mut z, b"ok"))]);
        assert!(ix.to_client(0, 2, &good).is_none());
        // An unknown server message: the parse fails, nothing more.
        let mut ix = KeyIndexer::new(PixelFormatShare::new(), b"", Duration::ZERO);
        assert!(ix.to_client(0, 0, &server_init(8, 8)).is_none());
        assert!(ix.to_client(0, 1, &[77]).is_none());
        assert!(ix.to_client(0, 2, &good).is_none());
    }
}
