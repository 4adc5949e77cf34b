//! SPICE link header check, and the view-only filter.
//!
//! spice-html5 opens one WebSocket per SPICE channel and sends a
//! `SpiceLinkHeader` + `SpiceLinkMess` first. [`parse_link_header`] validates
//! those first bytes before the gateway connects the channel to QEMU, so that
//! garbage and huge size fields are refused without allocating, and so that
//! the gateway can refuse channels a link may not use (e.g. inputs on a
//! view-only link, see [`ChannelType::permitted_view_only`]).
//!
//! View-only links and main channels: [`connect_channel`] relays the server's
//! `SpiceLinkReply` itself (to learn the negotiated capabilities) and returns a
//! [`ClientFilter`] for the rest of the visitor's bytes (and, on main channels, a
//! [`ServerFilter`] for the console's). Both cut their stream into messages with one
//! splitter and decide per message. The client filter passes the authentication
//! (`SpiceLinkAuthMechanism` + the 128-byte ticket); on view-only channels it then
//! passes only the messages that keep a viewer's channel running (acks, pongs, display
//! init and reports, attach-channels) and drops everything that could act on the guest
//! (mouse mode, migration, the agent's monitor layout). The inputs channel itself is
//! refused before any of this. On main channels the guest agent's stream (the
//! clipboard) goes through the link's clipboard policy both ways, per VDAgent message:
//! see [`agent`].
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

use std::time::Duration;

use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub mod agent;

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
    /// The server's link reply is not a valid `SpiceLinkHeader` + `SpiceLinkReply`.
    #[error("bad SPICE link reply from the console: {0}")]
    BadReply(&'static str),
    /// The console closed (or failed) while the gateway relayed the link.
    #[error("console connection failed during the SPICE link")]
    ConsoleClosed,
    /// The visitor's connection failed or closed during the link.
    #[error("visitor connection failed during the SPICE link")]
    VisitorClosed,
    /// The link did not complete in time.
    #[error("SPICE link timed out")]
    Timeout,
    /// A filtered channel asked for an authentication other than the SPICE ticket
    /// (SASL runs a free-form exchange the filter does not follow).
    #[error("unsupported SPICE authentication mechanism {0} on a filtered channel")]
    AuthMechanism(u32),
    /// The guest agent's stream in a main channel broke the rules spice-server holds it
    /// to (see [`agent`]).
    #[error("SPICE agent data the gateway cannot follow: {0}")]
    Agent(#[from] agent::AgentError),
    /// The filter failed earlier; it passes nothing more.
    #[error("SPICE filter failed earlier")]
    Failed,
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

/// `SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION`: the client names its mechanism.
const CAP_AUTH_SELECTION: u32 = 0;
/// `SPICE_COMMON_CAP_AUTH_SPICE`: the ticket mechanism (also its wire value).
const CAP_AUTH_SPICE: u32 = 1;
/// `SPICE_COMMON_CAP_MINI_HEADER`: 6-byte message headers.
const CAP_MINI_HEADER: u32 = 3;
/// `SPICE_TICKET_PUBKEY_BYTES`: the server's RSA key in `SpiceLinkReply`.
const PUBKEY_BYTES: usize = 162;
/// Fixed part of `SpiceLinkReply`: error, pub_key, three u32 counts/offset.
const LINK_REPLY_MIN_LEN: u32 = 4 + PUBKEY_BYTES as u32 + 12;
/// The RSA-encrypted ticket the client sends (1024-bit key: 128 bytes).
pub const TICKET_LEN: usize = 128;
/// `SpiceMiniDataHeader`: type u16, size u32.
const MINI_HEADER_LEN: usize = 6;
/// `SpiceDataHeader`: serial u64, type u16, size u32, sub_list u32.
const FULL_HEADER_LEN: usize = 18;

fn has_cap(first_word: Option<u32>, cap: u32) -> bool {
    first_word.is_some_and(|w| w & (1 << cap) != 0)
}

/// The first common capability word of a client's link message, if it has one.
fn client_common_caps(link: &[u8], hdr: &LinkHeader) -> Option<u32> {
    if hdr.num_common_caps == 0 {
        return None;
    }
    let mess = link.get(LINK_HEADER_LEN..hdr.total_len)?;
    le32(mess, usize::try_from(hdr.caps_offset).ok()?)
}

/// What the gateway needs of the server's `SpiceLinkReply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkReply {
    /// `SpiceLinkReply.error` (0: the server goes on to authentication).
    pub error: u32,
    /// The server's first common capability word (0 when it sends none).
    pub common_caps: u32,
}

/// Parses a server's `SpiceLinkHeader` + `SpiceLinkReply` (exactly `16 + size` bytes).
pub fn parse_link_reply(buf: &[u8]) -> Result<LinkReply, SpiceError> {
    if buf.get(..4) != Some(&SPICE_MAGIC[..]) {
        return Err(SpiceError::BadReply("magic"));
    }
    if le32(buf, 4) != Some(SPICE_VERSION_MAJOR) {
        return Err(SpiceError::BadReply("major version"));
    }
    let size = le32(buf, 12).ok_or(SpiceError::BadReply("short header"))?;
    if !(LINK_REPLY_MIN_LEN..=LINK_MESS_MAX_LEN).contains(&size) {
        return Err(SpiceError::BadReply("size"));
    }
    let reply = buf
        .get(LINK_HEADER_LEN..)
        .filter(|r| r.len() == size as usize)
        .ok_or(SpiceError::BadReply("length"))?;
    let field = |at: usize| le32(reply, at).ok_or(SpiceError::BadReply("short reply"));
    let error = field(0)?;
    let num_common = field(4 + PUBKEY_BYTES)?;
    let num_channel = field(8 + PUBKEY_BYTES)?;
    let offset = field(12 + PUBKEY_BYTES)?;
    let num_caps = u64::from(num_common) + u64::from(num_channel);
    if num_caps > 0
        && (offset < LINK_REPLY_MIN_LEN || u64::from(offset) + 4 * num_caps > u64::from(size))
    {
        return Err(SpiceError::BadReply("capabilities out of bounds"));
    }
    let common_caps = if num_common > 0 {
        field(offset as usize)?
    } else {
        0
    };
    Ok(LinkReply { error, common_caps })
}

/// Whether a view-only visitor's message of type `msg_type` on `channel` reaches
/// the console. Only what keeps the viewer's own channel running passes; anything
/// that could act on the guest or the session is dropped.
pub fn view_only_passes(channel: ChannelType, msg_type: u16) -> bool {
    match msg_type {
        // SPICE_MSGC_ACK_SYNC, ACK, PONG (flow control, keep-alive), DISCONNECTING.
        // Not MIGRATE_FLUSH_MARK (4) / MIGRATE_DATA (5).
        1..=3 | 6 => true,
        _ => match channel {
            // SPICE_MSGC_MAIN_ATTACH_CHANNELS only: not CLIENT_INFO (101), migration
            // (102, 103, 109-111), MOUSE_MODE_REQUEST (105) nor the agent (106-108:
            // clipboard, monitor layout, file transfer, all acting on the guest).
            ChannelType::Main => msg_type == 104,
            // SPICE_MSGC_DISPLAY_INIT, STREAM_REPORT, PREFERRED_COMPRESSION,
            // GL_DRAW_DONE, PREFERRED_VIDEO_CODEC_TYPE: how this viewer is served.
            ChannelType::Display => (101..=105).contains(&msg_type),
            // Cursor and playback have no client messages of their own; the other
            // channels are refused on view-only links before a filter exists.
            _ => false,
        },
    }
}

/// `SPICE_MSGC_MAIN_AGENT_START`: the visitor asks for the agent's data.
const MSGC_MAIN_AGENT_START: u16 = 106;
/// `SPICE_MSGC_MAIN_AGENT_DATA`: the visitor's data for the guest's agent.
const MSGC_MAIN_AGENT_DATA: u16 = 107;
/// `SPICE_MSGC_MAIN_AGENT_TOKEN`: the visitor gives back tokens for the agent's data.
const MSGC_MAIN_AGENT_TOKEN: u16 = 108;
/// `SPICE_MSG_MAIN_AGENT_CONNECTED`.
const MSG_MAIN_AGENT_CONNECTED: u16 = 107;
/// `SPICE_MSG_MAIN_AGENT_DISCONNECTED`: the agent went away (its stream starts afresh).
const MSG_MAIN_AGENT_DISCONNECTED: u16 = 108;
/// `SPICE_MSG_MAIN_AGENT_DATA`: the guest agent's data for the visitor.
const MSG_MAIN_AGENT_DATA: u16 = 109;
/// `SPICE_MSG_MAIN_AGENT_CONNECTED_TOKENS`.
const MSG_MAIN_AGENT_CONNECTED_TOKENS: u16 = 115;

/// What happens to one message of a SPICE stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Relayed as it is (streamed).
    Pass,
    /// Removed whole (streamed past).
    Drop,
    /// An `AGENT_DATA` message: its body (at most 2048 bytes) is collected and goes
    /// through the agent stream, which passes it or replaces it.
    Agent,
}

