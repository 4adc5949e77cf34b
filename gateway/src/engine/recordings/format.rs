//! The recording file format (documented for people in `docs/recordings.md`):
//! an 8-byte magic, then append-only records, each framed by its length and a CRC-32 so
//! that a file cut anywhere (a crash, `kill -9`, a full disk) reads back up to its last
//! complete record and no further.
//!
//! ```text
//! file   := MAGIC record*
//! record := len:u32le crc:u32le body[len]      crc = CRC-32/IEEE of body
//! body   := kind:u8 t_us:u64le payload          t_us: microseconds since the start
//! ```
//!
//! Version 2 added one record kind, [`Kind::Key`] (key points of VNC recordings); a
//! version 1 file is a version 2 file without them, and reads the same.

/// `VMGWREC` and the format version written (2).
pub const MAGIC: &[u8; 8] = b"VMGWREC\x02";
/// The magic of version 1 files (before key points), still read.
pub const MAGIC_V1: &[u8; 8] = b"VMGWREC\x01";
/// The format version written.
pub const VERSION: u8 = 2;
/// Bytes before a record's body (length and CRC).
pub const FRAME_HEADER: usize = 8;
/// Bytes of a body before its payload (kind and time).
pub const BODY_HEADER: usize = 9;
/// Longest payload the writer puts in one record (longer chunks are split); a reader
/// stops at a record that claims more (a corrupt length must not make it allocate).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The first record: JSON metadata (ids, console, start time, gateway).
    Meta = 1,
    /// Bytes the console sent to the visitor (as relayed).
    ToClient = 2,
    /// Bytes of the visitor that reached the console (after the relay's filters).
    ToConsole = 3,
    /// A JSON event: `{"event":"stopped","reason":…}`, `{"event":"end","reason":…}`.
    Event = 4,
    /// A key point of a VNC recording ([`KeyPoint`]): where in the console → visitor
    /// stream a decoder may start, and what it needs to. Its time is that of the record
    /// where the update it points to begins (so it may be earlier than the records
    /// before it).
    Key = 5,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Meta),
            2 => Some(Kind::ToClient),
            3 => Some(Kind::ToConsole),
            4 => Some(Kind::Event),
            5 => Some(Kind::Key),
            _ => None,
        }
    }
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32/IEEE (the zlib / PNG / Ethernet one).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        let i = usize::from((c as u8) ^ b);
        c = CRC_TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Appends one framed record to `out`. `payload` must be at most [`MAX_PAYLOAD`] bytes
