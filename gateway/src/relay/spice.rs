//! SPICE link header check.
//!
//! spice-html5 opens one WebSocket per SPICE channel and sends a
//! `SpiceLinkHeader` + `SpiceLinkMess` first. [`parse_link_header`] validates
//! those first bytes before the gateway connects the channel to QEMU, so that
//! garbage and huge size fields are refused without allocating, and so that
//! the gateway can refuse channels a link may not use (e.g. inputs on a
//! view-only link, see [`ChannelType::permitted_view_only`]).
//!
//! Wire format (all integers little endian):
//!
//! ```text
//! SpiceLinkHeader (16 bytes): magic "REDQ", major u32 (= 2), minor u32, size u32
//! SpiceLinkMess (size bytes): connection_id u32, channel_type u8, channel_id u8,
//!     num_common_caps u32, num_channel_caps u32, caps_offset u32, ...caps (u32 each)
//! ```

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

/// `SpiceLinkHeader.magic`.
pub const SPICE_MAGIC: [u8; 4] = *b"REDQ";
/// The only SPICE protocol major version in use.
pub const SPICE_VERSION_MAJOR: u32 = 2;
/// Length of `SpiceLinkHeader`.
pub const LINK_HEADER_LEN: usize = 16;
/// Length of the fixed part of `SpiceLinkMess`.
pub const LINK_MESS_MIN_LEN: u32 = 18;
/// Largest `SpiceLinkMess` accepted. Real clients send 18 bytes plus a few
/// capability words.
pub const LINK_MESS_MAX_LEN: u32 = 4096;

/// Errors of the SPICE link check; each one means the WebSocket is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiceError {
    /// The first bytes are not "REDQ".
    #[error("not a SPICE link message (bad magic)")]
    BadMagic,
    /// Major version other than 2.
    #[error("unsupported SPICE protocol major version {0}")]
    UnsupportedMajor(u32),
    /// `size` above [`LINK_MESS_MAX_LEN`].
    #[error("SPICE link message size {0} exceeds the limit of {LINK_MESS_MAX_LEN}")]
    SizeTooLarge(u32),
    /// `size` below the 18 bytes of the fixed `SpiceLinkMess`.
    #[error("SPICE link message size {0} is below the minimum of {LINK_MESS_MIN_LEN}")]
    SizeTooSmall(u32),
    /// The capability words do not lie inside the message.
    #[error(
        "SPICE capabilities ({common} common + {channel} channel at offset {offset}) \
         do not fit in a {size}-byte link message"
    )]
    CapsOutOfBounds {
        /// `num_common_caps`.
        common: u32,
        /// `num_channel_caps`.
        channel: u32,
        /// `caps_offset`.
        offset: u32,
        /// `size`.
        size: u32,
    },
    /// A channel type SPICE does not define.
    #[error("unknown SPICE channel type {0}")]
    UnknownChannelType(u8),
}

/// SPICE channel types (spice-protocol `enum SpiceChannelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelType {
    /// 1: session control.
    Main,
    /// 2: framebuffer.
    Display,
    /// 3: keyboard and mouse.
    Inputs,
    /// 4: cursor shape.
    Cursor,
    /// 5: audio from the VM.
    Playback,
    /// 6: audio into the VM (microphone).
    Record,
    /// 7: deprecated network tunnel.
    Tunnel,
    /// 8: smartcard passthrough.
    Smartcard,
    /// 9: USB redirection.
    Usbredir,
    /// 10: generic port (e.g. guest agent ports).
    Port,
    /// 11: WebDAV folder sharing.
    Webdav,
}

