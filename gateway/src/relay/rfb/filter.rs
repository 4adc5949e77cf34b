//! The streaming filter of everything the browser sends after the handshakes.

use super::clipboard::{client_ext_needs, Needs};
use super::{
    byte_at, msg, u16_at, u32_at, PixelFormatShare, RfbError, RfbLimits,
    ENCODING_EXTENDED_CLIPBOARD, MAX_AUDIO_FREQ, MAX_FENCE_PAYLOAD,
};
use crate::model::clipboard::ClipboardPolicy;

/// Returns `Step::Need(n)` from the enclosing function unless `m` already has `n` bytes.
macro_rules! need {
    ($m:expr, $n:expr) => {{
        let n: usize = $n;
        if $m.len() < n {
            return Ok(Step::Need(n));
        }
    }};
}

/// Whether a message is an input (dropped in view-only mode) or concerns only
/// what the client sees (always passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Display,
    Input,
    /// Clipboard traffic: passed when the link's clipboard policy allows what it needs.
    Clipboard(Needs),
}

/// Outcome of inspecting the bytes of the current message buffered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The message needs at least this many bytes in total before it can be
    /// judged further (always more than are buffered).
    Need(usize),
    /// The buffered bytes are the whole message.
    Complete(Class),
    /// The buffered bytes are the header; `payload` more bytes follow, which
    /// are streamed through (or skipped) without buffering.
    Stream { class: Class, payload: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the one-byte ClientInit.
    ClientInit,
    /// Accumulating a message in the buffer until `need` bytes are present.
    Message,
    /// Streaming (`pass`) or skipping the payload of a large message.
    Payload { remaining: usize, pass: bool },
    /// A previous push failed; the session must be closed.
    Failed,
}

/// Split off at most `n` bytes from the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

/// Validate the pixel format of a complete SetPixelFormat message: the
/// bits-per-pixel values RFC 6143 allows (and QEMU accepts), a depth that fits,
/// and colour shifts inside the pixel (QEMU shifts by them unchecked).
fn check_pixel_format(m: &[u8]) -> Result<(), RfbError> {
    let bpp = byte_at(m, 4)?;
    let depth = byte_at(m, 5)?;
    let true_colour = byte_at(m, 7)? != 0;
    if !matches!(bpp, 8 | 16 | 32) {
        return Err(RfbError::InvalidPixelFormat(
            "bits-per-pixel must be 8, 16 or 32",
        ));
    }
    if depth > bpp {
        return Err(RfbError::InvalidPixelFormat("depth exceeds bits-per-pixel"));
    }
    if true_colour {
        for i in 14..17 {
            if byte_at(m, i)? >= bpp {
                return Err(RfbError::InvalidPixelFormat(
                    "colour shift outside the pixel",
                ));
            }
        }
    }
    Ok(())
}

/// Streaming, sans-IO validator of the browser → VNC server byte stream after
/// the security handshake: ClientInit, then client messages.
///
/// [`ClientFilter::push`] appends to `out` the bytes that may go to the
/// server. For any split of the same input into pushes, the concatenated
/// output is identical. Messages whose payload can be large (ClientCutText,
/// gii) are validated on their header and their payload streamed through as
/// it arrives; all other messages are buffered until complete (at most
/// [`ClientFilter::max_buffered`] bytes). The output is never longer than the
/// input, except for the gateway's own update requests on recorded sessions
/// ([`ClientFilter::with_refresh`]).
#[derive(Debug)]
pub struct ClientFilter {
    view_only: bool,
    limits: RfbLimits,
    state: State,
    /// Bytes of the current message (or header) seen so far.
    buf: Vec<u8>,
    /// How many bytes `buf` must hold before the message is judged again.
    need: usize,
    passed: u64,
    dropped: u64,
    /// The link's clipboard policy (already reduced for view-only); `None` keeps the
    /// plain behaviour: cut text is input.
    clipboard: Option<ClipboardPolicy>,
    clipboard_dropped: u64,
    /// Set when the gateway also parses the server stream: SetEncodings is reduced to
    /// the encodings that parser knows, and the pixel format it needs is shared here.
    server_parsing: Option<PixelFormatShare>,
    /// Whether SetEncodings or a FramebufferUpdateRequest has gone out (after which
    /// the pixel format may no longer change when the server stream is parsed).
    pixel_format_frozen: bool,
    /// Recorded sessions: how often the gateway asks for a full screen update (key
    /// points), and when it last did.
    refresh: Option<(std::time::Duration, std::time::Instant)>,
}

/// The FramebufferUpdateRequest the gateway adds for a key point: not incremental, the
/// whole screen (the server clips the rectangle to its framebuffer).
pub const FULL_REFRESH: [u8; 10] = [3, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];

