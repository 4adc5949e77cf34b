//! The guest agent's stream inside a SPICE main channel: the clipboard policy, per
//! VDAgent message.
//!
//! Both directions of a main channel carry the agent's protocol in `AGENT_DATA`
//! messages (visitor → guest: `SPICE_MSGC_MAIN_AGENT_DATA`, guest → visitor:
//! `SPICE_MSG_MAIN_AGENT_DATA`). Each one is a chunk of at most
//! [`VD_AGENT_MAX_DATA_SIZE`] bytes that either starts a `VDAgentMessage` (its 20-byte
//! header, then the first bytes of its data) or continues the one before; never the end
//! of one message and the start of the next. spice-server holds both sides to exactly
//! this (its `agent_msg_filter`: a chunk over 2048 bytes, a header cut short, a protocol
//! other than 1, or more bytes than the message has left end the channel), and
//! [`AgentStream`] follows the same rules, one step stricter: a header whose chunk
//! carries more than the message's `size` (spice-server lets that through when `size`
//! is 0, and a guest agent that reads the port as one stream would take the rest for a
//! new message) is refused too. Whatever does not follow them ends the session.
//!
//! The decision is taken once per VDAgent message, at its header, and holds for all its
//! chunks. A message that may not pass is not removed: each of its chunks is replaced by
//! [`FILLER`], a complete VDAgent message of type 0 (no type has that number; guest
//! agents and our page ignore it). So every side sees exactly as many `AGENT_DATA`
//! messages as were sent, and SPICE's agent flow control (one token per `AGENT_DATA`,
//! given back by the receiver) stays exact however many are refused.
//!
//! What passes (the link's policy is already reduced for view-only links):
//!
//! | type | visitor → guest | guest → visitor |
//! | --- | --- | --- |
//! | `CLIPBOARD` (4), `CLIPBOARD_GRAB` (7), `CLIPBOARD_RELEASE` (9) | `to_guest` | `from_guest` |
//! | `CLIPBOARD_REQUEST` (8) | `from_guest` (asks for the guest's text) | `to_guest` (asks for the visitor's) |
//! | `ANNOUNCE_CAPABILITIES` (6) | yes | yes |
//! | `MONITORS_CONFIG` (2), `DISPLAY_CONFIG` (5) | interactive links only | no |
//! | `REPLY` (3) | no | yes |
//! | anything else (mouse state, file transfer, volume, unknown) | no | no |
//!
//! Only `CLIPBOARD` may span several chunks, up to the clipboard limit; every other
//! message must be whole in its first chunk (they are all small), so no continuation
//! chunk ever passes for a message whose type the gateway did not allow for contents.

/// `VD_AGENT_MAX_DATA_SIZE`: the largest `AGENT_DATA` body.
pub const VD_AGENT_MAX_DATA_SIZE: usize = 2048;
/// `VDAgentMessage`: protocol u32, type u32, opaque u64, size u32.
pub const VD_AGENT_HEADER_LEN: usize = 20;
/// `VD_AGENT_PROTOCOL`.
const VD_AGENT_PROTOCOL: u32 = 1;

/// What replaces each chunk of a refused message: protocol 1, type 0, size 0.
pub const FILLER: [u8; VD_AGENT_HEADER_LEN] =
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// VDAgent message types (spice-protocol `vd_agent.h`).
pub mod types {
    pub const MONITORS_CONFIG: u32 = 2;
    pub const REPLY: u32 = 3;
    pub const CLIPBOARD: u32 = 4;
    pub const DISPLAY_CONFIG: u32 = 5;
    pub const ANNOUNCE_CAPABILITIES: u32 = 6;
    pub const CLIPBOARD_GRAB: u32 = 7;
    pub const CLIPBOARD_REQUEST: u32 = 8;
    pub const CLIPBOARD_RELEASE: u32 = 9;
}

use types::*;

/// Who sent an agent stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The visitor (towards the guest's agent).
    Visitor,
    /// The console (the guest's agent, towards the visitor).
    Console,
}

