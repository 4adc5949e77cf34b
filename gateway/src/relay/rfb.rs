//! RFB (VNC, RFC 6143) pieces of the console relay.
//!
//! The gateway terminates the RFB security handshake on both sides:
//!
//! * [`client_handshake`] plays the RFB *server* towards the browser (noVNC) and
//!   offers only security type None: the browser has already been authenticated
//!   by the gateway, and it never negotiates security types with QEMU.
//! * [`backend_handshake`] plays the RFB *client* towards the VNC server (QEMU),
//!   answering VNC Authentication when the server asks for it.
//!
//! After both handshakes the relay forwards bytes. Everything the browser sends
//! goes through a [`ClientFilter`], a sans-IO streaming parser that validates
//! every client message, rejects unknown or malformed ones, and in view-only
//! mode drops input events. Nothing the browser sends reaches QEMU before the
//! gateway's own authentication and both handshakes have completed, and the
//! filter never allocates according to an untrusted length: large payloads
//! (clipboard text, gii) are streamed through or skipped, everything else is
//! buffered in a buffer bounded by [`ClientFilter::max_buffered`].
//!
//! Neither handshake applies a timeout of its own; callers wrap them in
//! `tokio::time::timeout`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Security type "None" (RFC 6143 §7.2.1).
pub const SECURITY_NONE: u8 = 1;
/// Security type "VNC Authentication" (RFC 6143 §7.2.2).
pub const SECURITY_VNC_AUTH: u8 = 2;

/// The ProtocolVersion the gateway announces to browsers.
const VERSION_3_8: &[u8; 12] = b"RFB 003.008\n";
const VERSION_3_7: &[u8; 12] = b"RFB 003.007\n";
const VERSION_3_3: &[u8; 12] = b"RFB 003.003\n";

/// The extended clipboard pseudo-encoding (0xC0A1E5CE as a signed number).
pub const ENCODING_EXTENDED_CLIPBOARD: i32 = -1_063_131_698;

/// Client message types (RFC 6143 §7.5 and the registered extensions).
mod msg {
    pub const SET_PIXEL_FORMAT: u8 = 0;
    pub const SET_ENCODINGS: u8 = 2;
    pub const FRAMEBUFFER_UPDATE_REQUEST: u8 = 3;
    pub const KEY_EVENT: u8 = 4;
    pub const POINTER_EVENT: u8 = 5;
    pub const CLIENT_CUT_TEXT: u8 = 6;
    pub const ENABLE_CONTINUOUS_UPDATES: u8 = 150;
    pub const CLIENT_FENCE: u8 = 248;
    pub const XVP: u8 = 250;
    pub const SET_DESKTOP_SIZE: u8 = 251;
    pub const GII: u8 = 253;
    pub const QEMU: u8 = 255;

    pub const QEMU_EXT_KEY_EVENT: u8 = 0;
    pub const QEMU_AUDIO: u8 = 1;
    pub const QEMU_AUDIO_ENABLE: u16 = 0;
    pub const QEMU_AUDIO_DISABLE: u16 = 1;
    pub const QEMU_AUDIO_SET_FORMAT: u16 = 2;
}

/// Largest ClientFence payload (RFC 6143 §7.7.3 / rfbproto).
const MAX_FENCE_PAYLOAD: u8 = 64;
/// Largest audio sample rate QEMU accepts (ui/vnc.c rejects anything above).
const MAX_AUDIO_FREQ: u32 = 48_000;

