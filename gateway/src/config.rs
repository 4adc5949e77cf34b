//! Configuration: a TOML file (plus a few environment overrides), validated once at start
//! into typed settings. Every timeout and limit is named here with a safe default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML for this gateway")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

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

/// Validated `[targets]`.
#[derive(Debug, Clone, Default)]
pub struct TargetSettings {
    pub unix_socket_dirs: Vec<PathBuf>,
    pub unix_socket_owners: Vec<u32>,
}

impl RawTargets {
    fn validate(self) -> Result<TargetSettings, ConfigError> {
        let key = "targets.unix_socket_dirs";
        let mut dirs = Vec::new();
        for d in self.unix_socket_dirs {
            let normal = crate::confine::is_normal(&d);
            if !normal || d.parent().is_none() {
                return Err(invalid(
                    key,
                    format!("{d:?} must be an absolute directory in normal form, not /"),
                ));
            }
            dirs.push(d);
        }
        let mut owners = Vec::new();
        for o in self.unix_socket_owners {
            owners.push(match o {
                OwnerSpec::Uid(u) => u,
                OwnerSpec::Name(n) => match nix::unistd::User::from_name(&n) {
                    Ok(Some(u)) => u.uid.as_raw(),
                    _ => {
                        return Err(invalid(
                            "targets.unix_socket_owners",
                            format!("no user named {n:?}"),
                        ))
                    }
                },
            });
        }
        Ok(TargetSettings {
            unix_socket_dirs: dirs,
            unix_socket_owners: owners,
        })
    }
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
    pub shutdown_drain_secs: Option<u64>,
    pub revocation_poll_ms: Option<u64>,
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
}

impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only that one is set.
        f.debug_struct("RawStore")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

/// Which store a gateway uses.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// SQLite in the data directory (`gateway.sqlite3`).
    #[default]
    Sqlite,
    /// PostgreSQL, shared by several gateways. `Debug` hides the password.
    Postgres(Box<crate::store::PgSettings>),
}

/// Where a listener's TLS material comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The request header that trusted reverse proxies name the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHeader {
    /// `X-Forwarded-For: client, proxy1, …`
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for=proxy1` (RFC 7239)
    Forwarded,
    /// Neither: the connection's (or PROXY header's) address is the client.
    None,
}

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
    /// Largest clipboard (ClientCutText) a visitor may send.
    pub max_cut_text_bytes: usize,
    /// How long shutdown waits for sessions to close.
    pub shutdown_drain: Duration,
    /// How often revocations made elsewhere (CLI, other gateways) are picked up.
    pub revocation_poll: Duration,
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
            shutdown_drain: Duration::from_secs(5),
            revocation_poll: Duration::from_secs(1),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub public_listen: SocketAddr,
    pub public_tls: Option<TlsFiles>,
    /// Certificates from an ACME CA (exclusive with `public_tls`).
    pub public_acme: Option<crate::acme::config::AcmeSettings>,
    pub allowed_origins: Vec<String>,
    /// Pages from this directory instead of the embedded ones.
    pub static_dir: Option<PathBuf>,
    pub admin_listen: SocketAddr,
    pub admin_tls: Option<TlsFiles>,
    pub max_link_ttl: Duration,
    pub token_issuer: String,
    pub token_audience: String,
    pub token_leeway: Duration,
    pub limits: Limits,
    pub trusted_proxies: Vec<Cidr>,
    /// The header trusted proxies name the client in.
    pub client_header: ClientHeader,
    /// Connections from trusted proxies start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// How long a trusted proxy has to send its PROXY header.
    pub proxy_header_timeout: Duration,
    pub qemu_binary: PathBuf,
    pub shutdown_grace: Duration,
    pub guest_agent_timeout: Duration,
    pub run_dir: Option<PathBuf>,
    /// The store: SQLite in the data directory, or PostgreSQL.
    pub store: StoreSettings,
    /// Where external console targets may point.
    pub targets: TargetSettings,
}

fn secs(v: Option<u64>, default: Duration, key: &'static str) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

fn count<T: Copy + PartialOrd + From<u8>>(
    v: Option<T>,
    default: T,
    key: &'static str,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if n < T::from(1) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

/// The origin (`scheme://host[:port]`) of a URL, lower-cased.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    if host.is_empty() || !matches!(scheme, "https" | "http") || host.contains('@') {
        return None;
    }
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    ))
}