/// The per-message decisions of one direction of one channel.
trait Rules {
    /// The verdict on a message of `msg_type`.
    fn decide(&mut self, msg_type: u16) -> Verdict;
    /// An `AGENT_DATA` body, whole.
    fn agent(&mut self, body: &[u8]) -> Result<agent::Chunk, SpiceError>;
}

#[derive(Debug)]
enum Phase {
    /// `SpiceLinkAuthMechanism` (u32), when both sides have AUTH_SELECTION (visitor).
    Mechanism,
    /// The encrypted ticket; this many bytes still to pass (visitor).
    Ticket(usize),
    /// The server's 4-byte link result; this many bytes still to pass (console).
    LinkResult(usize),
    /// A message header, being collected.
    Header,
    /// A message body; this many bytes still to pass or drop.
    Body { left: u64, pass: bool },
    /// An `AGENT_DATA` body being collected; this many bytes still to come.
    Agent { left: usize },
    /// An error ended the stream.
    Failed,
}

/// One direction of a channel after its link message, cut into messages: the
/// preamble (the visitor's authentication, or the console's link result) passes, then
/// each message is passed, dropped or (agent data) rewritten as the [`Rules`] say.
/// Nothing is held but a header and at most one 2048-byte agent chunk.
#[derive(Debug)]
struct Splitter {
    header_len: usize,
    phase: Phase,
    /// Bytes of the mechanism or header collected so far.
    pending: Vec<u8>,
    /// The `AGENT_DATA` body being collected.
    body: Vec<u8>,
}