/// A chunk the gateway cannot follow: the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("agent data chunk of {0} bytes (the limit is 2048)")]
    ChunkTooLarge(usize),
    #[error("agent message header cut short ({0} bytes)")]
    ShortHeader(usize),
    #[error("agent protocol {0} (not 1)")]
    Protocol(u32),
    #[error("agent data chunk longer than what its message has left")]
    Overrun,
}

/// How one chunk leaves the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// As it came.
    Pass,
    /// Replaced by [`FILLER`].
    Replace,
}

/// Whether a message of `msg_type` from `sender` passes under `policy` (see the table in
/// the module documentation). `view_only`: the visitor may not change the guest's
/// display either.
pub fn passes(
    sender: Sender,
    msg_type: u32,
    policy: crate::model::clipboard::ClipboardPolicy,
    view_only: bool,
) -> bool {
    match (sender, msg_type) {
        (Sender::Visitor, CLIPBOARD | CLIPBOARD_GRAB | CLIPBOARD_RELEASE) => policy.to_guest(),
        (Sender::Console, CLIPBOARD | CLIPBOARD_GRAB | CLIPBOARD_RELEASE) => policy.from_guest(),
        (Sender::Visitor, CLIPBOARD_REQUEST) => policy.from_guest(),
        (Sender::Console, CLIPBOARD_REQUEST) => policy.to_guest(),
        (_, ANNOUNCE_CAPABILITIES) => true,
        (Sender::Visitor, MONITORS_CONFIG | DISPLAY_CONFIG) => !view_only,
        (Sender::Console, REPLY) => true,
        _ => false,
    }
}

