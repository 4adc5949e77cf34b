//! Counters, rendered as Prometheus text on the admin listener's `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters (monotonic unless named as a gauge).
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_started: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub bytes_to_console: AtomicU64,
    pub redemptions: AtomicU64,
    pub redemptions_refused: AtomicU64,
    pub password_failures: AtomicU64,
    pub lockouts: AtomicU64,
    pub rate_limited: AtomicU64,
    pub hash_pool_full: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub proxy_header_failures: AtomicU64,
    pub input_messages_dropped: AtomicU64,
    pub clipboard_dropped_from_visitor: AtomicU64,
    pub clipboard_dropped_from_console: AtomicU64,
    pub links_created: AtomicU64,
    pub links_revoked: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `live_sessions` and `open_connections` are gauges.
    pub fn render(&self, live_sessions: usize, open_connections: usize) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 18] = [
            ("vmgw_sessions_started_total", "Console sessions opened.", &self.sessions_started),
            ("vmgw_sessions_ended_total", "Console sessions closed.", &self.sessions_ended),
            ("vmgw_relayed_bytes_to_client_total", "Bytes relayed from consoles to visitors.", &self.bytes_to_client),
            ("vmgw_relayed_bytes_to_console_total", "Bytes relayed from visitors to consoles.", &self.bytes_to_console),
            ("vmgw_link_redemptions_total", "Successful token/password exchanges.", &self.redemptions),
            ("vmgw_link_redemptions_refused_total", "Exchanges refused (expired, revoked, exhausted, ...).", &self.redemptions_refused),
            ("vmgw_password_failures_total", "Wrong link passwords.", &self.password_failures),
            ("vmgw_lockouts_total", "Links locked after repeated wrong passwords.", &self.lockouts),
            ("vmgw_rate_limit_rejections_total", "Requests refused by rate limits.", &self.rate_limited),
            ("vmgw_password_pool_full_total", "Exchanges refused because the hashing pool was full.", &self.hash_pool_full),
            ("vmgw_connections_refused_total", "Connections refused by connection caps.", &self.connections_refused),
            ("vmgw_tls_handshake_failures_total", "Failed or timed-out TLS handshakes.", &self.tls_handshake_failures),
            ("vmgw_proxy_header_failures_total", "Connections from trusted proxies closed for a malformed, missing or late PROXY header.", &self.proxy_header_failures),
            ("vmgw_view_only_input_dropped_total", "Input messages dropped on view-only sessions.", &self.input_messages_dropped),
            ("vmgw_clipboard_dropped_from_visitor_total", "Clipboard messages from visitors dropped by their link's clipboard policy.", &self.clipboard_dropped_from_visitor),
            ("vmgw_clipboard_dropped_from_console_total", "Clipboard messages from consoles kept from visitors by their link's clipboard policy.", &self.clipboard_dropped_from_console),
            ("vmgw_links_created_total", "Links created.", &self.links_created),
            ("vmgw_links_revoked_total", "Links revoked.", &self.links_revoked),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP vmgw_sessions Live console sessions.");
        let _ = writeln!(out, "# TYPE vmgw_sessions gauge");
        let _ = writeln!(out, "vmgw_sessions {live_sessions}");
        let _ = writeln!(
            out,
            "# HELP vmgw_public_connections Open connections on the public listener."
        );
        let _ = writeln!(out, "# TYPE vmgw_public_connections gauge");
        let _ = writeln!(out, "vmgw_public_connections {open_connections}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.redemptions);
        Metrics::add(&m.bytes_to_client, 42);
        let text = m.render(3, 7);
        assert!(text.contains("vmgw_link_redemptions_total 1\n"));
        assert!(text.contains("vmgw_relayed_bytes_to_client_total 42\n"));
        assert!(text.contains("vmgw_sessions 3\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.split(' ');
            let (name, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(
                name.starts_with("vmgw_") && value.parse::<u64>().is_ok(),
                "{line}"
            );
        }
    }
}