impl ClientFilter {
    /// A filter with default limits except `max_cut_text`.
    pub fn new(view_only: bool, max_cut_text: usize) -> Self {
        Self::with_limits(
            view_only,
            RfbLimits {
                max_cut_text,
                ..RfbLimits::default()
            },
        )
    }

    /// A filter with the given limits.
    pub fn with_limits(view_only: bool, limits: RfbLimits) -> Self {
        Self {
            view_only,
            limits,
            state: State::ClientInit,
            buf: Vec::new(),
            need: 1,
            passed: 0,
            dropped: 0,
            clipboard: None,
            clipboard_dropped: 0,
            server_parsing: None,
            pixel_format_frozen: false,
            refresh: None,
        }
    }

    /// Recorded sessions: every `every`, at the first boundary between the visitor's
    /// messages after that (and once the visitor has set its encodings or asked for an
    /// update), the filter adds a [`FULL_REFRESH`] request of its own, so that the
    /// recording gets a full screen update to start a replay from (a key point).
    pub fn with_refresh(mut self, every: std::time::Duration) -> Self {
        self.refresh = Some((every, std::time::Instant::now()));
        self
    }

    /// Enforces a link's clipboard policy: cut text (classic or extended) passes only in
    /// the directions `policy` allows, and never towards the guest on a view-only link.
    /// The extended clipboard's capability messages always pass.
    pub fn with_clipboard(mut self, policy: ClipboardPolicy) -> Self {
        self.clipboard = Some(policy.effective(self.view_only));
        self
    }

    /// Pairs the filter with a [`super::ServerFilter`]: SetEncodings keeps only the
    /// encodings that parser understands, the pixel format the client sets is shared
    /// with it, and a SetPixelFormat after the first SetEncodings or
    /// FramebufferUpdateRequest is refused (the server could not be followed through it).
    pub fn with_server_parsing(mut self, share: PixelFormatShare) -> Self {
        self.server_parsing = Some(share);
        self
    }

    /// Clipboard messages dropped so far by the clipboard policy.
    pub fn clipboard_dropped(&self) -> u64 {
        self.clipboard_dropped
    }

    /// Whether input messages are dropped.
    pub fn view_only(&self) -> bool {
        self.view_only
    }

    /// Number of messages dropped so far (view-only mode).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Number of messages let through so far (not counting ClientInit).
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Bytes of an incomplete message currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most bytes the filter ever buffers: the largest message it does not
    /// stream (SetEncodings at the configured maximum, or SetDesktopSize with
    /// 255 screens).
    pub fn max_buffered(&self) -> usize {
        let encodings = self
            .limits
            .max_encodings
            .min(usize::from(u16::MAX))
            .saturating_mul(4)
            .saturating_add(4);
        let desktop_size = 8 + 16 * 255;
        encodings.max(desktop_size)
    }

