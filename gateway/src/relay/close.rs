//! The WebSocket close codes and reasons a visitor's console connection ends with: the one
//! table of them (the visitor's page shows a message per reason).

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::engine::sessions::EndReason;

/// Why the gateway closes a visitor's console WebSocket: a close code and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 1000 `client_closed`: the visitor closed first.
    ClientClosed,
    /// 1001 `shutdown`: the gateway is shutting down.
    Shutdown,
    /// 1008 `protocol_error`: the visitor sent something the relay refuses.
    ProtocolError,
    /// 4001 `revoked`: the link was revoked.
    Revoked,
    /// 4002 `expired`: the link expired.
    Expired,
    /// 4003 `killed`: an administrator ended the session.
    Killed,
    /// 4008 `idle_timeout`: the visitor sent nothing for too long.
    IdleTimeout,
    /// 4009 `viewers_full`: every viewer slot of the link is taken.
    ViewersFull,
    /// 4010 `console_closed`: the console ended the connection.
    ConsoleClosed,
    /// 4010 `console_unavailable`: the console could not be reached.
    ConsoleUnavailable,
    /// 4011 `view_only`: a view-only link refuses this SPICE channel.
    ViewOnly,
    /// 4012 `recording_failed`: the session's recording could not go on and the gateway
    /// ends recorded sessions then (`recording.on_limit = "end_session"`).
    RecordingFailed,
}

impl Close {
    /// The close code.
    pub const fn code(self) -> u16 {
        match self {
            Close::ClientClosed => 1000,
            Close::Shutdown => 1001,
            Close::ProtocolError => 1008,
            Close::Revoked => 4001,
            Close::Expired => 4002,
            Close::Killed => 4003,
            Close::IdleTimeout => 4008,
            Close::ViewersFull => 4009,
            Close::ConsoleClosed | Close::ConsoleUnavailable => 4010,
            Close::ViewOnly => 4011,
            Close::RecordingFailed => 4012,
        }
    }

    /// The close reason text.
    pub const fn reason(self) -> &'static str {
        match self {
            Close::ClientClosed => "client_closed",
            Close::Shutdown => "shutdown",
            Close::ProtocolError => "protocol_error",
            Close::Revoked => "revoked",
            Close::Expired => "expired",
            Close::Killed => "killed",
            Close::IdleTimeout => "idle_timeout",
            Close::ViewersFull => "viewers_full",
            Close::ConsoleClosed => "console_closed",
            Close::ConsoleUnavailable => "console_unavailable",
            Close::ViewOnly => "view_only",
            Close::RecordingFailed => "recording_failed",
        }
    }

    /// The close frame.
    pub fn frame(self) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(self.code()),
            reason: self.reason().into(),
        }
    }
}

impl From<EndReason> for Close {
    fn from(r: EndReason) -> Self {
        match r {
            EndReason::Revoked => Close::Revoked,
            EndReason::Expired => Close::Expired,
            EndReason::Killed => Close::Killed,
            EndReason::Shutdown => Close::Shutdown,
            EndReason::IdleTimeout => Close::IdleTimeout,
            EndReason::ProtocolError => Close::ProtocolError,
            EndReason::ConsoleClosed => Close::ConsoleClosed,
            EndReason::ClientClosed => Close::ClientClosed,
            EndReason::RecordingFailed => Close::RecordingFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes and texts the visitor's page and the tests rely on.
    #[test]
    fn codes_and_reasons_are_stable() {
        let table = [
            (Close::ClientClosed, 1000, "client_closed"),
            (Close::Shutdown, 1001, "shutdown"),
            (Close::ProtocolError, 1008, "protocol_error"),
            (Close::Revoked, 4001, "revoked"),
            (Close::Expired, 4002, "expired"),
            (Close::Killed, 4003, "killed"),
            (Close::IdleTimeout, 4008, "idle_timeout"),
            (Close::ViewersFull, 4009, "viewers_full"),
            (Close::ConsoleClosed, 4010, "console_closed"),
            (Close::ConsoleUnavailable, 4010, "console_unavailable"),
            (Close::ViewOnly, 4011, "view_only"),
            (Close::RecordingFailed, 4012, "recording_failed"),
        ];
        for (c, code, reason) in table {
            assert_eq!((c.code(), c.reason()), (code, reason), "{c:?}");
            let f = c.frame();
            assert_eq!((u16::from(f.code), f.reason.as_str()), (code, reason));
        }
    }
}
