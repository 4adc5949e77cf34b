//! Where and how the PostgreSQL store connects: the parsed `[store] url` and the pool
//! settings. The password never appears in `Debug` or in messages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use super::{PgError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE};

/// Where and how to connect: the parsed `[store] url` and the pool settings.
#[derive(Clone)]
pub struct PgSettings {
    /// The parsed connection string (its `Debug` hides the password).
    pub config: tokio_postgres::Config,
    /// Connections in the pool (at most).
    pub pool_size: usize,
    /// Time allowed to connect and authenticate one connection, and to wait for a free
    /// one when all are in use.
    pub connect_timeout: Duration,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &self.describe())
            .field("has_password", &self.config.get_password().is_some())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PgSettings {
    /// Parses a connection string: a `postgres://` or `postgresql://` URL, or the
    /// `host=/run/postgresql user=vmgw dbname=vmgw` key-value form. Default pool
    /// settings. TLS cannot be required (the gateway connects without it).
    pub fn parse(url: &str) -> Result<PgSettings, PgError> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| PgError::BadUrl(e.to_string()))?;
        if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(PgError::TlsRequired);
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(PgError::BadUrl("no host".into()));
        }
        Ok(PgSettings {
            config,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// `user@host[:port][,host…]/dbname`, for messages: never the password.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    Host::Tcp(s) => s.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                match ports.get(i).or(ports.first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        format!(
            "{}@{}/{}",
            c.get_user().unwrap_or("?"),
            hosts.join(","),
            c.get_dbname().or(c.get_user()).unwrap_or("?")
        )
    }
}
