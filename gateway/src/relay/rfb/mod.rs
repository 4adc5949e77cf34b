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
//!
//! Layout: this file has the protocol constants, the errors and the limits;
//! `handshake.rs` both handshakes and the VNC authentication response;
//! `filter.rs` the [`ClientFilter`]; `fuzz.rs` the handshake fuzz target's body.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod clipboard;
mod filter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod handshake;
pub mod keys;
pub mod server;

pub use filter::{ClientFilter, FULL_REFRESH};
pub use server::ServerFilter;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The pixel size a visitor's SetPixelFormat chose, shared by its [`ClientFilter`] (which
/// sets it) and the [`ServerFilter`] of the same session (which needs it to count raw
/// pixels). Zero until the visitor sets one (the server's own format applies).
#[derive(Debug, Clone, Default)]
pub struct PixelFormatShare(Arc<AtomicU8>);

impl PixelFormatShare {
    pub fn new() -> Self {
        Self::default()
    }

    fn set_bits_per_pixel(&self, bpp: u8) {
        self.0.store(bpp, Ordering::Relaxed);
    }

    /// Sets the visitor's pixel size as its filter would (fuzzing only).
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn set_bits_per_pixel_for_fuzzing(&self, bpp: u8) {
        self.set_bits_per_pixel(bpp);
    }

    /// The bits per pixel the visitor chose, if it chose.
    fn bits_per_pixel(&self) -> Option<u8> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            b => Some(b),
        }
    }
}
pub use handshake::{backend_handshake, client_handshake, vnc_auth_response};

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

/// Byte `i` of a message the caller has buffered whole (its length was checked first:
/// a short buffer is a bug, not bad input).
fn byte_at(m: &[u8], i: usize) -> Result<u8, RfbError> {
    m.get(i).copied().ok_or(RfbError::Internal)
}

/// The big-endian `u16` at byte `i` of a buffered message.
fn u16_at(m: &[u8], i: usize) -> Result<u16, RfbError> {
    Ok(u16::from_be_bytes([byte_at(m, i)?, byte_at(m, i + 1)?]))
}

/// The big-endian `u32` at byte `i` of a buffered message.
fn u32_at(m: &[u8], i: usize) -> Result<u32, RfbError> {
    Ok(u32::from_be_bytes([
        byte_at(m, i)?,
        byte_at(m, i + 1)?,
        byte_at(m, i + 2)?,
        byte_at(m, i + 3)?,
    ]))
}

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
    /// SetPixelFormat after SetEncodings or a FramebufferUpdateRequest while the server
    /// stream is parsed (the server's messages could no longer be followed).
    #[error("SetPixelFormat after the first SetEncodings or FramebufferUpdateRequest")]
    LatePixelFormat,
    /// A server message type the gateway does not know.
    #[error("unknown RFB server message type {0}")]
    UnknownServerMessage(u8),
    /// A rectangle in an encoding the gateway did not let the visitor negotiate.
    #[error("rectangle in an unexpected encoding {0}")]
    UnexpectedEncoding(i32),
    /// A pixel format with a size the server parser cannot count.
    #[error("server pixel format with {0} bits per pixel")]
    ServerPixelFormat(u8),
    /// A server message whose sizes cannot be right.
    #[error("malformed server message: {0}")]
    MalformedServerMessage(&'static str),
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