/// Errors of the RFB handshakes and of the client message filter. Every error
/// means the session must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RfbError {
    /// The underlying stream failed or ended early.
    #[error("RFB stream I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's ProtocolVersion message is not of the form `RFB xxx.yyy\n`.
    #[error("malformed RFB ProtocolVersion message {0:?}")]
    MalformedVersion(String),
    /// A well-formed ProtocolVersion this gateway does not speak.
    #[error("unsupported RFB protocol version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version number as sent.
        major: u16,
        /// Minor version number as sent.
        minor: u16,
    },
    /// The VNC server refused the connection and gave this (sanitised) reason.
    #[error("VNC server refused the connection: {0}")]
    ServerRefused(String),
    /// The VNC server offers neither None nor VNC Authentication.
    #[error("VNC server offers no supported security type (offered: {offered:?})")]
    NoSupportedSecurityType {
        /// The security types the server offered (at most 255).
        offered: Vec<u8>,
    },
    /// The VNC server demands VNC Authentication but no password is configured.
    #[error("VNC server requires VNC authentication but no password is configured")]
    PasswordRequired,
    /// The VNC server reported a failed SecurityResult.
    #[error(
        "VNC server rejected the security handshake (status {status}): {}",
        reason.as_deref().unwrap_or("no reason given")
    )]
    SecurityFailed {
        /// The SecurityResult status word (non-zero).
        status: u32,
        /// The sanitised reason string (RFB 3.8 only).
        reason: Option<String>,
    },
    /// The browser picked a security type the gateway did not offer.
    #[error("client chose security type {0} but only None (1) was offered")]
    ClientSecurityType(u8),
    /// A client message type that is neither RFC 6143 nor a known extension.
    #[error("unknown RFB client message type {0}")]
    UnknownMessageType(u8),
    /// SetEncodings with more entries than allowed.
    #[error("SetEncodings with {count} entries exceeds the limit of {max}")]
    TooManyEncodings {
        /// Entry count announced by the client.
        count: u16,
        /// Configured limit.
        max: usize,
    },
    /// ClientCutText longer than allowed (`len` is the absolute length).
    #[error("ClientCutText of {len} bytes exceeds the limit of {max}")]
    CutTextTooLong {
        /// Absolute payload length announced by the client.
        len: u32,
        /// Configured limit.
        max: usize,
    },
    /// Extended clipboard message (negative ClientCutText length) too short to
    /// hold its 4-byte flags word.
    #[error("extended clipboard message of {len} bytes lacks its flags word")]
    ExtendedClipboardTooShort {
        /// Absolute payload length announced by the client.
        len: u32,
    },
    /// Extended clipboard message while [`RfbLimits::allow_extended_clipboard`]
    /// is off.
    #[error("extended clipboard messages are disabled")]
    ExtendedClipboardDisabled,
    /// SetPixelFormat with an invalid pixel format.
    #[error("invalid pixel format: {0}")]
    InvalidPixelFormat(&'static str),
    /// ClientFence payload longer than 64 bytes.
    #[error("ClientFence payload of {0} bytes exceeds 64")]
    FenceTooLong(u8),
    /// gii message with an unknown sub-type.
    #[error("unknown gii sub-type {0}")]
    UnknownGiiSubtype(u8),
    /// QEMU client message (255) with an unknown sub-type.
    #[error("unknown QEMU client message sub-type {0}")]
    UnknownQemuSubtype(u8),
    /// QEMU audio message with an unknown operation.
    #[error("unknown QEMU audio operation {0}")]
    UnknownQemuAudioOp(u16),
    /// QEMU audio set-format message with invalid parameters.
    #[error("invalid QEMU audio format: {0}")]
    InvalidAudioFormat(&'static str),
    /// [`ClientFilter::push`] was called again after it had failed.
    #[error("RFB client filter already failed; the session must be closed")]
    FilterFailed,
    /// An internal invariant did not hold (a bug; never caused by input alone).
    #[error("internal RFB filter error")]
    Internal,
}

/// Bounds and policy for RFB parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfbLimits {
    /// Largest ClientCutText payload (absolute length, so also the extended
    /// clipboard form). Default 1 MiB, which is also QEMU's own limit.
    pub max_cut_text: usize,
    /// Largest number of entries in SetEncodings. Default 1024. The filter
    /// buffers a SetEncodings message whole, i.e. up to `4 + 4 * max_encodings`
    /// bytes.
    pub max_encodings: usize,
    /// Largest reason string read from the VNC server; longer reasons are
    /// truncated (never allocated in full). Default 1 KiB.
    pub max_reason_len: usize,
    /// Rewrite the ClientInit shared flag to 1 so that a browser cannot ask
    /// QEMU for exclusive access, which disconnects every other viewer.
    /// Default true; view-only filters always force it.
    pub force_shared: bool,
    /// Let extended clipboard messages (negative ClientCutText length) through.
    /// Default true. When false the filter removes the extended clipboard
    /// pseudo-encoding from SetEncodings, so QEMU never enables the extension
    /// (and never runs its zlib clipboard code for this client), and rejects
    /// extended clipboard messages.
    pub allow_extended_clipboard: bool,
}

impl Default for RfbLimits {
    fn default() -> Self {
        Self {
            max_cut_text: 1 << 20,
            max_encodings: 1024,
            max_reason_len: 1024,
            force_shared: true,
            allow_extended_clipboard: true,
        }
    }
}

// ---------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------

/// The three protocol versions RFC 6143 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    fn wire(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => VERSION_3_3,
            Version::V3_7 => VERSION_3_7,
            Version::V3_8 => VERSION_3_8,
        }
    }
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Parse `RFB xxx.yyy\n` into (major, minor).
fn parse_version(buf: &[u8; 12]) -> Result<(u16, u16), RfbError> {
    let malformed = || RfbError::MalformedVersion(escape_bytes(buf));
    let [b'R', b'F', b'B', b' ', a, b, c, b'.', d, e, f, b'\n'] = *buf else {
        return Err(malformed());
    };
    let digits = |x: u8, y: u8, z: u8| -> Option<u16> {
        if x.is_ascii_digit() && y.is_ascii_digit() && z.is_ascii_digit() {
            Some(u16::from(x - b'0') * 100 + u16::from(y - b'0') * 10 + u16::from(z - b'0'))
        } else {
            None
        }
    };
    match (digits(a, b, c), digits(d, e, f)) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(malformed()),
    }
}

