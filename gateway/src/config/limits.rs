//! `[limits]`: every timeout and cap of the gateway, with safe defaults.

use std::time::Duration;

use super::raw::RawLimits;
use super::{count, invalid, secs, ConfigError};

/// Limits and timeouts (all with safe defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A TLS handshake must finish within this (slow handshakes are dropped).
    pub tls_handshake_timeout: Duration,
    /// How often certificate files are checked for a new version (SIGHUP reloads at
    /// once).
    pub tls_reload_poll: Duration,
    /// Request headers must arrive within this (slowloris).
    pub header_read_timeout: Duration,
    /// A whole non-WebSocket request must be answered within this.
    pub request_timeout: Duration,
    /// Open connections on the public listener, and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Open connections on the admin listener (it has its own cap, so it stays
    /// reachable when the public one is full).
    pub max_admin_connections: usize,
    /// Largest request head (headers) accepted.
    pub max_header_bytes: usize,
    /// Largest request body accepted (admin JSON); the visitor exchange is capped at 1 KiB.
    pub max_body_bytes: usize,
    /// Largest WebSocket message or frame from a visitor.
    pub ws_max_message_bytes: usize,
    /// Pings are sent this often; a session silent for `ws_idle_timeout` is closed.
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    /// After its close frame, how long the gateway waits for the visitor's answering
    /// close (reading and discarding what comes before it) so the visitor reads the
    /// close code before the connection ends; then it closes anyway.
    pub ws_close_timeout: Duration,
    /// Bytes read from a console per WebSocket message (and the relay's buffer size).
    pub relay_buffer_bytes: usize,
    /// Session exchanges (`POST /s/session`) per client address per minute.
    pub exchanges_per_ip_per_minute: u32,
    /// Wrong passwords on one link, from any address, before it is locked.
    pub password_failures_before_lockout: u32,
    pub lockout: Duration,
    /// Argon2 hashes running at once; more get 503 + Retry-After.
    pub max_concurrent_hashes: usize,
    /// Largest clipboard text relayed: a visitor's ClientCutText (VNC), and a SPICE
    /// agent clipboard message either way (a longer one is refused whole).
    pub max_cut_text_bytes: usize,
    /// Visitors' grants kept in memory (the store holds them all; past this many the
    /// cache is emptied and grants are read back from the store).
    pub grant_cache_entries: usize,
    /// How long shutdown waits for sessions to close.
    pub shutdown_drain: Duration,
    /// How often revocations made elsewhere (CLI, other gateways) are picked up.
    pub revocation_poll: Duration,
    /// Connecting to a console (TCP or unix socket) must finish within this.
    pub console_connect_timeout: Duration,
    /// Each console handshake must finish within this: the RFB handshake with the
    /// console, the one with the visitor, and the visitor's SPICE link message.
    pub console_handshake_timeout: Duration,
    /// Recent output of a VM's serial port the gateway keeps while its serial console is
    /// open (a viewer that connects gets it first).
    pub serial_scrollback_bytes: usize,
    /// Output queued for one serial-console viewer; a viewer further behind skips output
    /// (and sees a marker where it did) instead of holding up the others.
    pub serial_viewer_queue_bytes: usize,
    /// CPU priority (nice, 0–19) of the threads that set connections up: accepting,
    /// PROXY headers, TLS handshakes and every HTTP request (the visitor exchange, the
    /// WebSocket upgrade, the admin API). Live consoles are relayed on threads at the
    /// gateway's own priority, so a flood of new connections or requests waits for the
    /// consoles instead of slowing them. 0 gives both the same priority.
    pub setup_nice: u8,
    /// Give a crowd's memory back when it leaves: the gateway runs with glibc's
    /// per-thread caches of freed blocks and its fast bins off, and a fixed trim
    /// threshold (it re-executes itself once at start with `GLIBC_TUNABLES` set;
    /// programs it starts get the environment it was given). Otherwise those caches, the
    /// fast bins merged into a thread arena's top, and thread arenas whose free top glibc
    /// keeps after a large block was freed, hold on to a crowd's heap long after its
    /// sessions ended. `false` leaves glibc's defaults; a `glibc.malloc.*` tunable
    /// already in the environment wins.
    pub compact_heap: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            tls_reload_poll: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 9_000,
            max_connections_per_ip: 256,
            max_admin_connections: 256,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            ws_max_message_bytes: 4 << 20,
            ws_ping_interval: Duration::from_secs(20),
            ws_idle_timeout: Duration::from_secs(60),
            ws_close_timeout: Duration::from_secs(3),
            relay_buffer_bytes: 64 * 1024,
            exchanges_per_ip_per_minute: 30,
            password_failures_before_lockout: 5,
            lockout: Duration::from_secs(300),
            max_concurrent_hashes: 2,
            max_cut_text_bytes: 1 << 20,
            grant_cache_entries: 4096,
            shutdown_drain: Duration::from_secs(5),
            revocation_poll: Duration::from_secs(1),
            console_connect_timeout: Duration::from_secs(5),
            console_handshake_timeout: Duration::from_secs(10),
            serial_scrollback_bytes: 64 * 1024,
            serial_viewer_queue_bytes: 256 * 1024,
            setup_nice: 10,
            compact_heap: true,
        }
    }
}

