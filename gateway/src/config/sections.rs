//! Validation of the sections other than `[limits]`: TLS files, URLs and origins,
//! proxies, the store, targets. Each returns its typed settings or names the key.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{OwnerSpec, RawProxy, RawStore, RawTargets};
use super::{
    count, invalid, origin_of, secs, Cidr, ClientHeader, ConfigError, StoreSettings, TlsFiles,
};

/// Validated `[targets]`.
#[derive(Debug, Clone, Default)]
pub struct TargetSettings {
    pub unix_socket_dirs: Vec<PathBuf>,
    pub unix_socket_owners: Vec<u32>,
}

impl RawTargets {
    pub(super) fn validate(self) -> Result<TargetSettings, ConfigError> {
        let key = "targets.unix_socket_dirs";
        let mut dirs = Vec::new();
        for d in self.unix_socket_dirs {
            let normal = super::is_normal(&d);
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

/// A listener's `cert` and `key`, which go together.
pub(super) fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    key_name: &'static str,
    abs: impl Fn(PathBuf) -> PathBuf,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(TlsFiles {
            cert: abs(c),
            key: abs(k),
        })),
        (None, None) => Ok(None),
        _ => Err(invalid(key_name, "cert and key go together")),
    }
}

/// `public_url`: an https:// URL without a trailing slash.
pub(super) fn public_url(url: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(u) = url else {
        return Ok(None);
    };
    let u = u.trim_end_matches('/').to_owned();
    if origin_of(&u).is_none() || !u.starts_with("https://") {
        return Err(invalid("public_url", "must be an https:// URL"));
    }
    Ok(Some(u))
}

/// `public.allowed_origins`, normalised.
pub(super) fn origins(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|o| {
            origin_of(&o)
                .ok_or_else(|| invalid("public.allowed_origins", format!("{o:?} is not an origin")))
        })
        .collect()
}

/// Validated `[proxy]`.
#[derive(Debug)]
pub(super) struct ProxySettings {
    pub trusted: Vec<Cidr>,
    pub client_header: ClientHeader,
    pub protocol: bool,
    pub header_timeout: Duration,
}

impl RawProxy {
    pub(super) fn validate(self) -> Result<ProxySettings, ConfigError> {
        let mut trusted = Vec::new();
        for t in self.trusted {
            trusted.push(Cidr::parse(&t).ok_or_else(|| {
                invalid(
                    "proxy.trusted",
                    format!("{t:?} is not an address or CIDR block"),
                )
            })?);
        }
        let client_header = match self.client_header.as_deref() {
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
        if self.protocol && trusted.is_empty() {
            return Err(invalid(
                "proxy.protocol",
                "needs proxy.trusted: PROXY headers are read only from trusted proxies",
            ));
        }
        Ok(ProxySettings {
            trusted,
            client_header,
            protocol: self.protocol,
            header_timeout: secs(
                self.header_timeout_secs,
                Duration::from_secs(5),
                "proxy.header_timeout_secs",
            )?,
        })
    }
}

/// The longest `store.commit_interval_ms`: a write never waits a second for its commit.
const MAX_COMMIT_INTERVAL_MS: u64 = 1000;

impl RawStore {
    pub(super) fn validate(self) -> Result<StoreSettings, ConfigError> {
        let Some(url) = self.url else {
            if self.pool_size.is_some() {
                return Err(invalid("store.pool_size", "only with store.url"));
            }
            if self.connect_timeout_secs.is_some() {
                return Err(invalid("store.connect_timeout_secs", "only with store.url"));
            }
            let commit_interval = match self.commit_interval_ms {
                None => crate::store::DEFAULT_COMMIT_INTERVAL,
                Some(ms) if ms <= MAX_COMMIT_INTERVAL_MS => Duration::from_millis(ms),
                Some(_) => {
                    return Err(invalid(
                        "store.commit_interval_ms",
                        format!("at most {MAX_COMMIT_INTERVAL_MS}"),
                    ))
                }
            };
            return Ok(StoreSettings::Sqlite { commit_interval });
        };
        if self.commit_interval_ms.is_some() {
            return Err(invalid(
                "store.commit_interval_ms",
                "only without store.url (SQLite)",
            ));
        }
        // The error never repeats the URL (it may carry a password).
        let mut pg = crate::store::PgSettings::parse(&url)
            .map_err(|e| invalid("store.url", e.to_string()))?;
        pg.pool_size = count(
            self.pool_size,
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
            self.connect_timeout_secs,
            crate::store::DEFAULT_PG_CONNECT_TIMEOUT,
            "store.connect_timeout_secs",
        )?;
        Ok(StoreSettings::Postgres(Box::new(pg)))
    }
}