/// Map a 3.x minor version as RFC 6143 §7.1.1 asks: 3.7 and 3.8 are
/// themselves, later minors speak 3.8 (as noVNC treats them), and the
/// nonstandard 3.4–3.6 are treated as 3.3.
fn map_minor(major: u16, minor: u16) -> Result<Version, RfbError> {
    match minor {
        3..=6 => Ok(Version::V3_3),
        7 => Ok(Version::V3_7),
        8.. => Ok(Version::V3_8),
        _ => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Version the gateway speaks with a VNC server that announced `buf`.
fn server_version(buf: &[u8; 12]) -> Result<Version, RfbError> {
    match parse_version(buf)? {
        (3, minor) => map_minor(3, minor),
        // RealVNC 4.x/5.x and Intel AMT announce 4.x/5.x and speak 3.8.
        (4 | 5, _) => Ok(Version::V3_8),
        (major, minor) => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Version the gateway speaks with a browser that answered `buf` to our 3.8.
fn client_version(buf: &[u8; 12]) -> Result<Version, RfbError> {
    match parse_version(buf)? {
        (3, minor) => map_minor(3, minor),
        (major, minor) => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Replace control characters so a server-provided string is safe to log.
/// Trailing NULs are dropped: QEMU counts the C string terminator in the
/// length of its "Authentication failed" reason.
fn sanitize(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or(bytes))
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Read an RFB reason string (u32 length + bytes), reading and allocating at
/// most `max` bytes of it. The remainder, if any, is left unread: every caller
/// fails the session right after.
async fn read_reason<S: AsyncRead + Unpin>(s: &mut S, max: usize) -> Result<String, RfbError> {
    let len = s.read_u32().await?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let take = len.min(max);
    let mut bytes = vec![0u8; take];
    s.read_exact(&mut bytes).await?;
    let mut reason = sanitize(&bytes);
    if len > take {
        reason.push_str(" [truncated]");
    }
    Ok(reason)
}

/// The VNC Authentication response to `challenge` (RFC 6143 §7.2.2): DES-ECB
/// of both 8-byte halves with the password, truncated or zero-padded to 8
/// bytes, each byte bit-reversed, as the key.
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&key.into());
    let mut out = [0u8; 16];
    for (dst, src) in out.chunks_exact_mut(8).zip(challenge.chunks_exact(8)) {
        let mut block = [0u8; 8];
        block.copy_from_slice(src);
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        dst.copy_from_slice(&block);
    }
    key.fill(0);
    out
}

/// Read SecurityResult; in 3.8 a failure carries a reason string.
async fn read_security_result<S: AsyncRead + Unpin>(
    s: &mut S,
    version: Version,
    limits: &RfbLimits,
) -> Result<(), RfbError> {
    let status = s.read_u32().await?;
    if status == 0 {
        return Ok(());
    }
    let reason = if version >= Version::V3_8 {
        // Best effort: a server that closes without a reason still failed.
        read_reason(s, limits.max_reason_len).await.ok()
    } else {
        None
    };
    Err(RfbError::SecurityFailed { status, reason })
}

async fn vnc_authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &[u8],
) -> Result<(), RfbError> {
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).await?;
    let response = vnc_auth_response(password, &challenge);
    s.write_all(&response).await?;
    s.flush().await?;
    Ok(())
}

/// Act as an RFB client towards the VNC server (QEMU): version exchange and
/// security handshake. Picks None when offered, else VNC Authentication when
/// `password` is set. On success the stream is positioned right before the
/// ClientInit message, which the caller sends (normally the first byte out of
/// the [`ClientFilter`]).
pub async fn backend_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: Option<&[u8]>,
    limits: &RfbLimits,
) -> Result<(), RfbError> {
    let mut server = [0u8; 12];
    s.read_exact(&mut server).await?;
    let version = server_version(&server)?;
    s.write_all(version.wire()).await?;
    s.flush().await?;

    if version == Version::V3_3 {
        // RFC 6143 A.1: the server decides and sends a u32 security type.
        return match s.read_u32().await? {
            0 => Err(RfbError::ServerRefused(
                read_reason(s, limits.max_reason_len).await?,
            )),
            // A.1: no SecurityResult for None in 3.3.
            1 => Ok(()),
            2 => {
                let password = password.ok_or(RfbError::PasswordRequired)?;
                vnc_authenticate(s, password).await?;
                read_security_result(s, version, limits).await
            }
            other => Err(RfbError::NoSupportedSecurityType {
                offered: vec![u8::try_from(other).unwrap_or(u8::MAX)],
            }),
        };
    }

    let count = s.read_u8().await?;
    if count == 0 {
        return Err(RfbError::ServerRefused(
            read_reason(s, limits.max_reason_len).await?,
        ));
    }
    let mut offered = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        offered.push(s.read_u8().await?);
    }
    if offered.contains(&SECURITY_NONE) {
        s.write_all(&[SECURITY_NONE]).await?;
        s.flush().await?;
        // RFC 6143 A.2: in 3.7 no SecurityResult follows None.
        if version >= Version::V3_8 {
            read_security_result(s, version, limits).await?;
        }
        return Ok(());
    }
    if offered.contains(&SECURITY_VNC_AUTH) {
        let password = password.ok_or(RfbError::PasswordRequired)?;
        s.write_all(&[SECURITY_VNC_AUTH]).await?;
        s.flush().await?;
        vnc_authenticate(s, password).await?;
        return read_security_result(s, version, limits).await;
    }
    Err(RfbError::NoSupportedSecurityType { offered })
}

