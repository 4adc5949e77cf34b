//! Configuration: a TOML file (plus a few environment overrides), validated once at start
//! into typed settings. Every timeout and limit is named here with a safe default.
//!
//! `raw` is the file format (what a user writes), `limits` the `[limits]` section,
//! `sections` the validation of the others; this file holds the validated [`Config`]
//! and the shared value types.

mod limits;
mod raw;
mod recording;
mod sections;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use limits::Limits;
pub use raw::{
    OwnerSpec, RawAdmin, RawConfig, RawLimits, RawLinks, RawProxy, RawPublic, RawStore, RawTargets,
    RawVms,
};
pub use recording::{LimitAction, RawRecording, RecordingSettings};
pub use sections::TargetSettings;

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

/// Which store a gateway uses.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// SQLite in the data directory (`gateway.sqlite3`).
    Sqlite {
        /// `store.commit_interval_ms`: the group commit's pace (see
        /// [`SqliteStore::with_commit_interval`](crate::store::SqliteStore::with_commit_interval)).
        commit_interval: Duration,
    },
    /// PostgreSQL, shared by several gateways. `Debug` hides the password.
    Postgres(Box<crate::store::PgSettings>),
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings::Sqlite {
            commit_interval: crate::store::DEFAULT_COMMIT_INTERVAL,
        }
    }
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
    /// Session recordings (`[recording]`).
    pub recording: RecordingSettings,
}

pub(crate) fn secs(
    v: Option<u64>,
    default: Duration,
    key: &'static str,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

pub(crate) fn count<T: Copy + PartialOrd + From<u8>>(
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

/// Whether `p` is absolute and written in normal form: rebuilding it from its components
/// (which drop `.`, repeated and trailing `/`) gives it back, and it has no `..`.
pub fn is_normal(p: &Path) -> bool {
    p.is_absolute()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
        && p.components().collect::<PathBuf>().as_os_str() == p.as_os_str()
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
        let proxy = self.proxy.validate()?;
        let token_leeway = match self.links.leeway_secs {
            None => Duration::from_secs(5),
            Some(s) if s <= 60 => Duration::from_secs(s),
            Some(_) => return Err(invalid("links.leeway_secs", "at most 60")),
        };
        let vms = self.vms;
        let public_tls =
            sections::tls_files(self.public.cert, self.public.key, "public.cert", abs)?;
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
        let recording = self.recording.validate(abs)?;
        Ok(Config {
            data_dir: abs(self.data_dir.unwrap_or_else(|| PathBuf::from("data"))),
            public_url: sections::public_url(self.public_url)?,
            public_listen: self
                .public
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            public_tls,
            public_acme,
            allowed_origins: sections::origins(self.public.allowed_origins)?,
            static_dir: self
                .public
                .static_dir
                .map(abs)
                .or_else(|| std::env::var_os("VMGW_STATIC_DIR").map(PathBuf::from)),
            admin_listen: self
                .admin
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8444))),
            admin_tls: sections::tls_files(self.admin.cert, self.admin.key, "admin.cert", abs)?,
            max_link_ttl: secs(
                self.links.max_ttl_secs,
                Duration::from_secs(30 * 86_400),
                "links.max_ttl_secs",
            )?,
            token_issuer: self.links.issuer.unwrap_or_else(|| "vm-gateway".to_owned()),
            token_audience: self
                .links
                .audience
                .unwrap_or_else(|| "vm-gateway-share".to_owned()),
            token_leeway,
            limits: self.limits.validate()?,
            trusted_proxies: proxy.trusted,
            client_header: proxy.client_header,
            proxy_protocol: proxy.protocol,
            proxy_header_timeout: proxy.header_timeout,
            qemu_binary: vms
                .qemu_binary
                .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
            shutdown_grace: secs(
                vms.shutdown_grace_secs,
                Duration::from_secs(60),
                "vms.shutdown_grace_secs",
            )?,
            guest_agent_timeout: secs(
                vms.guest_agent_timeout_secs,
                Duration::from_secs(3),
                "vms.guest_agent_timeout_secs",
            )?,
            run_dir: vms.run_dir.map(abs),
            store: self.store.validate()?,
            targets: self.targets.validate()?,
            recording,
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
        assert!(matches!(
            c.store,
            StoreSettings::Sqlite { commit_interval } if commit_interval == Duration::from_millis(2)
        ));
        let raw: RawConfig = toml::from_str("[store]\ncommit_interval_ms = 0\n").expect("toml");
        let c = raw.validate(Path::new("/")).expect("valid");
        assert!(matches!(
            c.store,
            StoreSettings::Sqlite { commit_interval } if commit_interval.is_zero()
        ));
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
                "[store]\ncommit_interval_ms = 1001\n",
                "store.commit_interval_ms",
            ),
            (
                "[store]\nurl = \"postgres://h/d\"\ncommit_interval_ms = 2\n",
                "store.commit_interval_ms",
            ),
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