impl RawLimits {
    /// Validates `[limits]`: each value at least 1 (or its own bound), defaults for the
    /// rest.
    pub fn validate(self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let l = self;
        macro_rules! secs {
            ($field:ident, $key:ident) => {
                secs(l.$key, d.$field, concat!("limits.", stringify!($key)))?
            };
        }
        macro_rules! count {
            ($field:ident) => {
                count(l.$field, d.$field, concat!("limits.", stringify!($field)))?
            };
        }
        let limits = Limits {
            tls_handshake_timeout: secs!(tls_handshake_timeout, tls_handshake_timeout_secs),
            tls_reload_poll: secs!(tls_reload_poll, tls_reload_poll_secs),
            header_read_timeout: secs!(header_read_timeout, header_read_timeout_secs),
            request_timeout: secs!(request_timeout, request_timeout_secs),
            max_connections: count!(max_connections),
            max_connections_per_ip: count!(max_connections_per_ip),
            max_admin_connections: count!(max_admin_connections),
            max_header_bytes: count!(max_header_bytes),
            max_body_bytes: count!(max_body_bytes),
            ws_max_message_bytes: count!(ws_max_message_bytes),
            ws_ping_interval: secs!(ws_ping_interval, ws_ping_interval_secs),
            ws_idle_timeout: secs!(ws_idle_timeout, ws_idle_timeout_secs),
            ws_close_timeout: secs!(ws_close_timeout, ws_close_timeout_secs),
            relay_buffer_bytes: count!(relay_buffer_bytes),
            exchanges_per_ip_per_minute: count!(exchanges_per_ip_per_minute),
            password_failures_before_lockout: count!(password_failures_before_lockout),
            lockout: secs!(lockout, lockout_secs),
            max_concurrent_hashes: count!(max_concurrent_hashes),
            max_cut_text_bytes: count!(max_cut_text_bytes),
            grant_cache_entries: count!(grant_cache_entries),
            shutdown_drain: secs!(shutdown_drain, shutdown_drain_secs),
            console_connect_timeout: secs!(console_connect_timeout, console_connect_timeout_secs),
            console_handshake_timeout: secs!(
                console_handshake_timeout,
                console_handshake_timeout_secs
            ),
            serial_scrollback_bytes: count!(serial_scrollback_bytes),
            serial_viewer_queue_bytes: count!(serial_viewer_queue_bytes),
            setup_nice: match l.setup_nice {
                None => d.setup_nice,
                Some(n) if n <= 19 => n,
                Some(_) => return Err(invalid("limits.setup_nice", "must be 0 to 19")),
            },
            compact_heap: l.compact_heap.unwrap_or(d.compact_heap),
            revocation_poll: match l.revocation_poll_ms {
                None => d.revocation_poll,
                Some(ms) if ms >= 50 => Duration::from_millis(ms),
                Some(_) => return Err(invalid("limits.revocation_poll_ms", "must be at least 50")),
            },
        };
        if limits.ws_idle_timeout <= limits.ws_ping_interval {
            return Err(invalid(
                "limits.ws_idle_timeout_secs",
                "must be longer than limits.ws_ping_interval_secs",
            ));
        }
        if limits.relay_buffer_bytes > 1 << 20 {
            return Err(invalid("limits.relay_buffer_bytes", "at most 1 MiB"));
        }
        if limits.serial_scrollback_bytes > 16 << 20 {
            return Err(invalid("limits.serial_scrollback_bytes", "at most 16 MiB"));
        }
        if limits.serial_viewer_queue_bytes < 8192 {
            return Err(invalid("limits.serial_viewer_queue_bytes", "at least 8192"));
        }
        if limits.max_header_bytes < 1024 {
            return Err(invalid("limits.max_header_bytes", "at least 1024"));
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_nice_is_0_to_19() {
        for (v, ok) in [(0, true), (19, true), (20, false), (255, false)] {
            let raw = RawLimits {
                setup_nice: Some(v),
                ..RawLimits::default()
            };
            assert_eq!(raw.validate().map(|l| l.setup_nice).ok(), ok.then_some(v));
        }
        assert_eq!(RawLimits::default().validate().unwrap().setup_nice, 10);
    }
}