impl RawConfig {
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Validates everything once; the result is used as is for the process's lifetime.
    /// Relative paths are taken relative to `base` (the config file's directory).
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let d = Limits::default();
        let l = self.limits;
        let limits = Limits {
            tls_handshake_timeout: secs(
                l.tls_handshake_timeout_secs,
                d.tls_handshake_timeout,
                "limits.tls_handshake_timeout_secs",
            )?,
            tls_reload_poll: secs(
                l.tls_reload_poll_secs,
                d.tls_reload_poll,
                "limits.tls_reload_poll_secs",
            )?,
            header_read_timeout: secs(
                l.header_read_timeout_secs,
                d.header_read_timeout,
                "limits.header_read_timeout_secs",
            )?,
            request_timeout: secs(
                l.request_timeout_secs,
                d.request_timeout,
                "limits.request_timeout_secs",
            )?,
            max_connections: count(
                l.max_connections,
                d.max_connections,
                "limits.max_connections",
            )?,
            max_connections_per_ip: count(
                l.max_connections_per_ip,
                d.max_connections_per_ip,
                "limits.max_connections_per_ip",
            )?,
            max_admin_connections: count(
                l.max_admin_connections,
                d.max_admin_connections,
                "limits.max_admin_connections",
            )?,
            max_header_bytes: count(
                l.max_header_bytes,
                d.max_header_bytes,
                "limits.max_header_bytes",
            )?,
            max_body_bytes: count(l.max_body_bytes, d.max_body_bytes, "limits.max_body_bytes")?,
            ws_max_message_bytes: count(
                l.ws_max_message_bytes,
                d.ws_max_message_bytes,
                "limits.ws_max_message_bytes",
            )?,
            ws_ping_interval: secs(
                l.ws_ping_interval_secs,
                d.ws_ping_interval,
                "limits.ws_ping_interval_secs",
            )?,
            ws_idle_timeout: secs(
                l.ws_idle_timeout_secs,
                d.ws_idle_timeout,
                "limits.ws_idle_timeout_secs",
            )?,
            ws_close_timeout: secs(
                l.ws_close_timeout_secs,
                d.ws_close_timeout,
                "limits.ws_close_timeout_secs",
            )?,
            relay_buffer_bytes: count(
                l.relay_buffer_bytes,
                d.relay_buffer_bytes,
                "limits.relay_buffer_bytes",
            )?,
            exchanges_per_ip_per_minute: count(
                l.exchanges_per_ip_per_minute,
                d.exchanges_per_ip_per_minute,
                "limits.exchanges_per_ip_per_minute",
            )?,
            password_failures_before_lockout: count(
                l.password_failures_before_lockout,
                d.password_failures_before_lockout,
                "limits.password_failures_before_lockout",
            )?,
            lockout: secs(l.lockout_secs, d.lockout, "limits.lockout_secs")?,
            max_concurrent_hashes: count(
                l.max_concurrent_hashes,
                d.max_concurrent_hashes,
                "limits.max_concurrent_hashes",
            )?,
            max_cut_text_bytes: count(
                l.max_cut_text_bytes,
                d.max_cut_text_bytes,
                "limits.max_cut_text_bytes",
            )?,
            shutdown_drain: secs(
                l.shutdown_drain_secs,
                d.shutdown_drain,
                "limits.shutdown_drain_secs",
            )?,
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
        if limits.max_header_bytes < 1024 {
            return Err(invalid("limits.max_header_bytes", "at least 1024"));
        }

        let public_tls = match (self.public.cert, self.public.key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: abs(c),
                key: abs(k),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "public.cert",
                    "public.cert and public.key go together",
                ))
            }
        };
        let public_acme = match self.public.acme {
            Some(_) if public_tls.is_some() => {
                return Err(invalid(
                    "public.acme",
                    "public.cert/key and public.acme exclude each other",
                ))
            }
            Some(a) => Some(a.validate(base)?),
            None => None,
        };
        let admin_tls = match (self.admin.cert, self.admin.key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: abs(c),
                key: abs(k),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "admin.cert",
                    "admin.cert and admin.key go together",
                ))
            }
        };
        let public_url = match self.public_url {
            Some(u) => {
                let u = u.trim_end_matches('/').to_owned();
                if origin_of(&u).is_none() || !u.starts_with("https://") {
                    return Err(invalid("public_url", "must be an https:// URL"));
                }
                Some(u)
            }
            None => None,
        };
        let mut allowed_origins = Vec::new();
        for o in self.public.allowed_origins {
            let norm = origin_of(&o).ok_or_else(|| {
                invalid("public.allowed_origins", format!("{o:?} is not an origin"))
            })?;
            allowed_origins.push(norm);
        }
        let mut trusted_proxies = Vec::new();
        for t in self.proxy.trusted {
            trusted_proxies.push(Cidr::parse(&t).ok_or_else(|| {
                invalid(
                    "proxy.trusted",
                    format!("{t:?} is not an address or CIDR block"),
                )
            })?);
        }
        let client_header = match self.proxy.client_header.as_deref() {
            None | Some("x-forwarded-for") => ClientHeader::XForwardedFor,
            Some("forwarded") => ClientHeader::Forwarded,
            Some("none") => ClientHeader::None,
            Some(other) => {
                return Err(invalid(
                    "proxy.client_header",
                    format!("{other:?} is not x-forwarded-for, forwarded or none"),
                ))
            }
        };
        if self.proxy.protocol && trusted_proxies.is_empty() {
            return Err(invalid(
                "proxy.protocol",
                "needs proxy.trusted: PROXY headers are read only from trusted proxies",
            ));
        }
        let max_link_ttl = secs(
            self.links.max_ttl_secs,
            Duration::from_secs(30 * 86_400),
            "links.max_ttl_secs",
        )?;
        let store = match self.store.url {
            None => {
                if self.store.pool_size.is_some() {
                    return Err(invalid("store.pool_size", "only with store.url"));
                }
                if self.store.connect_timeout_secs.is_some() {
                    return Err(invalid("store.connect_timeout_secs", "only with store.url"));
                }
                StoreSettings::Sqlite
            }
            Some(url) => {
                // The error never repeats the URL (it may carry a password).
                let mut pg = crate::store::PgSettings::parse(&url)
                    .map_err(|e| invalid("store.url", e.to_string()))?;
                pg.pool_size = count(
                    self.store.pool_size,
                    crate::store::DEFAULT_PG_POOL_SIZE,
                    "store.pool_size",
                )?;
                if pg.pool_size > crate::store::MAX_PG_POOL_SIZE {
                    return Err(invalid(
                        "store.pool_size",
                        format!("at most {}", crate::store::MAX_PG_POOL_SIZE),
                    ));
                }
                pg.connect_timeout = secs(
                    self.store.connect_timeout_secs,
                    crate::store::DEFAULT_PG_CONNECT_TIMEOUT,
                    "store.connect_timeout_secs",
                )?;
                StoreSettings::Postgres(Box::new(pg))
            }
        };
        let token_leeway = match self.links.leeway_secs {
            None => Duration::from_secs(5),
            Some(s) if s <= 60 => Duration::from_secs(s),
            Some(_) => return Err(invalid("links.leeway_secs", "at most 60")),
        };
        Ok(Config {
            data_dir: abs(self.data_dir.unwrap_or_else(|| PathBuf::from("data"))),
            public_url,
            public_listen: self
                .public
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            public_tls,
            public_acme,
            allowed_origins,
            static_dir: self
                .public
                .static_dir
                .map(abs)
                .or_else(|| std::env::var_os("VMGW_STATIC_DIR").map(PathBuf::from)),
            admin_listen: self
                .admin
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8444))),
            admin_tls,
            max_link_ttl,
            token_issuer: self.links.issuer.unwrap_or_else(|| "vm-gateway".to_owned()),
            token_audience: self
                .links
                .audience
                .unwrap_or_else(|| "vm-gateway-share".to_owned()),
            token_leeway,
            limits,
            trusted_proxies,
            client_header,
            proxy_protocol: self.proxy.protocol,
            proxy_header_timeout: secs(
                self.proxy.header_timeout_secs,
                Duration::from_secs(5),
                "proxy.header_timeout_secs",
            )?,
            qemu_binary: self
                .vms
                .qemu_binary
                .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
            shutdown_grace: secs(
                self.vms.shutdown_grace_secs,
                Duration::from_secs(60),
                "vms.shutdown_grace_secs",
            )?,
            guest_agent_timeout: secs(
                self.vms.guest_agent_timeout_secs,
                Duration::from_secs(3),
                "vms.guest_agent_timeout_secs",
            )?,
            run_dir: self.vms.run_dir.map(abs),
            store,
            targets: self.targets.validate()?,
        })
    }
}

