//! The streaming parser of the VNC server's stream (QEMU → visitor): it knows where each
//! server message begins, so that clipboard messages can be held to the link's policy.
//!
//! It only counts and skips: rectangle data is streamed through by length, never held.
//! What it buffers is one header at a time (at most [`ServerFilter::max_buffered`]
//! bytes). The encodings a visitor may negotiate are reduced by its [`super::ClientFilter`]
//! (see [`super::ClientFilter::with_server_parsing`]) to the ones counted here
//! ([`parses_encoding`]): Raw, CopyRect, Zlib, ZRLE and ZYWRLE (length-prefixed, so cheap
//! to skip) and the pseudo-encodings QEMU answers. Anything else from the server ends
//! the session: the parser never guesses where a message begins.
//!
//! The messages: ServerInit (once, first), FramebufferUpdate, SetColourMapEntries, Bell,
//! ServerCutText (classic, and the extended clipboard's negative-length form) and QEMU's
//! audio messages. Raw pixels and cursor shapes are counted with the pixel size the
//! visitor set before its first SetEncodings or FramebufferUpdateRequest (shared through
//! [`PixelFormatShare`]), else the one ServerInit announced.

use super::clipboard::{server_ext_needs, Needs};
use super::{byte_at, u16_at, u32_at, PixelFormatShare, RfbError};
use crate::model::clipboard::ClipboardPolicy;

/// Encodings (RFC 6143 §7.7 and the registered pseudo-encodings QEMU implements).
pub mod enc {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const ZLIB: i32 = 6;
    pub const ZRLE: i32 = 16;
    pub const ZYWRLE: i32 = 17;
    pub const QUALITY_LEVELS: std::ops::RangeInclusive<i32> = -32..=-23;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const CURSOR: i32 = -239;
    pub const COMPRESS_LEVELS: std::ops::RangeInclusive<i32> = -256..=-247;
    pub const POINTER_TYPE_CHANGE: i32 = -257;
    pub const QEMU_EXT_KEY_EVENT: i32 = -258;
    pub const QEMU_AUDIO: i32 = -259;
    pub const QEMU_LED_STATE: i32 = -261;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
}

/// Whether the server parser follows rectangles of encoding `e` (or `e` is a
/// pseudo-encoding that yields no rectangle): the encodings a visitor may negotiate.
pub fn parses_encoding(e: i32) -> bool {
    matches!(
        e,
        enc::RAW
            | enc::COPY_RECT
            | enc::ZLIB
            | enc::ZRLE
            | enc::ZYWRLE
            | enc::DESKTOP_SIZE
            | enc::LAST_RECT
            | enc::CURSOR
            | enc::POINTER_TYPE_CHANGE
            | enc::QEMU_EXT_KEY_EVENT
            | enc::QEMU_AUDIO
            | enc::QEMU_LED_STATE
            | enc::EXTENDED_DESKTOP_SIZE
            | super::ENCODING_EXTENDED_CLIPBOARD
    ) || enc::QUALITY_LEVELS.contains(&e)
        || enc::COMPRESS_LEVELS.contains(&e)
}

/// Server message types.
mod msg {
    pub const FRAMEBUFFER_UPDATE: u8 = 0;
    pub const SET_COLOUR_MAP_ENTRIES: u8 = 1;
    pub const BELL: u8 = 2;
    pub const SERVER_CUT_TEXT: u8 = 3;
    pub const QEMU: u8 = 255;
    pub const QEMU_AUDIO: u8 = 1;
    pub const QEMU_AUDIO_END: u16 = 0;
    pub const QEMU_AUDIO_BEGIN: u16 = 1;
    pub const QEMU_AUDIO_DATA: u16 = 2;
}

/// ServerInit's fixed part: width, height, pixel format, name length.
const SERVER_INIT_LEN: usize = 24;
/// The largest header the parser holds.
const MAX_HEADER: usize = SERVER_INIT_LEN;

macro_rules! need {
    ($m:expr, $n:expr) => {{
        let n: usize = $n;
        if $m.len() < n {
            return Ok(Step::Need(n));
        }
    }};
}

/// Where the parser goes after a message (or rectangle) and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Message,
    /// This many rectangles of the current FramebufferUpdate are still to come.
    Rect(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ServerInit,
    /// A header is being buffered: of a message, or of a rectangle (`Rect`).
    Header(Next),
    /// The payload of the last header, streamed (`pass`) or skipped.
    Payload {
        remaining: u64,
        pass: bool,
        then: Next,
    },
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Need(usize),
    /// The buffered bytes are a whole header; `payload` bytes follow.
    Header {
        needs: Needs,
        payload: u64,
        then: Next,
    },
}

fn take<'a>(input: &mut &'a [u8], n: u64) -> &'a [u8] {
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

/// Which header the parser has just read (for an [`Observer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// ServerInit's fixed part (24 bytes); its payload is the desktop name.
    ServerInit,
    /// A server message header (the first byte is its type).
    Message,
    /// A rectangle header of a FramebufferUpdate (12 bytes, 16 for the encodings with a
    /// length: then the payload is the compressed data).
    Rect,
}

