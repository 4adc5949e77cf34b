//! The log subscriber: the operator's filter (`VMGW_LOG`), except that events which carry
//! console traffic are never logged at any level.
//!
//! At trace level `tungstenite` logs every WebSocket frame and message it reads or writes
//! with its payload (`tungstenite::protocol`: "received frame" / "Sending frame" in hex,
//! "Received message" as text when the bytes are UTF-8), and `tokio_tungstenite` logs
//! around each poll. Through the console relay that payload is whatever a visitor types
//! (passwords typed into the guest included), pastes, or reads on the console. A filter
//! directive cannot lift this: the targets are cut by a separate filter that sees every
//! event after the operator's.

use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

/// Targets (and their sub-targets) whose events can carry console payload.
pub const PAYLOAD_TARGETS: &[&str] = &["tungstenite::protocol", "tokio_tungstenite"];

/// Whether events of `target` are always dropped.
pub fn carries_payload(target: &str) -> bool {
    PAYLOAD_TARGETS.iter().any(|p| {
        target
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The subscriber: `filter` decides, then [`PAYLOAD_TARGETS`] are dropped whatever it
/// said. Install it with `SubscriberInitExt::try_init` (which also routes the `log`
/// records of dependencies such as `tungstenite` through it).
pub fn subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .finish()
        .with(filter_fn(|meta| !carries_payload(meta.target())))
}

#[cfg(test)]
mod tests {
    use super::carries_payload;

    #[test]
    fn payload_targets() {
        for t in [
            "tungstenite::protocol",
            "tungstenite::protocol::frame",
            "tungstenite::protocol::frame::frame",
            "tokio_tungstenite",
            "tokio_tungstenite::compat",
        ] {
            assert!(carries_payload(t), "{t}");
        }
        for t in [
            "tungstenite",
            "tungstenite::handshake::server",
            "tungstenite::protocolx",
            "tokio_tungstenitex",
            "gateway::relay",
        ] {
            assert!(!carries_payload(t), "{t}");
        }
    }
}
