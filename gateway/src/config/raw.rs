//! The configuration file's format: every section and key as the TOML says it. Field
//! docs are the user-facing documentation of each setting; `validate` turns them into
//! the typed [`super::Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The file format. Field docs are the user-facing documentation of each setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Data directory: the link store, VM specs and run directories.
    pub data_dir: Option<PathBuf>,
    /// The public base URL visitors use, e.g. `https://gw.example.com` (links are built
    /// from it and its origin is allowed for WebSockets). Default: from the listener.
    pub public_url: Option<String>,
    #[serde(default)]
    pub public: RawPublic,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub links: RawLinks,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub vms: RawVms,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub targets: RawTargets,
    #[serde(default)]
    pub recording: super::RawRecording,
}

/// `[targets]`: where external console targets may point.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    /// Directories under which unix-socket targets may lie (absolute). Empty (the
    /// default): unix-socket targets are refused. Paths in the gateway's own data and run
    /// directories are refused whatever this says.
    #[serde(default)]
    pub unix_socket_dirs: Vec<PathBuf>,
    /// Users (names or numeric uids) who may own a target's socket. Default: the
    /// gateway's own user.
    #[serde(default)]
    pub unix_socket_owners: Vec<OwnerSpec>,
}

/// A user, by name or uid.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OwnerSpec {
    Uid(u32),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublic {
    /// Address of the public TLS listener (default `0.0.0.0:8443`).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and private key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `[public.acme]`: certificates from an ACME CA instead of `cert` and `key`.
    pub acme: Option<crate::acme::config::RawAcme>,
    /// Extra origins allowed to open console WebSockets (the public URL's is always in).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// A directory of browser pages to serve instead of the ones built into the binary
    /// (for developing the pages); default: `VMGW_STATIC_DIR` when set, else the
    /// embedded pages.
    pub static_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener (default `127.0.0.1:8444`, loopback only).
    pub listen: Option<SocketAddr>,
    /// Optional TLS for the admin listener.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinks {
    /// Longest allowed link lifetime in seconds (default 30 days).
    pub max_ttl_secs: Option<u64>,
    /// Token `iss` and `aud` values.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock leeway for token times, seconds (default 5).
    pub leeway_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub tls_handshake_timeout_secs: Option<u64>,
    pub tls_reload_poll_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_admin_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub ws_max_message_bytes: Option<usize>,
    pub ws_ping_interval_secs: Option<u64>,
    pub ws_idle_timeout_secs: Option<u64>,
    pub ws_close_timeout_secs: Option<u64>,
    pub relay_buffer_bytes: Option<usize>,
    pub exchanges_per_ip_per_minute: Option<u32>,
    pub password_failures_before_lockout: Option<u32>,
    pub lockout_secs: Option<u64>,
    pub max_concurrent_hashes: Option<usize>,
    pub max_cut_text_bytes: Option<usize>,
    pub grant_cache_entries: Option<usize>,
    pub shutdown_drain_secs: Option<u64>,
    pub revocation_poll_ms: Option<u64>,
    pub console_connect_timeout_secs: Option<u64>,
    pub console_handshake_timeout_secs: Option<u64>,
    pub serial_scrollback_bytes: Option<usize>,
    pub serial_viewer_queue_bytes: Option<usize>,
    pub setup_nice: Option<u8>,
    pub compact_heap: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Addresses or CIDR blocks of reverse proxies whose client-address header (and PROXY
    /// protocol header) is believed.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// Which header trusted proxies put the client's address in: `x-forwarded-for`
    /// (default), `forwarded` (RFC 7239) or `none`. Only that one is read.
    pub client_header: Option<String>,
    /// Connections from trusted proxies begin with a PROXY protocol (v1 or v2) header.
    #[serde(default)]
    pub protocol: bool,
    /// The PROXY header must arrive within this many seconds (default 5).
    pub header_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVms {
    pub qemu_binary: Option<PathBuf>,
    pub shutdown_grace_secs: Option<u64>,
    pub guest_agent_timeout_secs: Option<u64>,
    /// Directory for VM run directories (unix socket paths must stay under 108 bytes).
    pub run_dir: Option<PathBuf>,
}

/// `[store]`: where links, tokens, keys, targets, grants and the audit log live.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// PostgreSQL connection string (`postgres://user:pw@host:5432/db`,
    /// `postgresql:///db?host=/run/postgresql&user=vmgw`, or the key-value form
    /// `host=/run/postgresql user=vmgw dbname=vmgw`). Absent: SQLite in the data
    /// directory. Several gateways pointed at one database share all state. No TLS:
    /// use a unix socket, loopback or a private network.
    pub url: Option<String>,
    /// PostgreSQL connections per gateway (default 8, at most 256).
    pub pool_size: Option<usize>,
    /// Time allowed to connect to PostgreSQL, seconds (default 5).
    pub connect_timeout_secs: Option<u64>,
    /// SQLite only: at most one durable commit of the visitor path's writes (audit
    /// records, redemptions) per this many milliseconds; the writes that arrive
    /// meanwhile share the next commit and its fsync (default 2, at most 1000; 0 commits
    /// each write at once). A lone write after a quiet interval is not delayed.
    pub commit_interval_ms: Option<u64>,
}

impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only that one is set.
        f.debug_struct("RawStore")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .finish()
    }
}