/// Whether `msg_type` is one of the clipboard's messages (their refusals are counted as
/// clipboard drops).
pub fn is_clipboard(msg_type: u32) -> bool {
    matches!(
        msg_type,
        CLIPBOARD | CLIPBOARD_GRAB | CLIPBOARD_REQUEST | CLIPBOARD_RELEASE
    )
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// One direction's agent stream: where its current VDAgent message stands.
#[derive(Debug)]
pub struct AgentStream {
    sender: Sender,
    policy: crate::model::clipboard::ClipboardPolicy,
    view_only: bool,
    /// Largest `CLIPBOARD` message followed (its data: type word, optional selection
    /// word, text); a longer one is refused whole.
    max_clipboard: u32,
    /// Data of the current message still to come in later chunks.
    remaining: u32,
    /// The current message's verdict, for its later chunks.
    pass: bool,
    /// Clipboard messages refused.
    clipboard_refused: u64,
    /// Other messages refused.
    other_refused: u64,
}

impl AgentStream {
    /// A stream from `sender` under `policy` (already reduced for view-only), following
    /// clipboard messages up to `max_clipboard_text` bytes of text.
    pub fn new(
        sender: Sender,
        policy: crate::model::clipboard::ClipboardPolicy,
        view_only: bool,
        max_clipboard_text: usize,
    ) -> Self {
        AgentStream {
            sender,
            policy,
            view_only,
            max_clipboard: u32::try_from(max_clipboard_text)
                .unwrap_or(u32::MAX)
                .saturating_add(8),
            remaining: 0,
            pass: false,
            clipboard_refused: 0,
            other_refused: 0,
        }
    }

    /// Clipboard messages refused so far.
    pub fn clipboard_refused(&self) -> u64 {
        self.clipboard_refused
    }

    /// Other messages refused so far.
    pub fn other_refused(&self) -> u64 {
        self.other_refused
    }

    /// The agent went away (spice-server starts its own parser afresh then).
    pub fn reset(&mut self) {
        self.remaining = 0;
        self.pass = false;
    }

    /// Decides one `AGENT_DATA` body.
    pub fn chunk(&mut self, body: &[u8]) -> Result<Chunk, AgentError> {
        let len = body.len();
        if len > VD_AGENT_MAX_DATA_SIZE {
            return Err(AgentError::ChunkTooLarge(len));
        }
        if self.remaining > 0 {
            // len <= 2048 fits in u32.
            let n = len as u32;
            if n > self.remaining {
                return Err(AgentError::Overrun);
            }
            self.remaining -= n;
            return Ok(if self.pass {
                Chunk::Pass
            } else {
                Chunk::Replace
            });
        }
        if len < VD_AGENT_HEADER_LEN {
            return Err(AgentError::ShortHeader(len));
        }
        let protocol = le32(body, 0);
        if protocol != VD_AGENT_PROTOCOL {
            return Err(AgentError::Protocol(protocol));
        }
        let msg_type = le32(body, 4);
        let size = le32(body, 16);
        let here = (len - VD_AGENT_HEADER_LEN) as u32;
        if here > size {
            return Err(AgentError::Overrun);
        }
        let whole = here == size;
        let fits = if msg_type == CLIPBOARD {
            size <= self.max_clipboard
        } else {
            whole
        };
        self.remaining = size - here;
        self.pass = fits && passes(self.sender, msg_type, self.policy, self.view_only);
        if !self.pass {
            if is_clipboard(msg_type) {
                self.clipboard_refused += 1;
            } else {
                self.other_refused += 1;
            }
        }
        Ok(if self.pass {
            Chunk::Pass
        } else {
            Chunk::Replace
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::model::clipboard::ClipboardPolicy;

    fn message(t: u32, data: &[u8]) -> Vec<u8> {
        let mut m = 1u32.to_le_bytes().to_vec();
        m.extend_from_slice(&t.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m.extend_from_slice(data);
        m
    }

    const ALL: [ClipboardPolicy; 4] = [
        ClipboardPolicy::None,
        ClipboardPolicy::ToGuest,
        ClipboardPolicy::FromGuest,
        ClipboardPolicy::Both,
    ];

    #[test]
    fn the_table() {
        for p in ALL {
            for (sender, t, want) in [
                (Sender::Visitor, CLIPBOARD, p.to_guest()),
                (Sender::Visitor, CLIPBOARD_GRAB, p.to_guest()),
                (Sender::Visitor, CLIPBOARD_RELEASE, p.to_guest()),
                (Sender::Visitor, CLIPBOARD_REQUEST, p.from_guest()),
                (Sender::Console, CLIPBOARD, p.from_guest()),
                (Sender::Console, CLIPBOARD_GRAB, p.from_guest()),
                (Sender::Console, CLIPBOARD_RELEASE, p.from_guest()),
                (Sender::Console, CLIPBOARD_REQUEST, p.to_guest()),
                (Sender::Visitor, ANNOUNCE_CAPABILITIES, true),
                (Sender::Console, ANNOUNCE_CAPABILITIES, true),
                (Sender::Visitor, MONITORS_CONFIG, true),
                (Sender::Console, MONITORS_CONFIG, false),
                (Sender::Console, REPLY, true),
                (Sender::Visitor, REPLY, false),
                (Sender::Visitor, 1, false),  // MOUSE_STATE
                (Sender::Visitor, 10, false), // FILE_XFER_START
                (Sender::Visitor, 12, false), // FILE_XFER_DATA
                (Sender::Console, 11, false), // FILE_XFER_STATUS
                (Sender::Visitor, 0, false),
                (Sender::Console, u32::MAX, false),
            ] {
                assert_eq!(passes(sender, t, p, false), want, "{p} {sender:?} {t}");
            }
            assert!(!passes(Sender::Visitor, MONITORS_CONFIG, p, true));
            assert!(!passes(Sender::Visitor, DISPLAY_CONFIG, p, true));
        }
    }

    #[test]
    fn a_refused_message_is_replaced_chunk_by_chunk_and_counted_once() {
        let text = vec![b'x'; 5000];
        let mut data = 1u32.to_le_bytes().to_vec();
        data.extend_from_slice(&text);
        let m = message(CLIPBOARD, &data);
        let chunks: Vec<&[u8]> = m.chunks(2048).collect();
        assert_eq!(chunks.len(), 3);
        for p in ALL {
            let mut s = AgentStream::new(Sender::Visitor, p, false, 1 << 20);
            let want = if p.to_guest() {
                Chunk::Pass
            } else {
                Chunk::Replace
            };
            for c in &chunks {
                assert_eq!(s.chunk(c), Ok(want));
            }
            assert_eq!(s.clipboard_refused(), u64::from(!p.to_guest()));
            // The next message starts afresh.
            assert_eq!(
                s.chunk(&message(ANNOUNCE_CAPABILITIES, &[0; 8])),
                Ok(Chunk::Pass)
            );
        }
    }

    #[test]
    fn clipboard_text_over_the_limit_is_refused_whole() {
        let mut s = AgentStream::new(Sender::Console, ClipboardPolicy::Both, false, 100);
        // The limit is on the text; the type word and a selection word come on top.
        let mut data = 1u32.to_le_bytes().to_vec();
        data.extend_from_slice(&[b'y'; 105]);
        assert_eq!(s.chunk(&message(CLIPBOARD, &data)), Ok(Chunk::Replace));
        data.pop();
        assert_eq!(s.chunk(&message(CLIPBOARD, &data)), Ok(Chunk::Pass));
        let mut sel = vec![0u8; 4];
        sel.extend_from_slice(&data[..104]);
        assert_eq!(s.chunk(&message(CLIPBOARD, &sel)), Ok(Chunk::Pass));
        assert_eq!(s.clipboard_refused(), 1);
        // A header that claims 4 GiB is followed as a count, never allocated.
        let mut huge = message(CLIPBOARD, &[0; 4]);
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(s.chunk(&huge), Ok(Chunk::Replace));
        assert_eq!(s.chunk(&[0; 2048]), Ok(Chunk::Replace));
    }

    #[test]
    fn other_messages_must_be_whole_in_their_first_chunk() {
        let mut s = AgentStream::new(Sender::Visitor, ClipboardPolicy::Both, false, 1 << 20);
        let mut caps = message(ANNOUNCE_CAPABILITIES, &[0; 8]);
        caps[16..20].copy_from_slice(&4000u32.to_le_bytes());
        assert_eq!(s.chunk(&caps), Ok(Chunk::Replace));
        // Its continuation is replaced too, even when it looks like a clipboard message.
        assert_eq!(
            s.chunk(&message(CLIPBOARD, &[1, 0, 0, 0, b'z'])),
            Ok(Chunk::Replace)
        );
        assert_eq!(s.other_refused(), 1);
    }

    #[test]
    fn malformed_chunks_end_the_stream() {
        let mut s = AgentStream::new(Sender::Visitor, ClipboardPolicy::Both, false, 1 << 20);
        assert_eq!(s.chunk(&[0; 2049]), Err(AgentError::ChunkTooLarge(2049)));
        assert_eq!(s.chunk(&[1, 0, 0, 0]), Err(AgentError::ShortHeader(4)));
        let mut m = message(CLIPBOARD_GRAB, &[1, 0, 0, 0]);
        m[0] = 2;
        assert_eq!(s.chunk(&m), Err(AgentError::Protocol(2)));
        // A size-0 header with a second message behind it in the same chunk (what
        // spice-server lets through): refused.
        let two = [
            message(ANNOUNCE_CAPABILITIES, &[]),
            message(CLIPBOARD, b"\x01\0\0\0smuggled"),
        ]
        .concat();
        assert_eq!(s.chunk(&two), Err(AgentError::Overrun));
        // A continuation longer than what is left.
        let mut start = message(CLIPBOARD, &[1, 0, 0, 0]);
        start[16..20].copy_from_slice(&10u32.to_le_bytes());
        let mut s = AgentStream::new(Sender::Visitor, ClipboardPolicy::Both, false, 1 << 20);
        assert_eq!(s.chunk(&start), Ok(Chunk::Pass));
        assert_eq!(s.chunk(&[0; 7]), Err(AgentError::Overrun));
    }

    #[test]
    fn reset_forgets_a_message_cut_off() {
        let mut s = AgentStream::new(Sender::Console, ClipboardPolicy::None, false, 1 << 20);
        let mut start = message(CLIPBOARD, &[1, 0, 0, 0]);
        start[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(s.chunk(&start), Ok(Chunk::Replace));
        s.reset();
        assert_eq!(
            s.chunk(&message(ANNOUNCE_CAPABILITIES, &[0; 8])),
            Ok(Chunk::Pass)
        );
    }
}