/// Act as the RFB server towards the browser: announce 3.8, accept a 3.3, 3.7
/// or 3.8 answer, offer only security type None. On success the next bytes
/// the browser sends are its ClientInit; nothing beyond the handshake has been
/// read from the stream.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(), RfbError> {
    s.write_all(VERSION_3_8).await?;
    s.flush().await?;
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).await?;
    let version = client_version(&answer)?;

    if version == Version::V3_3 {
        // RFC 6143 A.1: the server states the type; no SecurityResult for None.
        s.write_all(&u32::from(SECURITY_NONE).to_be_bytes()).await?;
        s.flush().await?;
        return Ok(());
    }

    s.write_all(&[1, SECURITY_NONE]).await?;
    s.flush().await?;
    let choice = s.read_u8().await?;
    if choice != SECURITY_NONE {
        if version >= Version::V3_8 {
            // Best effort courtesy: tell the client why before closing.
            let reason: &[u8] = b"security type not offered";
            let mut msg = Vec::with_capacity(8 + reason.len());
            msg.extend_from_slice(&1u32.to_be_bytes());
            msg.extend_from_slice(&u32::try_from(reason.len()).unwrap_or(0).to_be_bytes());
            msg.extend_from_slice(reason);
            let _ = s.write_all(&msg).await;
            let _ = s.flush().await;
        }
        return Err(RfbError::ClientSecurityType(choice));
    }
    // RFC 6143 §7.1.3 and A.2: SecurityResult follows None only in 3.8.
    if version >= Version::V3_8 {
        s.write_all(&0u32.to_be_bytes()).await?;
        s.flush().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Client → server message filter
// ---------------------------------------------------------------------------

/// Whether a message is an input (dropped in view-only mode) or concerns only
/// what the client sees (always passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Display,
    Input,
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

fn byte_at(m: &[u8], i: usize) -> Result<u8, RfbError> {
    m.get(i).copied().ok_or(RfbError::Internal)
}

fn u16_at(m: &[u8], i: usize) -> Result<u16, RfbError> {
    Ok(u16::from_be_bytes([byte_at(m, i)?, byte_at(m, i + 1)?]))
}

fn u32_at(m: &[u8], i: usize) -> Result<u32, RfbError> {
    Ok(u32::from_be_bytes([
        byte_at(m, i)?,
        byte_at(m, i + 1)?,
        byte_at(m, i + 2)?,
        byte_at(m, i + 3)?,
    ]))
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
/// input.
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
}

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
        }
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
        if self.view_only && class == Class::Input {
            self.dropped += 1;
            false
        } else {
            self.passed += 1;
            true
        }
    }

    /// Emit the complete message in `buf`, rewriting SetEncodings when the
    /// extended clipboard is disabled.
    fn emit_complete(&self, out: &mut Vec<u8>) -> Result<(), RfbError> {
        if self.limits.allow_extended_clipboard || self.buf.first() != Some(&msg::SET_ENCODINGS) {
            out.extend_from_slice(&self.buf);
            return Ok(());
        }
        let entries = self.buf.get(4..).ok_or(RfbError::Internal)?;
        let clip = ENCODING_EXTENDED_CLIPBOARD.to_be_bytes();
        let kept = entries
            .chunks_exact(4)
            .filter(|e| *e != clip.as_slice())
            .count();
        let kept = u16::try_from(kept).map_err(|_| RfbError::Internal)?;
        out.extend_from_slice(&[msg::SET_ENCODINGS, 0]);
        out.extend_from_slice(&kept.to_be_bytes());
        for e in entries.chunks_exact(4).filter(|e| *e != clip.as_slice()) {
            out.extend_from_slice(e);
        }
        Ok(())
    }

    /// Judge the bytes of the current message buffered so far (`m` holds at
    /// least the type byte).
    fn step(&self, m: &[u8]) -> Result<Step, RfbError> {
        /// `Need(n)` unless `m` already has `n` bytes.
        macro_rules! need {
            ($n:expr) => {{
                let n: usize = $n;
                if m.len() < n {
                    return Ok(Step::Need(n));
                }
            }};
        }
        let kind = byte_at(m, 0)?;
        match kind {
            msg::SET_PIXEL_FORMAT => {
                need!(20);
                check_pixel_format(m)?;
                Ok(Step::Complete(Class::Display))
            }
            msg::SET_ENCODINGS => {
                need!(4);
                let count = u16_at(m, 2)?;
                if usize::from(count) > self.limits.max_encodings {
                    return Err(RfbError::TooManyEncodings {
                        count,
                        max: self.limits.max_encodings,
                    });
                }
                need!(4 + 4 * usize::from(count));
                Ok(Step::Complete(Class::Display))
            }
            msg::FRAMEBUFFER_UPDATE_REQUEST => {
                need!(10);
                Ok(Step::Complete(Class::Display))
            }
            msg::KEY_EVENT => {
                need!(8);
                Ok(Step::Complete(Class::Input))
            }
            msg::POINTER_EVENT => {
                need!(6);
                Ok(Step::Complete(Class::Input))
            }
            msg::CLIENT_CUT_TEXT => {
                need!(8);
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
                Ok(Step::Stream {
                    class: Class::Input,
                    payload: len_usize,
                })
            }
            msg::ENABLE_CONTINUOUS_UPDATES => {
                need!(10);
                Ok(Step::Complete(Class::Display))
            }
            msg::CLIENT_FENCE => {
                need!(9);
                let len = byte_at(m, 8)?;
                if len > MAX_FENCE_PAYLOAD {
                    return Err(RfbError::FenceTooLong(len));
                }
                need!(9 + usize::from(len));
                Ok(Step::Complete(Class::Display))
            }
            msg::XVP => {
                need!(4);
                Ok(Step::Complete(Class::Input))
            }
            msg::SET_DESKTOP_SIZE => {
                need!(8);
                let screens = byte_at(m, 6)?;
                need!(8 + 16 * usize::from(screens));
                Ok(Step::Complete(Class::Input))
            }
            msg::GII => {
                need!(4);
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
            msg::QEMU => {
                need!(2);
                match byte_at(m, 1)? {
                    msg::QEMU_EXT_KEY_EVENT => {
                        need!(12);
                        Ok(Step::Complete(Class::Input))
                    }
                    msg::QEMU_AUDIO => {
                        need!(4);
                        match u16_at(m, 2)? {
                            msg::QEMU_AUDIO_ENABLE | msg::QEMU_AUDIO_DISABLE => {
                                Ok(Step::Complete(Class::Display))
                            }
                            msg::QEMU_AUDIO_SET_FORMAT => {
                                need!(10);
                                if byte_at(m, 4)? > 5 {
                                    return Err(RfbError::InvalidAudioFormat(
                                        "unknown sample format",
                                    ));
                                }
                                if !matches!(byte_at(m, 5)?, 1 | 2) {
                                    return Err(RfbError::InvalidAudioFormat(
                                        "channel count must be 1 or 2",
                                    ));
                                }
                                let freq = u32_at(m, 6)?;
                                if freq == 0 || freq > MAX_AUDIO_FREQ {
                                    return Err(RfbError::InvalidAudioFormat(
                                        "frequency must be 1..=48000 Hz",
                                    ));
                                }
                                Ok(Step::Complete(Class::Display))
                            }
                            op => Err(RfbError::UnknownQemuAudioOp(op)),
                        }
                    }
                    sub => Err(RfbError::UnknownQemuSubtype(sub)),
                }
            }
            other => Err(RfbError::UnknownMessageType(other)),
        }
    }
}