    /// Feed bytes received from the browser; append to `out` what may be sent
    /// to the VNC server. After an error the filter stays failed and the
    /// session must be closed; bytes of the offending message are never
    /// appended.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RfbError> {
        if self.state == State::Failed {
            return Err(RfbError::FilterFailed);
        }
        let result = self.push_inner(input, out);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        } else if let Some((every, last)) = &mut self.refresh {
            if self.state == State::Message
                && self.buf.is_empty()
                && self.pixel_format_frozen
                && last.elapsed() >= *every
            {
                out.extend_from_slice(&FULL_REFRESH);
                *last = std::time::Instant::now();
            }
        }
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RfbError> {
        loop {
            match self.state {
                State::Failed => return Err(RfbError::FilterFailed),
                State::ClientInit => {
                    let Some((&shared, rest)) = input.split_first() else {
                        return Ok(());
                    };
                    input = rest;
                    let force = self.view_only || self.limits.force_shared;
                    out.push(if force { 1 } else { shared });
                    self.state = State::Message;
                    self.need = 1;
                }
                State::Payload { remaining, pass } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let chunk = take(&mut input, remaining);
                    if pass {
                        out.extend_from_slice(chunk);
                    }
                    let remaining = remaining.saturating_sub(chunk.len());
                    self.state = if remaining == 0 {
                        State::Message
                    } else {
                        State::Payload { remaining, pass }
                    };
                }
                State::Message => {
                    let missing = self.need.saturating_sub(self.buf.len());
                    let chunk = take(&mut input, missing);
                    self.buf.reserve_exact(chunk.len());
                    self.buf.extend_from_slice(chunk);
                    if self.buf.len() < self.need {
                        // `input` is exhausted.
                        return Ok(());
                    }
                    match self.step(&self.buf)? {
                        Step::Need(n) => {
                            if n <= self.buf.len() || n > self.max_buffered() {
                                return Err(RfbError::Internal);
                            }
                            self.need = n;
                        }
                        Step::Complete(class) => {
                            if self.allowed(class) {
                                self.emit_complete(out)?;
                            }
                            self.buf.clear();
                            self.need = 1;
                        }
                        Step::Stream { class, payload } => {
                            let pass = self.allowed(class);
                            if pass {
                                out.extend_from_slice(&self.buf);
                            }
                            self.buf.clear();
                            self.need = 1;
                            if payload > 0 {
                                self.state = State::Payload {
                                    remaining: payload,
                                    pass,
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Count the message and say whether it goes through.
    fn allowed(&mut self, class: Class) -> bool {
        if let Class::Clipboard(needs) = class {
            let policy = self.clipboard.unwrap_or(ClipboardPolicy::Both);
            if needs.allowed_by(policy) {
                self.passed += 1;
                return true;
            }
            self.clipboard_dropped += 1;
            return false;
        }
        if self.view_only && class == Class::Input {
            self.dropped += 1;
            false
        } else {
            self.passed += 1;
            true
        }
    }

    /// Emit the complete message in `buf`: SetEncodings reduced to the encodings let
    /// through; SetPixelFormat shared with the server parser (or refused once frozen).
    fn emit_complete(&mut self, out: &mut Vec<u8>) -> Result<(), RfbError> {
        match self.buf.first() {
            Some(&msg::SET_PIXEL_FORMAT) => {
                if let Some(share) = &self.server_parsing {
                    if self.pixel_format_frozen {
                        return Err(RfbError::LatePixelFormat);
                    }
                    share.set_bits_per_pixel(byte_at(&self.buf, 4)?);
                }
            }
            Some(&msg::FRAMEBUFFER_UPDATE_REQUEST | &msg::ENABLE_CONTINUOUS_UPDATES) => {
                self.pixel_format_frozen = true;
            }
            Some(&msg::SET_ENCODINGS) => {
                self.pixel_format_frozen = true;
                return self.emit_encodings(out);
            }
            _ => {}
        }
        out.extend_from_slice(&self.buf);
        Ok(())
    }

    /// Whether SetEncodings keeps the encoding `e` (big-endian bytes).
    fn keeps_encoding(&self, e: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 4]>::try_from(e) else {
            return false;
        };
        let e = i32::from_be_bytes(bytes);
        if e == ENCODING_EXTENDED_CLIPBOARD && !self.limits.allow_extended_clipboard {
            return false;
        }
        self.server_parsing.is_none() || super::server::parses_encoding(e)
    }

    /// Emit the complete SetEncodings in `buf`, without the encodings the gateway does
    /// not let through.
    fn emit_encodings(&self, out: &mut Vec<u8>) -> Result<(), RfbError> {
        let entries = self.buf.get(4..).ok_or(RfbError::Internal)?;
        if entries.chunks_exact(4).all(|e| self.keeps_encoding(e)) {
            out.extend_from_slice(&self.buf);
            return Ok(());
        }
        let kept = entries
            .chunks_exact(4)
            .filter(|e| self.keeps_encoding(e))
            .count();
        let kept = u16::try_from(kept).map_err(|_| RfbError::Internal)?;
        out.extend_from_slice(&[msg::SET_ENCODINGS, 0]);
        out.extend_from_slice(&kept.to_be_bytes());
        for e in entries.chunks_exact(4).filter(|e| self.keeps_encoding(e)) {
            out.extend_from_slice(e);
        }
        Ok(())
    }

    /// Judge the bytes of the current message buffered so far (`m` holds at
    /// least the type byte).
    fn step(&self, m: &[u8]) -> Result<Step, RfbError> {
        match byte_at(m, 0)? {
            msg::SET_PIXEL_FORMAT => {
                need!(m, 20);
                check_pixel_format(m)?;
                Ok(Step::Complete(Class::Display))
            }
            msg::SET_ENCODINGS => {
                need!(m, 4);
                let count = u16_at(m, 2)?;
                if usize::from(count) > self.limits.max_encodings {
                    return Err(RfbError::TooManyEncodings {
                        count,
                        max: self.limits.max_encodings,
                    });
                }
                need!(m, 4 + 4 * usize::from(count));
                Ok(Step::Complete(Class::Display))
            }
            msg::FRAMEBUFFER_UPDATE_REQUEST | msg::ENABLE_CONTINUOUS_UPDATES => {
                need!(m, 10);
                Ok(Step::Complete(Class::Display))
            }
            msg::KEY_EVENT => {
                need!(m, 8);
                Ok(Step::Complete(Class::Input))
            }
            msg::POINTER_EVENT => {
                need!(m, 6);
                Ok(Step::Complete(Class::Input))
            }
            msg::CLIENT_CUT_TEXT => self.step_cut_text(m),
            msg::CLIENT_FENCE => {
                need!(m, 9);
                let len = byte_at(m, 8)?;
                if len > MAX_FENCE_PAYLOAD {
                    return Err(RfbError::FenceTooLong(len));
                }
                need!(m, 9 + usize::from(len));
                Ok(Step::Complete(Class::Display))
            }
            msg::XVP => {
                need!(m, 4);
                Ok(Step::Complete(Class::Input))
            }
            msg::SET_DESKTOP_SIZE => {
                need!(m, 8);
                let screens = byte_at(m, 6)?;
                need!(m, 8 + 16 * usize::from(screens));
                Ok(Step::Complete(Class::Input))
            }
            msg::GII => step_gii(m),
            msg::QEMU => step_qemu(m),
            other => Err(RfbError::UnknownMessageType(other)),
        }
    }

    /// ClientCutText: validated on its header, the payload streamed.
    fn step_cut_text(&self, m: &[u8]) -> Result<Step, RfbError> {
        need!(m, 8);
        // The length is signed: negative means the extended clipboard
        // form with |length| bytes (flags word + data).
        let raw = u32_at(m, 4)?;
        let signed = i32::from_be_bytes(raw.to_be_bytes());
        let len = signed.unsigned_abs();
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > self.limits.max_cut_text {
            return Err(RfbError::CutTextTooLong {
                len,
                max: self.limits.max_cut_text,
            });
        }
        if signed < 0 {
            if !self.limits.allow_extended_clipboard {
                return Err(RfbError::ExtendedClipboardDisabled);
            }
            if len < 4 {
                return Err(RfbError::ExtendedClipboardTooShort { len });
            }
        }
        if self.clipboard.is_none() {
            return Ok(Step::Stream {
                class: Class::Input,
                payload: len_usize,
            });
        }
        if signed >= 0 {
            return Ok(Step::Stream {
                class: Class::Clipboard(Needs::TO_GUEST),
                payload: len_usize,
            });
        }
        // The extended form is judged on its flags word, which is buffered with the header.
        need!(m, 12);
        Ok(Step::Stream {
            class: Class::Clipboard(client_ext_needs(u32_at(m, 8)?)),
            payload: len_usize.saturating_sub(4),
        })
    }
}

/// gii: validated on its header, the payload streamed.
fn step_gii(m: &[u8]) -> Result<Step, RfbError> {
    need!(m, 4);
    let endian_and_subtype = byte_at(m, 1)?;
    let subtype = endian_and_subtype & 0x7f;
    if subtype > 3 {
        return Err(RfbError::UnknownGiiSubtype(subtype));
    }
    let len_bytes = [byte_at(m, 2)?, byte_at(m, 3)?];
    let len = if endian_and_subtype & 0x80 != 0 {
        u16::from_be_bytes(len_bytes)
    } else {
        u16::from_le_bytes(len_bytes)
    };
    Ok(Step::Stream {
        class: Class::Input,
        payload: usize::from(len),
    })
}

/// QEMU client messages (type 255): the extended key event and audio.
fn step_qemu(m: &[u8]) -> Result<Step, RfbError> {
    need!(m, 2);
    match byte_at(m, 1)? {
        msg::QEMU_EXT_KEY_EVENT => {
            need!(m, 12);
            Ok(Step::Complete(Class::Input))
        }
        msg::QEMU_AUDIO => {
            need!(m, 4);
            match u16_at(m, 2)? {
                msg::QEMU_AUDIO_ENABLE | msg::QEMU_AUDIO_DISABLE => {
                    Ok(Step::Complete(Class::Display))
                }
                msg::QEMU_AUDIO_SET_FORMAT => {
                    need!(m, 10);
                    check_audio_format(m)?;
                    Ok(Step::Complete(Class::Display))
                }
                op => Err(RfbError::UnknownQemuAudioOp(op)),
            }
        }
        sub => Err(RfbError::UnknownQemuSubtype(sub)),
    }
}

/// The parameters of a complete QEMU audio set-format message.
fn check_audio_format(m: &[u8]) -> Result<(), RfbError> {
    if byte_at(m, 4)? > 5 {
        return Err(RfbError::InvalidAudioFormat("unknown sample format"));
    }
    if !matches!(byte_at(m, 5)?, 1 | 2) {
        return Err(RfbError::InvalidAudioFormat("channel count must be 1 or 2"));
    }
    let freq = u32_at(m, 6)?;
    if freq == 0 || freq > MAX_AUDIO_FREQ {
        return Err(RfbError::InvalidAudioFormat(
            "frequency must be 1..=48000 Hz",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