impl Splitter {
    fn new(mini_header: bool, phase: Phase) -> Self {
        Splitter {
            header_len: if mini_header {
                MINI_HEADER_LEN
            } else {
                FULL_HEADER_LEN
            },
            phase,
            pending: Vec::with_capacity(FULL_HEADER_LEN),
            body: Vec::new(),
        }
    }

    /// Where the type (u16) and size (u32) sit in a header: mini first, full after the
    /// serial.
    fn type_at(&self) -> usize {
        if self.header_len == MINI_HEADER_LEN {
            0
        } else {
            8
        }
    }

    fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        rules: &mut impl Rules,
    ) -> Result<(), SpiceError> {
        let r = self.run(input, out, rules);
        if r.is_err() {
            self.phase = Phase::Failed;
            self.pending.clear();
            self.body = Vec::new();
        }
        r
    }

    fn run(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        rules: &mut impl Rules,
    ) -> Result<(), SpiceError> {
        while !input.is_empty() {
            match &mut self.phase {
                Phase::Failed => return Err(SpiceError::Failed),
                Phase::Mechanism => {
                    let (take, rest) = input.split_at(input.len().min(4 - self.pending.len()));
                    self.pending.extend_from_slice(take);
                    input = rest;
                    if let Some(mech) = le32(&self.pending, 0) {
                        if mech != CAP_AUTH_SPICE {
                            return Err(SpiceError::AuthMechanism(mech));
                        }
                        out.extend_from_slice(&self.pending);
                        self.pending.clear();
                        self.phase = Phase::Ticket(TICKET_LEN);
                    }
                }
                Phase::Ticket(left) | Phase::LinkResult(left) => {
                    let (take, rest) = input.split_at(input.len().min(*left));
                    out.extend_from_slice(take);
                    input = rest;
                    *left -= take.len();
                    if *left == 0 {
                        self.phase = Phase::Header;
                    }
                }
                Phase::Header => {
                    let want = self.header_len - self.pending.len();
                    let (take, rest) = input.split_at(input.len().min(want));
                    self.pending.extend_from_slice(take);
                    input = rest;
                    if self.pending.len() == self.header_len {
                        self.phase = self.on_header(out, rules)?;
                    }
                }
                Phase::Body { left, pass } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (take, rest) = input.split_at(n);
                    if *pass {
                        out.extend_from_slice(take);
                    }
                    input = rest;
                    *left -= n as u64;
                }
                Phase::Agent { left } => {
                    let (take, rest) = input.split_at(input.len().min(*left));
                    self.body.extend_from_slice(take);
                    input = rest;
                    *left -= take.len();
                }
            }
            // A message ends with its body (or its header, when the body is empty).
            match self.phase {
                Phase::Body { left: 0, .. } => self.phase = Phase::Header,
                Phase::Agent { left: 0 } => self.agent_done(out, rules)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A whole header in `pending`: the next phase.
    fn on_header(
        &mut self,
        out: &mut Vec<u8>,
        rules: &mut impl Rules,
    ) -> Result<Phase, SpiceError> {
        let at = self.type_at();
        let (Some(t0), Some(t1), Some(size)) = (
            self.pending.get(at).copied(),
            self.pending.get(at + 1).copied(),
            le32(&self.pending, at + 2),
        ) else {
            return Err(SpiceError::SizeTooSmall(0));
        };
        let verdict = rules.decide(u16::from_le_bytes([t0, t1]));
        if verdict == Verdict::Agent {
            // Full headers: a sub-message list would put more than agent data in the body.
            let sub_list = if at == 0 {
                Some(0)
            } else {
                le32(&self.pending, 14)
            };
            if sub_list != Some(0) {
                return Err(SpiceError::Agent(agent::AgentError::Overrun));
            }
            let len = size as usize;
            if len > agent::VD_AGENT_MAX_DATA_SIZE {
                return Err(SpiceError::Agent(agent::AgentError::ChunkTooLarge(len)));
            }
            self.body.clear();
            self.body.reserve(len);
            return Ok(Phase::Agent { left: len });
        }
        let pass = verdict == Verdict::Pass;
        if pass {
            out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
        Ok(Phase::Body {
            left: u64::from(size),
            pass,
        })
    }

    /// A whole `AGENT_DATA` body in `body` (header in `pending`): out it goes, as it is
    /// or replaced by the filler (the header's size rewritten to match).
    fn agent_done(&mut self, out: &mut Vec<u8>, rules: &mut impl Rules) -> Result<(), SpiceError> {
        let verdict = rules.agent(&self.body)?;
        let at = self.type_at() + 2;
        let body: &[u8] = match verdict {
            agent::Chunk::Pass => &self.body,
            agent::Chunk::Replace => &agent::FILLER,
        };
        let size = (body.len() as u32).to_le_bytes();
        if let Some(s) = self.pending.get_mut(at..at + 4) {
            s.copy_from_slice(&size);
        }
        out.extend_from_slice(&self.pending);
        out.extend_from_slice(body);
        self.pending.clear();
        self.body.clear();
        self.phase = Phase::Header;
        Ok(())
    }
}

/// The visitor's rules: view-only channels pass what [`view_only_passes`] allows;
/// main channels put the agent's data through the clipboard policy.
#[derive(Debug)]
struct ClientRules {
    channel: ChannelType,
    view_only: bool,
    /// Whether the agent's messages (start, data, tokens) are relayed at all: always on
    /// interactive links; on view-only ones only when the guest's text may come out
    /// (the page then needs the agent's stream, and asks for the text).
    agent: bool,
    stream: agent::AgentStream,
    dropped: u64,
}

impl Rules for ClientRules {
    fn decide(&mut self, msg_type: u16) -> Verdict {
        let main = self.channel == ChannelType::Main;
        if main && self.agent && msg_type == MSGC_MAIN_AGENT_DATA {
            return Verdict::Agent;
        }
        if !self.view_only
            || view_only_passes(self.channel, msg_type)
            || (main
                && self.agent
                && matches!(msg_type, MSGC_MAIN_AGENT_START | MSGC_MAIN_AGENT_TOKEN))
        {
            return Verdict::Pass;
        }
        self.dropped += 1;
        Verdict::Drop
    }

    fn agent(&mut self, body: &[u8]) -> Result<agent::Chunk, SpiceError> {
        Ok(self.stream.chunk(body)?)
    }
}

/// The visitor→console filter of a SPICE channel, after its link message: passes the
/// authentication, then whole messages. On view-only channels only those
/// [`view_only_passes`] allows; on main channels the agent's data goes through the
/// link's clipboard policy (see [`agent`]). Streams bodies (nothing is buffered beyond a
/// header and one agent chunk).
#[derive(Debug)]
pub struct ClientFilter {
    splitter: Splitter,
    rules: ClientRules,
}

impl ClientFilter {
    /// A view-only filter for `channel` that relays nothing of the agent, with the
    /// capabilities both sides announced.
    pub fn new(channel: ChannelType, auth_selection: bool, mini_header: bool) -> Self {
        Self::with_policy(
            channel,
            auth_selection,
            mini_header,
            true,
            crate::model::clipboard::ClipboardPolicy::None,
            0,
        )
    }

    /// A filter for `channel` of a link that is `view_only` or not, with its clipboard
    /// `policy` (already reduced for view-only) and clipboard limit.
    pub fn with_policy(
        channel: ChannelType,
        auth_selection: bool,
        mini_header: bool,
        view_only: bool,
        policy: crate::model::clipboard::ClipboardPolicy,
        max_clipboard_text: usize,
    ) -> Self {
        let phase = if auth_selection {
            Phase::Mechanism
        } else {
            Phase::Ticket(TICKET_LEN)
        };
        ClientFilter {
            splitter: Splitter::new(mini_header, phase),
            rules: ClientRules {
                channel,
                view_only,
                agent: !view_only || policy.from_guest(),
                stream: agent::AgentStream::new(
                    agent::Sender::Visitor,
                    policy,
                    view_only,
                    max_clipboard_text,
                ),
                dropped: 0,
            },
        }
    }

    /// Messages dropped so far (view-only), and agent messages other than the
    /// clipboard's that were refused.
    pub fn dropped(&self) -> u64 {
        self.rules.dropped + self.rules.stream.other_refused()
    }

    /// Clipboard messages for the guest's agent refused so far by the link's policy.
    pub fn clipboard_dropped(&self) -> u64 {
        self.rules.stream.clipboard_refused()
    }

    /// Filters `input`, appending what may reach the console to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), SpiceError> {
        self.splitter.push(input, out, &mut self.rules)
    }
}

/// The console's rules on a main channel: the agent's data through the policy.
#[derive(Debug)]
struct ServerRules {
    stream: agent::AgentStream,
}

impl Rules for ServerRules {
    fn decide(&mut self, msg_type: u16) -> Verdict {
        match msg_type {
            MSG_MAIN_AGENT_DATA => Verdict::Agent,
            // spice-server restarts its parser of the agent's stream when the agent
            // (re)connects; so does the gateway.
            MSG_MAIN_AGENT_CONNECTED
            | MSG_MAIN_AGENT_DISCONNECTED
            | MSG_MAIN_AGENT_CONNECTED_TOKENS => {
                self.stream.reset();
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    fn agent(&mut self, body: &[u8]) -> Result<agent::Chunk, SpiceError> {
        Ok(self.stream.chunk(body)?)
    }
}

/// The console→visitor filter of a SPICE main channel: after the 4-byte link result,
/// whole messages, the agent's data through the link's clipboard policy (see [`agent`]).
/// Streams bodies (nothing is held beyond a header and one agent chunk).
#[derive(Debug)]
pub struct ServerFilter {
    splitter: Splitter,
    rules: ServerRules,
}

impl ServerFilter {
    /// A filter for a main channel (`mini_header` as negotiated) of a link with this
    /// clipboard `policy` (already reduced for view-only) and clipboard limit.
    pub fn new(
        mini_header: bool,
        policy: crate::model::clipboard::ClipboardPolicy,
        view_only: bool,
        max_clipboard_text: usize,
    ) -> Self {
        ServerFilter {
            splitter: Splitter::new(mini_header, Phase::LinkResult(4)),
            rules: ServerRules {
                stream: agent::AgentStream::new(
                    agent::Sender::Console,
                    policy,
                    view_only,
                    max_clipboard_text,
                ),
            },
        }
    }

    /// Clipboard messages kept from the visitor so far.
    pub fn clipboard_dropped(&self) -> u64 {
        self.rules.stream.clipboard_refused()
    }

    /// Filters the console's `input`, appending what may reach the visitor to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), SpiceError> {
        self.splitter.push(input, out, &mut self.rules)
    }
}

/// Connects a visitor's SPICE channel to the console: sends the link message
/// (`link` = exactly the visitor's `SpiceLinkHeader` + `SpiceLinkMess`).
///
/// Channels of interactive links other than main return no filters: the rest is
/// relayed as it is. View-only channels and every main channel also read the server's
/// link reply, check it, pass it on to the visitor, and return the [`ClientFilter`] for
/// everything the visitor sends after the link message; main channels a
/// [`ServerFilter`] for the console's bytes too. Both put the agent's data through the
/// clipboard `policy` (already reduced for view-only), with clipboard messages up to
/// `max_clipboard_text` bytes of text.
#[allow(clippy::too_many_arguments)]
pub async fn connect_channel<S, B>(
    ws: &mut WebSocketStream<S>,
    console: &mut B,
    link: &[u8],
    hdr: &LinkHeader,
    view_only: bool,
    policy: crate::model::clipboard::ClipboardPolicy,
    max_clipboard_text: usize,
    timeout: Duration,
) -> Result<(Option<ClientFilter>, Option<ServerFilter>), SpiceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    console
        .write_all(link)
        .await
        .map_err(|_| SpiceError::ConsoleClosed)?;
    let main = hdr.channel_type == ChannelType::Main;
    if !view_only && !main {
        return Ok((None, None));
    }
    let exchange = async {
        let mut reply = vec![0u8; LINK_HEADER_LEN];
        console
            .read_exact(&mut reply)
            .await
            .map_err(|_| SpiceError::ConsoleClosed)?;
        let size = le32(&reply, 12).ok_or(SpiceError::BadReply("short header"))?;
        if reply.get(..4) != Some(&SPICE_MAGIC[..]) {
            return Err(SpiceError::BadReply("magic"));
        }
        if !(LINK_REPLY_MIN_LEN..=LINK_MESS_MAX_LEN).contains(&size) {
            return Err(SpiceError::BadReply("size"));
        }
        reply.resize(LINK_HEADER_LEN + size as usize, 0);
        if let Some(rest) = reply.get_mut(LINK_HEADER_LEN..) {
            console
                .read_exact(rest)
                .await
                .map_err(|_| SpiceError::ConsoleClosed)?;
        }
        let parsed = parse_link_reply(&reply)?;
        ws.send(Message::Binary(reply.into()))
            .await
            .map_err(|_| SpiceError::VisitorClosed)?;
        Ok(parsed)
    };
    let server = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SpiceError::Timeout)??;
    let client = client_common_caps(link, hdr);
    let both = |cap| has_cap(client, cap) && has_cap(Some(server.common_caps), cap);
    let mini = both(CAP_MINI_HEADER);
    let filter = ClientFilter::with_policy(
        hdr.channel_type,
        both(CAP_AUTH_SELECTION),
        mini,
        view_only,
        policy,
        max_clipboard_text,
    );
    let server_filter =
        main.then(|| ServerFilter::new(mini, policy, view_only, max_clipboard_text));
    Ok((Some(filter), server_filter))
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

    fn mini(t: u16, body: &[u8]) -> Vec<u8> {
        let mut m = t.to_le_bytes().to_vec();
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    fn full(serial: u64, t: u16, body: &[u8]) -> Vec<u8> {
        let mut m = serial.to_le_bytes().to_vec();
        m.extend_from_slice(&t.to_le_bytes());
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Runs `input` through a fresh filter in chunks of `step` bytes.
    fn filtered(f: &mut ClientFilter, input: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            f.push(chunk, &mut out).unwrap();
        }
        out
    }

    fn auth() -> Vec<u8> {
        let mut a = 1u32.to_le_bytes().to_vec();
        a.extend((0..TICKET_LEN).map(|i| i as u8));
        a
    }

    #[test]
    fn main_channel_passes_auth_and_attach_drops_agent_and_mouse_mode() {
        // An agent message whose body looks like an attach: skipped, not parsed.
        let fake = mini(104, &[]);
        let input = [
            auth(),
            mini(3, &[0; 12]),              // PONG
            mini(105, &2u16.to_le_bytes()), // MOUSE_MODE_REQUEST
            mini(106, &[0; 4]),             // AGENT_START
            mini(107, &fake),               // AGENT_DATA
            mini(108, &[0; 4]),             // AGENT_TOKEN
            mini(101, &[0; 8]),             // CLIENT_INFO
            mini(5, &[0; 16]),              // MIGRATE_DATA
            mini(104, &[]),                 // ATTACH_CHANNELS
            mini(2, &[]),                   // ACK
        ]
        .concat();
        let want = [auth(), mini(3, &[0; 12]), mini(104, &[]), mini(2, &[])].concat();
        for step in [1, 2, 3, 5, 7, 64, input.len()] {
            let mut f = ClientFilter::new(ChannelType::Main, true, true);
            assert_eq!(filtered(&mut f, &input, step), want, "step {step}");
            assert_eq!(f.dropped(), 6, "step {step}");
        }
    }

    /// A VDAgent message: protocol 1, `t`, opaque 0, the data's size, the data.
    fn vd(t: u32, data: &[u8]) -> Vec<u8> {
        let mut m = 1u32.to_le_bytes().to_vec();
        m.extend_from_slice(&t.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m.extend_from_slice(data);
        m
    }

    /// `AGENT_DATA` messages of type `t` carrying `message` in chunks of at most 2048
    /// bytes (as spice-server and spice-gtk cut them).
    fn agent_data(msg: impl Fn(u16, &[u8]) -> Vec<u8>, t: u16, message: &[u8]) -> Vec<u8> {
        message.chunks(2048).flat_map(|c| msg(t, c)).collect()
    }

    /// The messages of a mini-header stream: (type, body).
    fn messages(mut s: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut v = Vec::new();
        while !s.is_empty() {
            let t = u16::from_le_bytes([s[0], s[1]]);
            let n = u32::from_le_bytes(s[2..6].try_into().unwrap()) as usize;
            v.push((t, s[6..6 + n].to_vec()));
            s = &s[6 + n..];
        }
        v
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    const POLICIES: [ClipboardPolicy; 4] = [
        ClipboardPolicy::None,
        ClipboardPolicy::ToGuest,
        ClipboardPolicy::FromGuest,
        ClipboardPolicy::Both,
    ];

    use crate::model::clipboard::ClipboardPolicy;

    /// Clipboard text of `n` bytes behind the UTF-8 type word.
    fn clip_text(tag: &str, n: usize) -> (Vec<u8>, Vec<u8>) {
        let text: Vec<u8> = tag.bytes().cycle().take(n).collect();
        let mut data = 1u32.to_le_bytes().to_vec();
        data.extend_from_slice(&text);
        (text, data)
    }

    #[test]
    fn visitor_agent_data_follows_the_policy_message_by_message() {
        let (text, data) = clip_text("visitor-secret-", 5000);
        let input = [
            auth(),
            mini(105, &2u16.to_le_bytes()),  // MOUSE_MODE_REQUEST
            mini(106, &10u32.to_le_bytes()), // AGENT_START
            mini(107, &vd(6, &[1, 0, 0, 0, 0x20, 0, 0, 0])), // caps
            mini(107, &vd(7, &1u32.to_le_bytes())), // GRAB
            agent_data(mini, 107, &vd(4, &data)), // CLIPBOARD, 3 chunks
            mini(107, &vd(8, &1u32.to_le_bytes())), // REQUEST
            mini(107, &vd(2, &[0; 28])),     // MONITORS_CONFIG
            mini(107, &vd(10, b"file")),     // FILE_XFER_START
            mini(108, &1u32.to_le_bytes()),  // AGENT_TOKEN
            mini(104, &[]),                  // ATTACH_CHANNELS
        ]
        .concat();
        let filler = vd(0, &[]);
        for policy in POLICIES {
            for step in [1, 5, 7, 2000, input.len()] {
                let mut f = ClientFilter::with_policy(
                    ChannelType::Main,
                    true,
                    true,
                    false,
                    policy,
                    1 << 20,
                );
                let out = filtered(&mut f, &input, step);
                assert_eq!(&out[..auth().len()], &auth()[..]);
                let got = messages(&out[auth().len()..]);
                let sent = messages(&input[auth().len()..]);
                // As many messages of each type as were sent: agent tokens stay exact.
                assert_eq!(
                    got.iter().map(|m| m.0).collect::<Vec<_>>(),
                    sent.iter().map(|m| m.0).collect::<Vec<_>>(),
                    "{policy} step {step}"
                );
                let want_body = |i: usize, pass: bool| {
                    if pass {
                        sent[i].1.clone()
                    } else {
                        filler.clone()
                    }
                };
                let to = policy.to_guest();
                let from = policy.from_guest();
                let want = [
                    sent[0].1.clone(),
                    sent[1].1.clone(),
                    want_body(2, true),
                    want_body(3, to),
                    want_body(4, to),
                    want_body(5, to),
                    want_body(6, to),
                    want_body(7, from),
                    want_body(8, true),
                    want_body(9, false),
                    sent[10].1.clone(),
                    sent[11].1.clone(),
                ];
                for (i, w) in want.iter().enumerate() {
                    assert_eq!(&got[i].1, w, "{policy} step {step} message {i}");
                }
                assert_eq!(contains(&out, &text[..64]), to, "{policy}");
                let clip = (if to { 0 } else { 2 }) + u64::from(!from);
                assert_eq!(f.clipboard_dropped(), clip, "{policy}");
                assert_eq!(f.dropped(), 1, "the file transfer, {policy}");
            }
        }
    }

    #[test]
    fn console_agent_data_follows_the_policy_with_either_header() {
        let (text, data) = clip_text("guest-secret-", 4500);
        for mini_header in [true, false] {
            let msg = |t: u16, b: &[u8]| {
                if mini_header {
                    mini(t, b)
                } else {
                    full(9, t, b)
                }
            };
            let input = [
                0u32.to_le_bytes().to_vec(),
                msg(103, &[1; 32]),                             // INIT
                msg(109, &vd(6, &[0, 0, 0, 0, 0x20, 0, 0, 0])), // caps
                msg(109, &vd(7, &1u32.to_le_bytes())),          // GRAB
                agent_data(msg, 109, &vd(4, &data)),            // CLIPBOARD, 3 chunks
                msg(109, &vd(8, &1u32.to_le_bytes())),          // REQUEST
                msg(109, &vd(9, &[])),                          // RELEASE
                msg(110, &5u32.to_le_bytes()),                  // AGENT_TOKEN
            ]
            .concat();
            for policy in POLICIES {
                for step in [1, 2, 13, 3000, input.len()] {
                    let mut f = ServerFilter::new(mini_header, policy, false, 1 << 20);
                    let mut out = Vec::new();
                    for c in input.chunks(step) {
                        f.push(c, &mut out).unwrap();
                    }
                    let from = policy.from_guest();
                    assert_eq!(contains(&out, &text[..64]), from, "{policy} {mini_header}");
                    let clips = (if from { 0 } else { 3 }) + u64::from(!policy.to_guest());
                    assert_eq!(f.clipboard_dropped(), clips, "{policy}");
                    if policy == ClipboardPolicy::Both {
                        assert_eq!(out, input);
                    }
                    if mini_header {
                        let got = messages(&out[4..]);
                        let sent = messages(&input[4..]);
                        assert_eq!(got.len(), sent.len());
                        assert_eq!(got[1].1, sent[1].1, "capabilities always pass");
                        let req = got.len() - 3;
                        assert_eq!(got[req].1 == sent[req].1, policy.to_guest());
                    }
                }
            }
        }
    }

    #[test]
    fn view_only_main_channels_relay_the_agent_only_to_read_the_guest() {
        let (text, data) = clip_text("pasted-", 100);
        let input = [
            auth(),
            mini(106, &10u32.to_le_bytes()), // AGENT_START
            mini(107, &vd(6, &[1, 0, 0, 0, 0x20, 0, 0, 0])), // caps
            mini(107, &vd(7, &1u32.to_le_bytes())), // GRAB
            mini(107, &vd(4, &data)),        // CLIPBOARD
            mini(107, &vd(8, &1u32.to_le_bytes())), // REQUEST
            mini(107, &vd(2, &[0; 28])),     // MONITORS_CONFIG
            mini(108, &1u32.to_le_bytes()),  // AGENT_TOKEN
            mini(104, &[]),
        ]
        .concat();
        // Both, on a view-only link, is from_guest: the page reads, never writes.
        let p = ClipboardPolicy::Both.effective(true);
        let mut f = ClientFilter::with_policy(ChannelType::Main, true, true, true, p, 1 << 20);
        let out = filtered(&mut f, &input, 3);
        let got = messages(&out[auth().len()..]);
        let sent = messages(&input[auth().len()..]);
        assert_eq!(got.len(), sent.len());
        let passed: Vec<bool> = got.iter().zip(&sent).map(|(g, s)| g.1 == s.1).collect();
        assert_eq!(
            passed,
            [true, true, false, false, true, false, true, true],
            "start, caps, request, tokens and attach only"
        );
        assert!(!contains(&out, &text));
        // Nothing may come out: the agent is cut off whole, as before the clipboard.
        let p = ClipboardPolicy::ToGuest.effective(true);
        let mut f = ClientFilter::with_policy(ChannelType::Main, true, true, true, p, 1 << 20);
        let out = filtered(&mut f, &input, 7);
        assert_eq!(out, [auth(), mini(104, &[])].concat());
        assert_eq!(f.dropped(), 7);
    }

    #[test]
    fn many_refused_messages_keep_the_token_count() {
        // Far more than the 10 tokens spice-server gives: every AGENT_DATA still
        // reaches the other side (as a filler), so every token comes back.
        let input: Vec<u8> = (0..500u32)
            .flat_map(|i| mini(109, &vd(7, &i.to_le_bytes())))
            .collect();
        let mut f = ServerFilter::new(true, ClipboardPolicy::ToGuest, false, 1 << 20);
        let mut out = Vec::new();
        f.push(&0u32.to_le_bytes(), &mut out).unwrap();
        f.push(&input, &mut out).unwrap();
        let got = messages(&out[4..]);
        assert_eq!(got.len(), 500);
        assert!(got.iter().all(|m| m == &(109, vd(0, &[]))));
        assert_eq!(f.clipboard_dropped(), 500);
    }

    #[test]
    fn agent_data_is_bounded_and_failures_stick() {
        // A 4 GiB AGENT_DATA is refused from its header alone, nothing allocated.
        let mut f = ServerFilter::new(true, ClipboardPolicy::Both, false, 1 << 20);
        let mut out = Vec::new();
        f.push(&0u32.to_le_bytes(), &mut out).unwrap();
        let mut h = 109u16.to_le_bytes().to_vec();
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            f.push(&h, &mut out),
            Err(SpiceError::Agent(agent::AgentError::ChunkTooLarge(_)))
        ));
        assert_eq!(f.push(&mini(103, &[]), &mut out), Err(SpiceError::Failed));
        assert_eq!(out, 0u32.to_le_bytes());
        // 2048 is the largest chunk; 2049 is refused.
        let mut f = ClientFilter::with_policy(
            ChannelType::Main,
            false,
            true,
            false,
            ClipboardPolicy::Both,
            1 << 20,
        );
        let mut out = Vec::new();
        let ticket = vec![0u8; TICKET_LEN];
        f.push(&ticket, &mut out).unwrap();
        let big = vd(4, &[b'a'; 2028]);
        assert_eq!(big.len(), 2048);
        f.push(&mini(107, &big), &mut out).unwrap();
        let mut bigger = vd(4, &[b'a'; 2029]);
        assert!(f.push(&mini(107, &bigger), &mut out).is_err());
        // A smuggled second message behind a size-0 header ends the session.
        let mut f = ClientFilter::with_policy(
            ChannelType::Main,
            false,
            true,
            false,
            ClipboardPolicy::None,
            1 << 20,
        );
        bigger = [vd(6, &[]), vd(4, b"\x01\0\0\0smuggled")].concat();
        let mut out = Vec::new();
        f.push(&ticket, &mut out).unwrap();
        assert!(f.push(&mini(107, &bigger), &mut out).is_err());
        assert!(!contains(&out, b"smuggled"));
        // Full headers with a sub-message list on agent data: refused.
        let mut f = ServerFilter::new(false, ClipboardPolicy::Both, false, 1 << 20);
        let mut m = full(1, 109, &vd(6, &[0; 8]));
        m[14] = 1;
        let mut out = Vec::new();
        assert!(f
            .push(&[&0u32.to_le_bytes()[..], &m].concat(), &mut out)
            .is_err());
    }

    #[test]
    fn the_agent_stream_restarts_when_the_agent_reconnects() {
        let (text, data) = clip_text("after-", 3000);
        let first = vd(4, &data);
        let input = [
            0u32.to_le_bytes().to_vec(),
            // The first chunk of a clipboard message, then the agent goes away.
            mini(109, &first[..2048]),
            mini(108, &0u32.to_le_bytes()),  // AGENT_DISCONNECTED
            mini(115, &10u32.to_le_bytes()), // AGENT_CONNECTED_TOKENS
            mini(109, &vd(6, &[0; 8])),
        ]
        .concat();
        let mut f = ServerFilter::new(true, ClipboardPolicy::ToGuest, false, 1 << 20);
        let mut out = Vec::new();
        f.push(&input, &mut out).unwrap();
        let got = messages(&out[4..]);
        assert_eq!(got[3], (109, vd(6, &[0; 8])));
        assert!(!contains(&out, &text[..32]));
    }

    #[test]
    fn display_channel_passes_its_own_messages() {
        let input = [
            auth(),
            mini(101, &[0; 14]), // DISPLAY_INIT
            mini(102, &[0; 20]), // STREAM_REPORT
            mini(103, &[1]),     // PREFERRED_COMPRESSION
            mini(1, &[0; 4]),    // ACK_SYNC
            mini(200, &[9; 3]),  // unknown: dropped
        ]
        .concat();
        let mut f = ClientFilter::new(ChannelType::Display, true, true);
        let out = filtered(&mut f, &input, 1);
        assert_eq!(out, input[..input.len() - 9]);
        assert_eq!(f.dropped(), 1);
        // Cursor and playback: only the common messages.
        for ch in [ChannelType::Cursor, ChannelType::Playback] {
            assert!(view_only_passes(ch, 3));
            assert!(!view_only_passes(ch, 101));
        }
        assert!(!view_only_passes(ChannelType::Inputs, 101));
    }

    #[test]
    fn without_auth_selection_and_mini_header() {
        let ticket: Vec<u8> = (0..TICKET_LEN).map(|i| i as u8).collect();
        let input = [
            ticket.clone(),
            full(1, 105, &2u16.to_le_bytes()),
            full(2, 104, &[]),
        ]
        .concat();
        for step in [1, 4, 17, input.len()] {
            let mut f = ClientFilter::new(ChannelType::Main, false, false);
            let out = filtered(&mut f, &input, step);
            assert_eq!(out, [ticket.clone(), full(2, 104, &[])].concat());
            assert_eq!(f.dropped(), 1);
        }
    }

    #[test]
    fn sasl_is_refused() {
        let mut f = ClientFilter::new(ChannelType::Main, true, true);
        let mut out = Vec::new();
        assert_eq!(
            f.push(&2u32.to_le_bytes(), &mut out),
            Err(SpiceError::AuthMechanism(2))
        );
        assert!(out.is_empty());
    }

    fn reply(error: u32, common: &[u32]) -> Vec<u8> {
        let size = LINK_REPLY_MIN_LEN + 4 * common.len() as u32;
        let mut m = b"REDQ".to_vec();
        for v in [2u32, 2, size, error] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(&[0x30; PUBKEY_BYTES]);
        for v in [common.len() as u32, 0, LINK_REPLY_MIN_LEN] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        for c in common {
            m.extend_from_slice(&c.to_le_bytes());
        }
        m
    }

    #[test]
    fn link_replies() {
        assert_eq!(
            parse_link_reply(&reply(0, &[0b1011])),
            Ok(LinkReply {
                error: 0,
                common_caps: 0b1011
            })
        );
        assert_eq!(
            parse_link_reply(&reply(7, &[])),
            Ok(LinkReply {
                error: 7,
                common_caps: 0
            })
        );
        let mut bad = reply(0, &[1]);
        bad[0] = b'X';
        assert_eq!(parse_link_reply(&bad), Err(SpiceError::BadReply("magic")));
        let mut short = reply(0, &[1]);
        short.pop();
        assert!(parse_link_reply(&short).is_err());
        let mut caps = reply(0, &[1]);
        set_u32(&mut caps, 16 + 4 + PUBKEY_BYTES, 9);
        assert!(parse_link_reply(&caps).is_err());
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