impl ChannelType {
    /// The channel type for its wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Main,
            2 => Self::Display,
            3 => Self::Inputs,
            4 => Self::Cursor,
            5 => Self::Playback,
            6 => Self::Record,
            7 => Self::Tunnel,
            8 => Self::Smartcard,
            9 => Self::Usbredir,
            10 => Self::Port,
            11 => Self::Webdav,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Main => 1,
            Self::Display => 2,
            Self::Inputs => 3,
            Self::Cursor => 4,
            Self::Playback => 5,
            Self::Record => 6,
            Self::Tunnel => 7,
            Self::Smartcard => 8,
            Self::Usbredir => 9,
            Self::Port => 10,
            Self::Webdav => 11,
        }
    }

    /// Whether a view-only link may open this channel: only the channels that
    /// show the VM (main, display, cursor, playback). Inputs, the microphone,
    /// USB, smartcard, ports, WebDAV and tunnels all act on the VM.
    pub fn permitted_view_only(self) -> bool {
        matches!(
            self,
            Self::Main | Self::Display | Self::Cursor | Self::Playback
        )
    }
}

/// The validated fields of a client's SpiceLinkHeader + SpiceLinkMess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHeader {
    /// Protocol major version (always 2).
    pub major_version: u32,
    /// Protocol minor version as sent.
    pub minor_version: u32,
    /// Length of the SpiceLinkMess.
    pub size: u32,
    /// Session id (0 for the main channel).
    pub connection_id: u32,
    /// Channel the client wants to open.
    pub channel_type: ChannelType,
    /// Channel instance.
    pub channel_id: u8,
    /// Number of common capability words.
    pub num_common_caps: u32,
    /// Number of channel capability words.
    pub num_channel_caps: u32,
    /// Offset of the capability words from the start of SpiceLinkMess.
    pub caps_offset: u32,
    /// Bytes of `buf` taken by header + link message (`16 + size`); the
    /// gateway forwards exactly these before relaying the rest.
    pub total_len: usize,
}