/// Watches the parse (the recording's key point indexer): every header at its stream
/// offset, the payload bytes after it, and the end of each message. The relay's parser
/// has none (the no-op `()`, compiled away).
pub trait Observer {
    /// A header, whose first byte is at stream offset `at` (bytes pushed before it).
    fn header(&mut self, _at: u64, _kind: HeaderKind, _bytes: &[u8]) {}
    /// Payload bytes of the last header (rectangle data, a name, cut text…), in order.
    fn payload(&mut self, _bytes: &[u8]) {}
    /// The message (a FramebufferUpdate with all its rectangles) is complete.
    fn message_end(&mut self) {}
}

impl Observer for () {}

fn check_bpp(bpp: u8) -> Result<u64, RfbError> {
    match bpp {
        8 | 16 | 32 => Ok(u64::from(bpp / 8)),
        other => Err(RfbError::ServerPixelFormat(other)),
    }
}

/// Streaming, sans-IO parser of the VNC server → browser byte stream from ServerInit
/// on. [`ServerFilter::push`] appends to `out` what may reach the visitor: every byte,
/// except clipboard messages the link's policy does not let out, which are removed
/// whole. For any split of the same input into pushes the output is identical, and
/// never longer than the input.
#[derive(Debug)]
pub struct ServerFilter {
    policy: ClipboardPolicy,
    share: PixelFormatShare,
    /// Bytes per pixel from ServerInit.
    server_bytes_pp: u64,
    state: State,
    buf: Vec<u8>,
    need: usize,
    messages: u64,
    clipboard_dropped: u64,
    /// Bytes pushed so far.
    offset: u64,
}

impl ServerFilter {
    /// A parser for a session under `policy` (already reduced for view-only, see
    /// [`ClipboardPolicy::effective`]), sharing `share` with the session's client filter.
    pub fn new(policy: ClipboardPolicy, share: PixelFormatShare) -> Self {
        ServerFilter {
            policy,
            share,
            server_bytes_pp: 4,
            state: State::ServerInit,
            buf: Vec::with_capacity(MAX_HEADER),
            need: SERVER_INIT_LEN,
            messages: 0,
            clipboard_dropped: 0,
            offset: 0,
        }
    }

    /// Clipboard messages removed so far.
    pub fn clipboard_dropped(&self) -> u64 {
        self.clipboard_dropped
    }

    /// Server messages and rectangles seen so far (ServerInit included).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes of an incomplete header currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most bytes the parser ever holds.
    pub const fn max_buffered() -> usize {
        MAX_HEADER
    }