impl Config {
    /// The public base URL: configured, or derived from the listener's address.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.clone(),
            None => {
                let host = match bound.ip() {
                    ip if ip.is_unspecified() => "localhost".to_owned(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    IpAddr::V4(v4) => v4.to_string(),
                };
                format!("https://{host}:{}", bound.port())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = RawConfig::default()
            .validate(Path::new("/etc/gw"))
            .expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/etc/gw/data"));
        assert_eq!(c.admin_listen.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.token_leeway, Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_are_named() {
        let raw: RawConfig =
            toml::from_str("[limits]\nws_idle_timeout_secs = 5\nws_ping_interval_secs = 10\n")
                .expect("toml");
        let err = raw.validate(Path::new("/")).expect_err("invalid");
        assert!(err.to_string().contains("ws_idle_timeout_secs"), "{err}");
        let raw: RawConfig = toml::from_str("[limits]\nmax_connections = 0\n").expect("toml");
        assert!(raw.validate(Path::new("/")).is_err());
        assert!(toml::from_str::<RawConfig>("[limits]\nno_such = 1\n").is_err());
        let raw: RawConfig = toml::from_str("public_url = \"http://x\"\n").expect("toml");
        assert!(raw.validate(Path::new("/")).is_err());
        let raw: RawConfig = toml::from_str("[public]\ncert = \"c.pem\"\n").expect("toml");
        assert!(raw.validate(Path::new("/")).is_err());
        // PROXY headers need trusted proxies; the client header is one of three
        let raw: RawConfig = toml::from_str("[proxy]\nprotocol = true\n").expect("toml");
        let err = raw.validate(Path::new("/")).expect_err("invalid");
        assert!(err.to_string().contains("proxy.protocol"), "{err}");
        let raw: RawConfig =
            toml::from_str("[proxy]\nclient_header = \"x-real-ip\"\n").expect("toml");
        let err = raw.validate(Path::new("/")).expect_err("invalid");
        assert!(err.to_string().contains("proxy.client_header"), "{err}");
    }

    #[test]
    fn store_section() {
        let c = RawConfig::default()
            .validate(Path::new("/"))
            .expect("valid");
        assert!(matches!(c.store, StoreSettings::Sqlite));
        let raw: RawConfig = toml::from_str(
            "[store]\nurl = \"postgres://gw:hunter2pw@db:5432/vmgw\"\npool_size = 3\n",
        )
        .expect("toml");
        assert!(!format!("{raw:?}").contains("hunter2pw"));
        let c = raw.validate(Path::new("/")).expect("valid");
        let StoreSettings::Postgres(pg) = &c.store else {
            panic!("expected PostgreSQL: {:?}", c.store);
        };
        assert_eq!(pg.pool_size, 3);
        assert_eq!(pg.connect_timeout, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("hunter2pw"), "{c:?}");
        let raw: RawConfig = toml::from_str(
            "[store]\nurl = \"host=/run/postgresql user=vmgw dbname=vmgw\"\nconnect_timeout_secs = 2\n",
        )
        .expect("toml");
        let c = raw.validate(Path::new("/")).expect("key-value form");
        assert!(matches!(c.store, StoreSettings::Postgres(ref p) if p.pool_size == 8));
        for (text, key) in [
            ("[store]\npool_size = 4\n", "store.pool_size"),
            (
                "[store]\nurl = \"postgres://h/d\"\npool_size = 0\n",
                "store.pool_size",
            ),
            (
                "[store]\nurl = \"postgres://h/d\"\npool_size = 1000\n",
                "store.pool_size",
            ),
            (
                "[store]\nurl = \"postgres://h/d?sslmode=require\"\n",
                "store.url",
            ),
            (
                "[store]\nurl = \"postgres://u:hunter2pw@h/d?bogus=1\"\n",
                "store.url",
            ),
        ] {
            let raw: RawConfig = toml::from_str(text).expect("toml");
            let err = raw.validate(Path::new("/")).expect_err(text);
            assert!(err.to_string().contains(key), "{err}");
            assert!(!err.to_string().contains("hunter2pw"), "{err}");
        }
        assert!(toml::from_str::<RawConfig>("[store]\nnope = 1\n").is_err());
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let c = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(c.contains("2001:db8:1::1".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://GW.example.com:8443/s/#x").as_deref(),
            Some("https://gw.example.com:8443")
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("https://user@evil"), None);
    }
}