/// (see [`encode_chunked`]).
pub fn encode(out: &mut Vec<u8>, kind: Kind, t_us: u64, payload: &[u8]) {
    let len = BODY_HEADER + payload.len();
    let start = out.len();
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    out.extend_from_slice(&t_us.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(out.get(start + FRAME_HEADER..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Appends `payload` as one or more records of at most [`MAX_PAYLOAD`] bytes each.
pub fn encode_chunked(out: &mut Vec<u8>, kind: Kind, t_us: u64, payload: &[u8]) {
    for part in payload.chunks(MAX_PAYLOAD) {
        encode(out, kind, t_us, part);
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    pub t_us: u64,
    pub payload: &'a [u8],
    /// Offset of the record's frame in the file.
    pub offset: usize,
}

/// Why reading stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belonged to a complete, valid record.
    Clean,
    /// The last record is incomplete (the file was cut while it was written).
    Truncated,
    /// A record's CRC, length or kind is wrong; nothing after it is trusted.
    Corrupt,
}

/// The data does not start with [`MAGIC`]: not a recording (of this format version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a recording (bad magic)")]
pub struct NotARecording;

/// Reads a recording: the records up to the first incomplete or bad one, and how the
/// data ended. `Err` only when the magic is wrong (not a recording at all).
pub fn read(data: &[u8]) -> Result<(Vec<Record<'_>>, Tail), NotARecording> {
    let magic = data.get(..MAGIC.len());
    if magic != Some(&MAGIC[..]) && magic != Some(&MAGIC_V1[..]) {
        return Err(NotARecording);
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    loop {
        if at == data.len() {
            return Ok((records, Tail::Clean));
        }
        let Some(hdr) = data.get(at..at + FRAME_HEADER) else {
            return Ok((records, Tail::Truncated));
        };
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(hdr.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let len = usize::try_from(word(0)).unwrap_or(usize::MAX);
        if !(BODY_HEADER..=BODY_HEADER + MAX_PAYLOAD).contains(&len) {
            return Ok((records, Tail::Corrupt));
        }
        let Some(body) = data.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            return Ok((records, Tail::Truncated));
        };
        if crc32(body) != word(4) {
            return Ok((records, Tail::Corrupt));
        }
        let Some(kind) = body.first().copied().and_then(Kind::from_u8) else {
            return Ok((records, Tail::Corrupt));
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(body.get(1..BODY_HEADER).unwrap_or(&[0; 8]));
        records.push(Record {
            kind,
            t_us: u64::from_le_bytes(t),
            payload: body.get(BODY_HEADER..).unwrap_or_default(),
            offset: at,
        });
        at += FRAME_HEADER + len;
    }
}

/// Longest zlib dictionary a key point holds (the deflate window).
pub const MAX_DICTIONARY: usize = 32 * 1024;

/// A key point of a VNC recording: a fresh RFB decoder fed `prefix`, with the zlib
/// streams of `dictionaries` continued from their dictionary, then fed the console →
/// visitor stream from byte `offset` on, draws what a decoder fed everything from the
/// start draws (the update at `offset` repaints the whole screen).
///
/// ```text
/// key   := offset:u64le prefix_len:u32le prefix count:u8 dict*
/// dict  := encoding:i32le len:u32le bytes[len]      len <= 32768
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPoint {
    /// Offset in the console → visitor stream (all `to_client` payloads, in order, the
    /// handshake included) of the FramebufferUpdate that repaints the whole screen.
    pub offset: u64,
    /// What a decoder is fed first: the handshake the visitor read and a ServerInit
    /// with the screen size in effect at `offset`.
    pub prefix: Vec<u8>,
    /// For each zlib stream already started at `offset` (by RFB encoding: 6 Zlib, 16
    /// ZRLE), the last (at most 32 KiB) bytes it had inflated: a raw inflater given them
    /// as its dictionary continues the stream at `offset`. Streams not started yet are
    /// not listed (they start with their zlib header after `offset`).
    pub dictionaries: Vec<(i32, Vec<u8>)>,
}

impl KeyPoint {
    /// The record payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            13 + self.prefix.len()
                + self
                    .dictionaries
                    .iter()
                    .map(|(_, d)| 8 + d.len())
                    .sum::<usize>(),
        );
        out.extend_from_slice(&self.offset.to_le_bytes());
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&len(self.prefix.len()));
        out.extend_from_slice(&self.prefix);
        out.push(u8::try_from(self.dictionaries.len()).unwrap_or(u8::MAX));
        for (enc, dict) in self.dictionaries.iter().take(usize::from(u8::MAX)) {
            let dict = dict
                .get(dict.len().saturating_sub(MAX_DICTIONARY)..)
                .unwrap_or_default();
            out.extend_from_slice(&enc.to_le_bytes());
            out.extend_from_slice(&len(dict.len()));
            out.extend_from_slice(dict);
        }
        out
    }

    /// Reads a record payload; `None` if it is malformed.
    pub fn decode(p: &[u8]) -> Option<KeyPoint> {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = p.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let u32le = |b: &[u8]| -> Option<usize> {
            usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
        };
        let offset = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let n = u32le(take(4)?)?;
        let prefix = take(n)?.to_vec();
        let count = *take(1)?.first()?;
        let mut dictionaries = Vec::new();
        for _ in 0..count {
            let enc = i32::from_le_bytes(take(4)?.try_into().ok()?);
            let n = u32le(take(4)?)?;
            if n > MAX_DICTIONARY {
                return None;
            }
            dictionaries.push((enc, take(n)?.to_vec()));
        }
        if at != p.len() {
            return None;
        }
        Some(KeyPoint {
            offset,
            prefix,
            dictionaries,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    fn sample() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        encode(&mut f, Kind::Meta, 0, br#"{"v":1}"#);
        encode(&mut f, Kind::ToClient, 10, b"screen");
        encode(&mut f, Kind::ToConsole, 20, b"keys");
        f
    }

    #[test]
    fn round_trip() {
        let f = sample();
        let (r, tail) = read(&f).unwrap();
        assert_eq!(tail, Tail::Clean);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[1].kind, r[1].t_us, r[1].payload),
            (Kind::ToClient, 10, &b"screen"[..])
        );
        assert_eq!((r[2].kind, r[2].payload), (Kind::ToConsole, &b"keys"[..]));
    }

    #[test]
    fn a_file_cut_anywhere_reads_up_to_its_last_complete_record() {
        let f = sample();
        let full = read(&f).unwrap().0.len();
        for cut in MAGIC.len()..f.len() {
            let (r, tail) = read(&f[..cut]).unwrap();
            assert!(r.len() < full, "cut at {cut}");
            assert_ne!(tail, Tail::Corrupt, "cut at {cut}");
            // Every record read is one of the originals, intact.
            let orig = read(&f).unwrap().0;
            assert_eq!(&orig[..r.len()], &r[..]);
        }
        assert!(read(b"VMGW").is_err());
    }

    #[test]
    fn a_damaged_record_ends_the_reading() {
        let mut f = sample();
        let n = f.len();
        f[n - 2] ^= 0xFF;
        let (r, tail) = read(&f).unwrap();
        assert_eq!((r.len(), tail), (2, Tail::Corrupt));
        let mut g = sample();
        g[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&g).unwrap(), (vec![], Tail::Corrupt));
    }

    #[test]
    fn key_points_round_trip_and_bad_ones_are_refused() {
        let k = KeyPoint {
            offset: 1 << 40,
            prefix: b"RFB 003.008\n".to_vec(),
            dictionaries: vec![(16, vec![1, 2, 3]), (6, vec![])],
        };
        let p = k.encode();
        assert_eq!(KeyPoint::decode(&p), Some(k.clone()));
        for cut in 0..p.len() {
            assert_eq!(KeyPoint::decode(&p[..cut]), None, "cut at {cut}");
        }
        let mut longer = p.clone();
        longer.push(0);
        assert_eq!(KeyPoint::decode(&longer), None);
        // A dictionary longer than the window keeps its last 32 KiB.
        let big = KeyPoint {
            offset: 0,
            prefix: vec![],
            dictionaries: vec![(16, (0..40_000u32).map(|i| i as u8).collect())],
        };
        let back = KeyPoint::decode(&big.encode()).unwrap();
        assert_eq!(back.dictionaries[0].1.len(), MAX_DICTIONARY);
        assert_eq!(
            back.dictionaries[0].1[..],
            big.dictionaries[0].1[40_000 - MAX_DICTIONARY..]
        );
        // In a file: a record of its own kind.
        let mut f = MAGIC.to_vec();
        encode(&mut f, Kind::Key, 5, &p);
        let (r, tail) = read(&f).unwrap();
        assert_eq!((r[0].kind, r[0].t_us, tail), (Kind::Key, 5, Tail::Clean));
        assert_eq!(KeyPoint::decode(r[0].payload), Some(k));
    }

    #[test]
    fn version_1_files_still_read() {
        let mut f = MAGIC_V1.to_vec();
        encode(&mut f, Kind::ToClient, 1, b"x");
        assert_eq!(read(&f).unwrap().0.len(), 1);
        assert!(read(b"VMGWREC\x03").is_err());
    }

    #[test]
    fn big_chunks_are_split() {
        let mut f = MAGIC.to_vec();
        encode_chunked(&mut f, Kind::ToClient, 1, &vec![7u8; MAX_PAYLOAD * 2 + 5]);
        let (r, tail) = read(&f).unwrap();
        assert_eq!((r.len(), tail), (3, Tail::Clean));
        assert_eq!(r[2].payload.len(), 5);
    }
}