fn le32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Check the first bytes a SPICE client sends on a channel.
///
/// Returns `Ok(None)` while more bytes are needed (never more than
/// `16 + 4096` in total), `Ok(Some(header))` once the whole link message is
/// present and valid, and an error as soon as the bytes seen so far cannot
/// become a valid link message. Nothing is allocated.
pub fn parse_link_header(buf: &[u8]) -> Result<Option<LinkHeader>, SpiceError> {
    // Magic, checked on whatever prefix has arrived.
    let seen = buf.len().min(SPICE_MAGIC.len());
    if buf.get(..seen) != SPICE_MAGIC.get(..seen) {
        return Err(SpiceError::BadMagic);
    }
    let Some(major_version) = le32(buf, 4) else {
        return Ok(None);
    };
    if major_version != SPICE_VERSION_MAJOR {
        return Err(SpiceError::UnsupportedMajor(major_version));
    }
    let (Some(minor_version), Some(size)) = (le32(buf, 8), le32(buf, 12)) else {
        return Ok(None);
    };
    if size > LINK_MESS_MAX_LEN {
        return Err(SpiceError::SizeTooLarge(size));
    }
    if size < LINK_MESS_MIN_LEN {
        return Err(SpiceError::SizeTooSmall(size));
    }
    // size <= 4096, so this cannot overflow.
    let total_len = LINK_HEADER_LEN + size as usize;
    let Some(mess) = buf.get(LINK_HEADER_LEN..total_len) else {
        return Ok(None);
    };

    let field = |at| le32(mess, at).ok_or(SpiceError::SizeTooSmall(size));
    let connection_id = field(0)?;
    let raw_type = mess.get(4).copied().ok_or(SpiceError::SizeTooSmall(size))?;
    let channel_id = mess.get(5).copied().ok_or(SpiceError::SizeTooSmall(size))?;
    let num_common_caps = field(6)?;
    let num_channel_caps = field(10)?;
    let caps_offset = field(14)?;

    let channel_type =
        ChannelType::from_u8(raw_type).ok_or(SpiceError::UnknownChannelType(raw_type))?;

    // Capability words must lie after the fixed part and inside the message
    // (spice-server checks the same, in 32-bit arithmetic; here in 64 bits).
    let num_caps = u64::from(num_common_caps) + u64::from(num_channel_caps);
    if num_caps > 0 {
        let end = u64::from(caps_offset) + 4 * num_caps;
        if caps_offset < LINK_MESS_MIN_LEN || end > u64::from(size) {
            return Err(SpiceError::CapsOutOfBounds {
                common: num_common_caps,
                channel: num_channel_caps,
                offset: caps_offset,
                size,
            });
        }
    }

    Ok(Some(LinkHeader {
        major_version,
        minor_version,
        size,
        connection_id,
        channel_type,
        channel_id,
        num_common_caps,
        num_channel_caps,
        caps_offset,
        total_len,
    }))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A link message as spice-html5 builds it: caps right after the fixed
    /// part (caps_offset 18).
    fn link(channel_type: u8, channel_id: u8, common: &[u32], channel: &[u32]) -> Vec<u8> {
        let size = 18 + 4 * (common.len() + channel.len()) as u32;
        let mut m = b"REDQ".to_vec();
        m.extend_from_slice(&2u32.to_le_bytes());
        m.extend_from_slice(&2u32.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        m.push(channel_type);
        m.push(channel_id);
        m.extend_from_slice(&(common.len() as u32).to_le_bytes());
        m.extend_from_slice(&(channel.len() as u32).to_le_bytes());
        m.extend_from_slice(&18u32.to_le_bytes());
        for c in common.iter().chain(channel) {
            m.extend_from_slice(&c.to_le_bytes());
        }
        m
    }

    fn set_u32(m: &mut [u8], at: usize, v: u32) {
        m[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn parses_a_main_channel_link() {
        let m = link(1, 0, &[0xb], &[0x9]);
        let h = parse_link_header(&m).unwrap().unwrap();
        assert_eq!(
            h,
            LinkHeader {
                major_version: 2,
                minor_version: 2,
                size: 26,
                connection_id: 0x1234_5678,
                channel_type: ChannelType::Main,
                channel_id: 0,
                num_common_caps: 1,
                num_channel_caps: 1,
                caps_offset: 18,
                total_len: 42,
            }
        );
        assert_eq!(h.total_len, m.len());
    }

    #[test]
    fn every_prefix_needs_more_and_trailing_bytes_are_ignored() {
        let m = link(3, 0, &[1], &[]);
        for n in 0..m.len() {
            assert_eq!(parse_link_header(&m[..n]), Ok(None), "prefix {n}");
        }
        let mut longer = m.clone();
        longer.extend_from_slice(b"ticket bytes follow");
        let h = parse_link_header(&longer).unwrap().unwrap();
        assert_eq!(h.total_len, m.len());
        assert_eq!(h.channel_type, ChannelType::Inputs);
        assert!(!h.channel_type.permitted_view_only());
    }

    #[test]
    fn channel_types() {
        for t in 1..=11u8 {
            let h = parse_link_header(&link(t, 1, &[], &[])).unwrap().unwrap();
            assert_eq!(h.channel_type.as_u8(), t);
            assert_eq!(ChannelType::from_u8(t), Some(h.channel_type));
        }
        let viewable: Vec<u8> = (1..=11)
            .filter(|&t| ChannelType::from_u8(t).unwrap().permitted_view_only())
            .collect();
        assert_eq!(viewable, vec![1, 2, 4, 5]);
        for t in [0u8, 12, 255] {
            assert_eq!(
                parse_link_header(&link(t, 0, &[], &[])),
                Err(SpiceError::UnknownChannelType(t))
            );
        }
    }

    #[test]
    fn bad_magic_is_rejected_early() {
        assert_eq!(parse_link_header(b"G"), Err(SpiceError::BadMagic));
        assert_eq!(parse_link_header(b"RED"), Ok(None));
        assert_eq!(parse_link_header(b"REDX"), Err(SpiceError::BadMagic));
        assert_eq!(
            parse_link_header(b"GET / HTTP/1.1\r\n\r\n"),
            Err(SpiceError::BadMagic)
        );
    }

    #[test]
    fn wrong_major_is_rejected_before_size() {
        let mut m = link(1, 0, &[], &[]);
        set_u32(&mut m, 4, 1);
        assert_eq!(
            parse_link_header(&m[..8]),
            Err(SpiceError::UnsupportedMajor(1))
        );
        set_u32(&mut m, 4, 0xFFFF_FFFF);
        assert_eq!(
            parse_link_header(&m),
            Err(SpiceError::UnsupportedMajor(0xFFFF_FFFF))
        );
    }

    #[test]
    fn huge_size_is_rejected_from_the_header_alone() {
        let mut m = link(1, 0, &[], &[]);
        for size in [0xFFFF_FFFFu32, 0x8000_0000, 4097] {
            set_u32(&mut m, 12, size);
            // Only the 16-byte header is needed to refuse it.
            assert_eq!(
                parse_link_header(&m[..16]),
                Err(SpiceError::SizeTooLarge(size))
            );
        }
        set_u32(&mut m, 12, 4096);
        assert_eq!(
            parse_link_header(&m),
            Ok(None),
            "4096 is allowed, needs more"
        );
    }

    #[test]
    fn small_size_is_rejected() {
        let mut m = link(1, 0, &[], &[]);
        for size in [0u32, 1, 17] {
            set_u32(&mut m, 12, size);
            assert_eq!(parse_link_header(&m), Err(SpiceError::SizeTooSmall(size)));
        }
    }

    #[test]
    fn caps_must_fit() {
        // Counts that overflow 32-bit arithmetic (spice-server style) must not
        // wrap into a passing check.
        let mut m = link(2, 0, &[1], &[]);
        set_u32(&mut m, 16 + 6, 0x4000_0000);
        assert!(matches!(
            parse_link_header(&m),
            Err(SpiceError::CapsOutOfBounds { .. })
        ));
        let mut m = link(2, 0, &[1], &[]);
        set_u32(&mut m, 16 + 6, u32::MAX);
        set_u32(&mut m, 16 + 10, u32::MAX);
        assert!(matches!(
            parse_link_header(&m),
            Err(SpiceError::CapsOutOfBounds { .. })
        ));
        // One cap word more than the message holds.
        let mut m = link(2, 0, &[1], &[2]);
        set_u32(&mut m, 16 + 10, 2);
        assert!(matches!(
            parse_link_header(&m),
            Err(SpiceError::CapsOutOfBounds { .. })
        ));
        // Offset pointing into the fixed part or past the end.
        for offset in [0u32, 17, 23, u32::MAX] {
            let mut m = link(2, 0, &[1], &[]);
            set_u32(&mut m, 16 + 14, offset);
            assert!(
                matches!(
                    parse_link_header(&m),
                    Err(SpiceError::CapsOutOfBounds { .. })
                ),
                "offset {offset}"
            );
        }
        // Caps at a later offset inside the message are fine.
        let mut m = link(2, 0, &[1], &[]);
        set_u32(&mut m, 12, 26);
        set_u32(&mut m, 16 + 14, 22);
        m.extend_from_slice(&[0; 4]);
        assert!(parse_link_header(&m).unwrap().is_some());
        // No caps: the offset is not used.
        let mut m = link(2, 0, &[], &[]);
        set_u32(&mut m, 16 + 14, 0);
        assert!(parse_link_header(&m).unwrap().is_some());
    }

    /// `$GATEWAY_FUZZ_CORPUS/spice_link` when set, else
    /// `<gateway crate>/../fuzz/corpus/spice_link`. Mirrors
    /// `fuzz_targets/spice_link.rs`.
    #[test]
    fn replay_spice_link_corpus() {
        let base = std::env::var_os("GATEWAY_FUZZ_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"));
        let dir = base.join("spice_link");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let whole = parse_link_header(&data);
            if let Ok(Some(h)) = &whole {
                assert!(h.total_len <= data.len());
                assert_eq!(parse_link_header(&data[..h.total_len]), whole);
            }
            // A prefix never contradicts the whole: an error on a prefix is
            // an error on the whole input.
            for cut in 0..data.len().min(64) {
                if let Err(e) = parse_link_header(&data[..cut]) {
                    assert_eq!(whole, Err(e), "{}", path.display());
                    break;
                }
            }
            n += 1;
        }
        assert!(n > 0, "corpus {} is empty", dir.display());
    }
}