/// The handshake fuzz target's body (`fuzz/fuzz_targets/rfb_handshake.rs`, whose corpus
/// also replays in the unit tests), with the never-blocking stream it runs on.
#[doc(hidden)]
pub mod fuzz {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::{backend_handshake, client_handshake, RfbLimits};

    /// In-memory stream that never returns Pending: reads from `input`, swallows writes
    /// (counting them).
    #[derive(Debug)]
    pub struct MemStream<'a> {
        pub input: &'a [u8],
        pub written: usize,
    }

    impl<'a> MemStream<'a> {
        pub fn new(input: &'a [u8]) -> Self {
            MemStream { input, written: 0 }
        }
    }

    impl AsyncRead for MemStream<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining().min(self.input.len());
            let (head, tail) = self.input.split_at(n);
            buf.put_slice(head);
            self.input = tail;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for MemStream<'_> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Polls `f` once; it must be ready (the stream never blocks). Panics otherwise: this
    /// is the fuzz target's check.
    #[allow(clippy::panic)]
    pub fn poll_once<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("handshake pending on an always-ready stream"),
        }
    }

    /// Byte 0 bit 0 selects the side (0: the gateway as RFB server facing the browser,
    /// 1: as RFB client facing the VNC server), bit 1 removes the VNC password; the rest
    /// is everything the peer sends. Each handshake must finish in one poll, write at most
    /// 64 bytes, and keep its error message bounded.
    pub fn handshake(data: &[u8]) {
        let Some((&sel, input)) = data.split_first() else {
            return;
        };
        let mut s = MemStream::new(input);
        let limits = RfbLimits::default();
        let result = if sel & 1 == 0 {
            poll_once(client_handshake(&mut s))
        } else {
            let password: Option<&[u8]> = (sel & 2 == 0).then_some(b"password".as_slice());
            poll_once(backend_handshake(&mut s, password, &limits))
        };
        assert!(s.written <= 64, "wrote {} bytes", s.written);
        if let Err(e) = result {
            assert!(e.to_string().len() < 4096);
        }
    }
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
    use rand::{Rng, SeedableRng};
    use std::future::Future;
    use std::path::PathBuf;
    use tokio::io::duplex;

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

    // ---- DES / VNC authentication -------------------------------------------

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Vectors computed independently with
    /// `openssl enc -des-ecb -K <bit-reversed key> -nopad -provider legacy`.
    #[test]
    fn vnc_auth_response_matches_openssl_vectors() {
        let c1: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let c2: [u8; 16] = hex("f0e1d2c3b4a5968778695a4b3c2d1e0f").try_into().unwrap();
        // key 0e86ceceeef64e26
        assert_eq!(
            vnc_auth_response(b"password", &c1).to_vec(),
            hex("b866924125c8eebb9debc1db61c538e2")
        );
        // truncated to "secretpa": key cea6c64ea62e0e86
        assert_eq!(
            vnc_auth_response(b"secretpassword", &c2).to_vec(),
            hex("5028d4ad714efed10aa8d60fc1a99e95")
        );
        // zero-padded "pw": key 0eee000000000000
        assert_eq!(
            vnc_auth_response(b"pw", &c2).to_vec(),
            hex("2da98d37db999213775993c7793e4dee")
        );
    }

    #[test]
    fn vnc_auth_response_equals_manual_des() {
        let challenge: [u8; 16] = *b"0123456789abcdef";
        let key = [0x0e, 0x86, 0xce, 0xce, 0xee, 0xf6, 0x4e, 0x26];
        let cipher = Des::new(&key.into());
        let mut expected = challenge;
        for half in expected.chunks_exact_mut(8) {
            let mut b = des::cipher::generic_array::GenericArray::clone_from_slice(half);
            cipher.encrypt_block(&mut b);
            half.copy_from_slice(&b);
        }
        assert_eq!(vnc_auth_response(b"password", &challenge), expected);
        assert_ne!(vnc_auth_response(b"passwore", &challenge), expected);
    }

    // ---- handshakes ------------------------------------------------------------

    /// Fail (rather than hang) when a handshake waits for bytes that never come.
    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("handshake test timed out")
    }

    #[tokio::test]
    async fn handshakes_interoperate() {
        let (mut gw_client_side, mut gw_server_side) = duplex(4096);
        let limits = RfbLimits::default();
        let server = tokio::spawn(async move {
            client_handshake(&mut gw_server_side).await.unwrap();
            // The very next byte is ClientInit.
            let init = gw_server_side.read_u8().await.unwrap();
            (init, gw_server_side)
        });
        within(backend_handshake(&mut gw_client_side, None, &limits))
            .await
            .unwrap();
        gw_client_side.write_all(&[1]).await.unwrap();
        let (init, _keep) = within(server).await.unwrap();
        assert_eq!(init, 1);
    }

    /// A scripted VNC server: announce `version`, then run `script`.
    async fn fake_server<F, Fut>(
        version: &'static [u8; 12],
        script: F,
    ) -> (Result<(), RfbError>, Vec<u8>)
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<u8>> + Send,
    {
        fake_server_pw(version, Some(b"password"), script).await
    }

    async fn fake_server_pw<F, Fut>(
        version: &'static [u8; 12],
        password: Option<&'static [u8]>,
        script: F,
    ) -> (Result<(), RfbError>, Vec<u8>)
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<u8>> + Send,
    {
        let (mut ours, mut theirs) = duplex(1 << 16);
        let server = tokio::spawn(async move {
            theirs.write_all(version).await.unwrap();
            let mut v = [0u8; 12];
            theirs.read_exact(&mut v).await.unwrap();
            let mut seen = v.to_vec();
            seen.extend(script(theirs).await);
            seen
        });
        let r = within(backend_handshake(
            &mut ours,
            password,
            &RfbLimits::default(),
        ))
        .await;
        drop(ours);
        (r, within(server).await.unwrap())
    }

    #[tokio::test]
    async fn backend_vnc_auth_against_fake_server() {
        let challenge: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let (r, seen) = fake_server(VERSION_3_8, move |mut s| async move {
            s.write_all(&[2, 16, 2]).await.unwrap(); // Tight (16), VNC auth (2)
            let choice = s.read_u8().await.unwrap();
            s.write_all(&challenge).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            let ok = resp.to_vec() == hex("b866924125c8eebb9debc1db61c538e2");
            s.write_all(&(if ok { 0u32 } else { 1 }).to_be_bytes())
                .await
                .unwrap();
            // ClientInit must follow.
            let init = s.read_u8().await.unwrap_or(0xEE);
            let mut v = vec![choice];
            v.extend_from_slice(&resp);
            v.push(init);
            v
        })
        .await;
        r.unwrap();
        assert_eq!(&seen[..12], VERSION_3_8);
        assert_eq!(seen[12], 2, "must choose VNC auth");
        assert_eq!(
            seen[13..29].to_vec(),
            hex("b866924125c8eebb9debc1db61c538e2")
        );
        // The handshake returned before ClientInit; our `drop` then closed it.
        assert_eq!(seen[29], 0xEE);
    }

    #[tokio::test]
    async fn backend_prefers_none() {
        let (r, seen) = fake_server(VERSION_3_8, |mut s| async move {
            s.write_all(&[2, 2, 1]).await.unwrap();
            let choice = s.read_u8().await.unwrap();
            s.write_all(&0u32.to_be_bytes()).await.unwrap();
            vec![choice]
        })
        .await;
        r.unwrap();
        assert_eq!(seen[12], 1);
    }

    #[tokio::test]
    async fn backend_3_7_none_has_no_security_result() {
        let (r, seen) = fake_server(VERSION_3_7, |mut s| async move {
            s.write_all(&[1, 1]).await.unwrap();
            let choice = s.read_u8().await.unwrap();
            // No SecurityResult: if the client waited for one it would hang;
            // instead it must have returned, closing its side.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            vec![choice]
        })
        .await;
        r.unwrap();
        assert_eq!(&seen[..12], VERSION_3_7, "3.7 server gets a 3.7 answer");
        assert_eq!(seen[12], 1);
    }

    #[tokio::test]
    async fn backend_3_3_none_and_vnc_auth() {
        let (r, seen) = fake_server(VERSION_3_3, |mut s| async move {
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            Vec::new()
        })
        .await;
        r.unwrap();
        assert_eq!(&seen[..12], VERSION_3_3);

        let challenge: [u8; 16] = hex("f0e1d2c3b4a5968778695a4b3c2d1e0f").try_into().unwrap();
        let (r, seen) = fake_server(VERSION_3_3, move |mut s| async move {
            s.write_all(&2u32.to_be_bytes()).await.unwrap();
            s.write_all(&challenge).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            // 3.3 failure: status only, no reason string.
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            resp.to_vec()
        })
        .await;
        match r {
            Err(RfbError::SecurityFailed {
                status: 1,
                reason: None,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            seen[12..].to_vec(),
            vnc_auth_response(b"password", &challenge).to_vec()
        );
    }

    #[tokio::test]
    async fn backend_auth_failure_reason_3_8() {
        let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
            s.write_all(&[1, 2]).await.unwrap();
            s.read_u8().await.unwrap();
            s.write_all(&[0; 16]).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            let reason = b"Authentication failed\n\x1b[31m";
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&(reason.len() as u32).to_be_bytes())
                .await
                .unwrap();
            s.write_all(reason).await.unwrap();
            Vec::new()
        })
        .await;
        match r {
            Err(RfbError::SecurityFailed {
                status: 1,
                reason: Some(reason),
            }) => {
                assert!(reason.starts_with("Authentication failed"));
                assert!(!reason.chars().any(char::is_control), "{reason:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// QEMU 7.2 sends `sizeof("Authentication failed")`, NUL included.
    #[tokio::test]
    async fn backend_auth_failure_reason_qemu_style() {
        let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
            s.write_all(&[1, 2]).await.unwrap();
            s.read_u8().await.unwrap();
            s.write_all(&[7; 16]).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&22u32.to_be_bytes()).await.unwrap();
            s.write_all(b"Authentication failed\0").await.unwrap();
            Vec::new()
        })
        .await;
        match r {
            Err(RfbError::SecurityFailed {
                status: 1,
                reason: Some(reason),
            }) => assert_eq!(reason, "Authentication failed"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn backend_refusal_with_huge_reason_is_capped() {
        let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
            s.write_all(&[0]).await.unwrap();
            s.write_all(&0xFFFF_FFFFu32.to_be_bytes()).await.unwrap();
            let _ = s.write_all(&[b'z'; 5000]).await;
            Vec::new()
        })
        .await;
        match r {
            Err(RfbError::ServerRefused(reason)) => {
                assert!(reason.ends_with("[truncated]"));
                assert_eq!(reason.len(), 1024 + " [truncated]".len());
            }
            other => panic!("{other:?}"),
        }
        let (r, _) = fake_server(VERSION_3_3, |mut s| async move {
            s.write_all(&0u32.to_be_bytes()).await.unwrap();
            s.write_all(&7u32.to_be_bytes()).await.unwrap();
            s.write_all(b"too bad").await.unwrap();
            Vec::new()
        })
        .await;
        assert!(
            matches!(r, Err(RfbError::ServerRefused(ref s)) if s == "too bad"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn backend_without_password_or_usable_type_fails() {
        let (r, _) = fake_server_pw(VERSION_3_8, None, |mut s| async move {
            s.write_all(&[1, 2]).await.unwrap();
            Vec::new()
        })
        .await;
        assert!(matches!(r, Err(RfbError::PasswordRequired)), "{r:?}");
        let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
            s.write_all(&[2, 19, 16]).await.unwrap();
            Vec::new()
        })
        .await;
        match r {
            Err(RfbError::NoSupportedSecurityType { offered }) => assert_eq!(offered, vec![19, 16]),
            other => panic!("{other:?}"),
        }
        let (r, _) = fake_server(VERSION_3_3, |mut s| async move {
            s.write_all(&16u32.to_be_bytes()).await.unwrap();
            Vec::new()
        })
        .await;
        assert!(
            matches!(r, Err(RfbError::NoSupportedSecurityType { .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn backend_rejects_bad_server_versions() {
        for v in [
            b"RFB 003.002\n",
            b"RFB 002.008\n",
            b"RFB 03.0008\n",
            b"HTTP/1.1 200",
            b"RFB 003.008\r",
        ] {
            let (mut ours, mut theirs) = duplex(1024);
            theirs.write_all(v).await.unwrap();
            let r = backend_handshake(&mut ours, None, &RfbLimits::default()).await;
            assert!(
                matches!(
                    r,
                    Err(RfbError::MalformedVersion(_) | RfbError::UnsupportedVersion { .. })
                ),
                "{v:?}: {r:?}"
            );
        }
        // RealVNC 5 speaks 3.8.
        assert_eq!(server_version(b"RFB 005.000\n").unwrap(), Version::V3_8);
        assert_eq!(server_version(b"RFB 003.889\n").unwrap(), Version::V3_8);
    }

    /// A scripted browser: send `answer` after reading our version, then run
    /// `script`; returns the handshake result and everything the browser read.
    async fn fake_browser(
        answer: &'static [u8],
        tail: &'static [u8],
    ) -> (Result<(), RfbError>, Vec<u8>, Vec<u8>) {
        let (mut ours, mut theirs) = duplex(1 << 16);
        let browser = tokio::spawn(async move {
            let mut v = [0u8; 12];
            theirs.read_exact(&mut v).await.unwrap();
            assert_eq!(&v, VERSION_3_8);
            theirs.write_all(answer).await.unwrap();
            theirs.write_all(tail).await.unwrap();
            theirs.shutdown().await.unwrap();
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        let r = within(client_handshake(&mut ours)).await;
        // Whatever the handshake left unread.
        let mut rest = Vec::new();
        within(ours.read_to_end(&mut rest)).await.unwrap();
        drop(ours);
        (r, within(browser).await.unwrap(), rest)
    }

    #[tokio::test]
    async fn client_handshake_3_8_3_7_3_3() {
        // 3.8: types [1] then SecurityResult 0; ClientInit (0x01) stays unread.
        let (r, got, rest) = fake_browser(b"RFB 003.008\n", &[1, 1]).await;
        r.unwrap();
        assert_eq!(got, vec![1, 1, 0, 0, 0, 0]);
        assert_eq!(rest, vec![1]);
        // 3.7: no SecurityResult after None.
        let (r, got, rest) = fake_browser(b"RFB 003.007\n", &[1, 0]).await;
        r.unwrap();
        assert_eq!(got, vec![1, 1]);
        assert_eq!(rest, vec![0]);
        // 3.3: u32 security type 1, nothing read from the client.
        let (r, got, rest) = fake_browser(b"RFB 003.003\n", &[1]).await;
        r.unwrap();
        assert_eq!(got, vec![0, 0, 0, 1]);
        assert_eq!(rest, vec![1]);
        // Later 3.x minors are treated as 3.8.
        let (r, got, _) = fake_browser(b"RFB 003.889\n", &[1, 1]).await;
        r.unwrap();
        assert_eq!(got, vec![1, 1, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn client_handshake_rejects_bad_input() {
        for answer in [
            &b"RFB 003.00\n\n"[..],
            b"RFB 004.000\n",
            b"RFB 003.002\n",
            b"rfb 003.008\n",
            b"RFB 003.0a8\n",
            b"GET / HTTP/1",
        ] {
            let (r, got, _) = fake_browser(answer, &[]).await;
            assert!(
                matches!(
                    r,
                    Err(RfbError::MalformedVersion(_) | RfbError::UnsupportedVersion { .. })
                ),
                "{answer:?}: {r:?}"
            );
            assert!(got.is_empty(), "no security types for a bad version");
        }
        // Choosing VNC auth (2) when only None was offered.
        let (r, got, _) = fake_browser(b"RFB 003.008\n", &[2]).await;
        assert!(matches!(r, Err(RfbError::ClientSecurityType(2))), "{r:?}");
        assert_eq!(&got[..6], &[1, 1, 0, 0, 0, 1], "3.8 failure result");
        // Truncated: EOF before the choice.
        let (r, _, _) = fake_browser(b"RFB 003.008\n", &[]).await;
        assert!(matches!(r, Err(RfbError::Io(_))), "{r:?}");
    }

    // ---- corpus replay -------------------------------------------------------

    /// The fuzz corpora: `$GATEWAY_FUZZ_CORPUS/<target>` when that variable is
    /// set, else `<gateway crate>/../fuzz/corpus/<target>`.
    pub(crate) fn corpus_files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let base = std::env::var_os("GATEWAY_FUZZ_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"));
        let dir = base.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        files
    }

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

    /// Mirrors `fuzz_targets/rfb_handshake.rs`.
    #[test]
    fn replay_rfb_handshake_corpus() {
        for (_path, data) in corpus_files("rfb_handshake") {
            fuzz::handshake(&data);
        }
    }

    #[test]
    fn mem_stream_handshake_smoke() {
        let mut input = b"RFB 003.008\n".to_vec();
        input.push(1);
        let mut s = fuzz::MemStream::new(&input);
        fuzz::poll_once(client_handshake(&mut s)).unwrap();
        assert_eq!(s.written, 12 + 2 + 4);
        let mut input = b"RFB 003.008\n".to_vec();
        input.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
        let mut s = fuzz::MemStream::new(&input);
        fuzz::poll_once(backend_handshake(&mut s, None, &RfbLimits::default())).unwrap();
        assert_eq!(s.written, 13);
    }
}