    /// Feed bytes from the server; append to `out` what may go to the visitor. After an
    /// error the parser stays failed and the session must end.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RfbError> {
        self.push_observed(input, out, &mut ())
    }

    /// [`ServerFilter::push`], telling `obs` what it parses.
    pub fn push_observed<O: Observer>(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        obs: &mut O,
    ) -> Result<(), RfbError> {
        if self.state == State::Failed {
            return Err(RfbError::FilterFailed);
        }
        let r = self.push_inner(input, out, obs);
        if r.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        r
    }

    fn push_inner<O: Observer>(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        obs: &mut O,
    ) -> Result<(), RfbError> {
        loop {
            match self.state {
                State::Failed => return Err(RfbError::FilterFailed),
                State::Payload {
                    remaining,
                    pass,
                    then,
                } => {
                    if remaining == 0 {
                        if then == Next::Message {
                            obs.message_end();
                        }
                        self.state = State::Header(then);
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let chunk = take(&mut input, remaining);
                    self.offset += chunk.len() as u64;
                    obs.payload(chunk);
                    if pass {
                        out.extend_from_slice(chunk);
                    }
                    let remaining = remaining.saturating_sub(chunk.len() as u64);
                    self.state = State::Payload {
                        remaining,
                        pass,
                        then,
                    };
                }
                State::ServerInit | State::Header(_) => {
                    let missing = self.need.saturating_sub(self.buf.len());
                    let chunk = take(&mut input, missing as u64);
                    self.offset += chunk.len() as u64;
                    self.buf.extend_from_slice(chunk);
                    if self.buf.len() < self.need {
                        return Ok(());
                    }
                    match self.step()? {
                        Step::Need(n) => {
                            if n <= self.buf.len() || n > MAX_HEADER {
                                return Err(RfbError::Internal);
                            }
                            self.need = n;
                        }
                        Step::Header {
                            needs,
                            payload,
                            then,
                        } => {
                            self.messages += 1;
                            let kind = match self.state {
                                State::ServerInit => HeaderKind::ServerInit,
                                State::Header(Next::Rect(_)) => HeaderKind::Rect,
                                _ => HeaderKind::Message,
                            };
                            let at = self.offset - self.buf.len() as u64;
                            obs.header(at, kind, &self.buf);
                            let pass = needs.allowed_by(self.policy);
                            if pass {
                                out.extend_from_slice(&self.buf);
                            } else {
                                self.clipboard_dropped += 1;
                            }
                            self.buf.clear();
                            self.need = match then {
                                Next::Message => 1,
                                Next::Rect(_) => 12,
                            };
                            self.state = State::Payload {
                                remaining: payload,
                                pass,
                                then,
                            };
                        }
                    }
                }
            }
        }
    }

    /// Judge the buffered header.
    fn step(&mut self) -> Result<Step, RfbError> {
        let m = self.buf.as_slice();
        match self.state {
            State::ServerInit => {
                need!(m, SERVER_INIT_LEN);
                self.server_bytes_pp = check_bpp(byte_at(m, 4)?)?;
                Ok(Step::Header {
                    needs: Needs::NOTHING,
                    payload: u64::from(u32_at(m, 20)?),
                    then: Next::Message,
                })
            }
            State::Header(Next::Rect(left)) => self.step_rect(left),
            State::Header(Next::Message) => step_message(m),
            State::Payload { .. } | State::Failed => Err(RfbError::Internal),
        }
    }

    fn bytes_per_pixel(&self) -> Result<u64, RfbError> {
        match self.share.bits_per_pixel() {
            Some(b) => check_bpp(b),
            None => Ok(self.server_bytes_pp),
        }
    }

    /// A rectangle header of a FramebufferUpdate (`left` rectangles to go, this one
    /// included).
    fn step_rect(&self, left: u16) -> Result<Step, RfbError> {
        let m = self.buf.as_slice();
        need!(m, 12);
        let w = u64::from(u16_at(m, 4)?);
        let h = u64::from(u16_at(m, 6)?);
        let encoding = i32::from_be_bytes(u32_at(m, 8)?.to_be_bytes());
        let after = match left.saturating_sub(1) {
            0 => Next::Message,
            n => Next::Rect(n),
        };
        let payload = match encoding {
            enc::RAW => w * h * self.bytes_per_pixel()?,
            enc::COPY_RECT => 4,
            enc::ZLIB | enc::ZRLE | enc::ZYWRLE => {
                need!(m, 16);
                u64::from(u32_at(m, 12)?)
            }
            enc::DESKTOP_SIZE
            | enc::POINTER_TYPE_CHANGE
            | enc::QEMU_EXT_KEY_EVENT
            | enc::QEMU_AUDIO => 0,
            enc::LAST_RECT => {
                return Ok(Step::Header {
                    needs: Needs::NOTHING,
                    payload: 0,
                    then: Next::Message,
                })
            }
            enc::QEMU_LED_STATE => 1,
            enc::CURSOR => w * h * self.bytes_per_pixel()? + w.div_ceil(8) * h,
            enc::EXTENDED_DESKTOP_SIZE => {
                need!(m, 16);
                16 * u64::from(byte_at(m, 12)?)
            }
            other => return Err(RfbError::UnexpectedEncoding(other)),
        };
        Ok(Step::Header {
            needs: Needs::NOTHING,
            payload,
            then: after,
        })
    }
}

/// A server message header.
fn step_message(m: &[u8]) -> Result<Step, RfbError> {
    let plain = |payload: u64| {
        Ok(Step::Header {
            needs: Needs::NOTHING,
            payload,
            then: Next::Message,
        })
    };
    match byte_at(m, 0)? {
        msg::FRAMEBUFFER_UPDATE => {
            need!(m, 4);
            let then = match u16_at(m, 2)? {
                0 => Next::Message,
                n => Next::Rect(n),
            };
            Ok(Step::Header {
                needs: Needs::NOTHING,
                payload: 0,
                then,
            })
        }
        msg::SET_COLOUR_MAP_ENTRIES => {
            need!(m, 6);
            plain(6 * u64::from(u16_at(m, 4)?))
        }
        msg::BELL => plain(0),
        msg::SERVER_CUT_TEXT => {
            need!(m, 8);
            let signed = i32::from_be_bytes(u32_at(m, 4)?.to_be_bytes());
            let len = u64::from(signed.unsigned_abs());
            if signed >= 0 {
                return Ok(Step::Header {
                    needs: Needs::FROM_GUEST,
                    payload: len,
                    then: Next::Message,
                });
            }
            if len < 4 {
                return Err(RfbError::MalformedServerMessage(
                    "extended clipboard message without flags",
                ));
            }
            need!(m, 12);
            Ok(Step::Header {
                needs: server_ext_needs(u32_at(m, 8)?),
                payload: len - 4,
                then: Next::Message,
            })
        }
        msg::QEMU => {
            need!(m, 2);
            if byte_at(m, 1)? != msg::QEMU_AUDIO {
                return Err(RfbError::MalformedServerMessage("unknown QEMU message"));
            }
            need!(m, 4);
            match u16_at(m, 2)? {
                msg::QEMU_AUDIO_END | msg::QEMU_AUDIO_BEGIN => plain(0),
                msg::QEMU_AUDIO_DATA => {
                    need!(m, 8);
                    plain(u64::from(u32_at(m, 4)?))
                }
                _ => Err(RfbError::MalformedServerMessage(
                    "unknown QEMU audio message",
                )),
            }
        }
        other => Err(RfbError::UnknownServerMessage(other)),
    }
}

#[cfg(test)]
mod tests;
