//! `[public.acme]`: automatic certificates for the public listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[public.acme]` as written. Field docs are the user-facing documentation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// The names the certificate is for (DNS names, at least one). The first one is the
    /// certificate's main name.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Contact addresses given to the CA, e.g. `["mailto:ops@example.com"]` (default none).
    #[serde(default)]
    pub contact: Vec<String>,
    /// The CA's ACME directory URL (https). Default: Let's Encrypt's production one.
    pub directory: Option<String>,
    /// A PEM file of root certificates to trust for the directory instead of the
    /// system's (for a private or test CA). Default: the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// How the CA checks control of the names: `tls-alpn-01` (default; on the public
    /// listener, which must be reachable on port 443 of the names) or `http-01` (on
    /// `http01_listen`, which must be reachable on port 80 of the names).
    pub challenge: Option<String>,
    /// Address of a plain-HTTP listener that answers HTTP-01 challenges
    /// (`/.well-known/acme-challenge/<token>`) and nothing else. Only with
    /// `challenge = "http-01"`, which needs it.
    pub http01_listen: Option<SocketAddr>,
    /// Renew a certificate this many days before it expires (default 30).
    pub renew_before_days: Option<u64>,
    /// After a failed order, wait this many seconds before the next (default 60),
    /// doubling after each further failure up to `retry_max_secs` (default 21600, 6 h).
    pub retry_min_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    /// An order (challenges, validation, issuance) must finish within this many seconds
    /// (default 120), else it counts as failed.
    pub order_timeout_secs: Option<u64>,
    /// Open connections on the HTTP-01 listener at most (default 64); each must send
    /// its request within `limits.header_read_timeout_secs` and be done within
    /// `limits.request_timeout_secs`.
    pub http01_max_connections: Option<u64>,
}

/// How control of the names is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    TlsAlpn01,
    Http01,
}

/// Validated `[public.acme]`.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// Lower-case DNS names, the first one the main name.
    pub domains: Vec<String>,
    pub contact: Vec<String>,
    pub directory: String,
    pub directory_ca: Option<PathBuf>,
    pub challenge: ChallengeKind,
    pub http01_listen: Option<SocketAddr>,
    pub renew_before: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub order_timeout: Duration,
    pub http01_max_connections: usize,
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// Whether `name` is a DNS name a CA could issue for (letters, digits, hyphens, dots;
/// a leading `*.` for a wildcard).
fn dns_name_ok(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && bare.parse::<std::net::IpAddr>().is_err()
}

fn positive(v: Option<u64>, default: u64, key: &'static str) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

impl RawAcme {
    /// Validates once; relative paths are taken relative to `base`.
    pub fn validate(self, base: &Path) -> Result<AcmeSettings, ConfigError> {
        if self.domains.is_empty() {
            return Err(invalid("public.acme.domains", "at least one name"));
        }
        let mut domains: Vec<String> = Vec::new();
        for d in self.domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !dns_name_ok(&d) {
                return Err(invalid(
                    "public.acme.domains",
                    format!("{d:?} is not a DNS name"),
                ));
            }
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        for c in &self.contact {
            if !c.starts_with("mailto:") || c.len() <= "mailto:".len() {
                return Err(invalid(
                    "public.acme.contact",
                    format!("{c:?} is not a mailto: address"),
                ));
            }
        }
        let directory = self.directory.unwrap_or_else(|| LETS_ENCRYPT.to_owned());
        if !directory.starts_with("https://") || directory.len() <= "https://".len() {
            return Err(invalid("public.acme.directory", "must be an https:// URL"));
        }
        let challenge = match self.challenge.as_deref() {
            None | Some("tls-alpn-01") => ChallengeKind::TlsAlpn01,
            Some("http-01") => ChallengeKind::Http01,
            Some(other) => {
                return Err(invalid(
                    "public.acme.challenge",
                    format!("{other:?} is not tls-alpn-01 or http-01"),
                ))
            }
        };
        match (challenge, self.http01_listen) {
            (ChallengeKind::Http01, None) => {
                return Err(invalid(
                    "public.acme.challenge",
                    "http-01 needs http01_listen",
                ))
            }
            (ChallengeKind::TlsAlpn01, Some(_)) => {
                return Err(invalid(
                    "public.acme.http01_listen",
                    "only with challenge = \"http-01\"",
                ))
            }
            _ => {}
        }
        if domains.iter().any(|d| d.starts_with("*.")) {
            return Err(invalid(
                "public.acme.domains",
                "wildcards need DNS-01, which this gateway does not do",
            ));
        }
        let renew_days = positive(self.renew_before_days, 30, "public.acme.renew_before_days")?;
        if renew_days > 36_500 {
            return Err(invalid("public.acme.renew_before_days", "at most 36500"));
        }
        let retry_min = positive(self.retry_min_secs, 60, "public.acme.retry_min_secs")?;
        let retry_max = positive(self.retry_max_secs, 21_600, "public.acme.retry_max_secs")?;
        if retry_max < retry_min {
            return Err(invalid(
                "public.acme.retry_max_secs",
                "must be at least retry_min_secs",
            ));
        }
        let order_timeout = positive(
            self.order_timeout_secs,
            120,
            "public.acme.order_timeout_secs",
        )?;
        if order_timeout > 3600 {
            return Err(invalid("public.acme.order_timeout_secs", "at most 3600"));
        }
        Ok(AcmeSettings {
            domains,
            contact: self.contact,
            directory,
            directory_ca: self
                .directory_ca
                .map(|p| if p.is_absolute() { p } else { base.join(p) }),
            challenge,
            http01_listen: self.http01_listen,
            renew_before: Duration::from_secs(renew_days * 86_400),
            retry_min: Duration::from_secs(retry_min),
            retry_max: Duration::from_secs(retry_max),
            order_timeout: Duration::from_secs(order_timeout),
            http01_max_connections: usize::try_from(positive(
                self.http01_max_connections,
                64,
                "public.acme.http01_max_connections",
            )?)
            .unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<AcmeSettings, ConfigError> {
        let raw: RawAcme = toml::from_str(text).unwrap();
        raw.validate(Path::new("/etc/gw"))
    }

    fn key_of(e: ConfigError) -> &'static str {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn defaults_are_safe() {
        let s = parse("domains = [\"GW.Example.com.\"]\ndirectory_ca = \"ca.pem\"").unwrap();
        assert_eq!(s.domains, ["gw.example.com"]);
        assert_eq!(s.directory, LETS_ENCRYPT);
        assert_eq!(s.challenge, ChallengeKind::TlsAlpn01);
        assert_eq!(s.renew_before, Duration::from_secs(30 * 86_400));
        assert_eq!(s.retry_min, Duration::from_secs(60));
        assert_eq!(s.retry_max, Duration::from_secs(21_600));
        assert_eq!(s.directory_ca.unwrap(), Path::new("/etc/gw/ca.pem"));
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            ("domains = []", "public.acme.domains"),
            ("domains = [\"a b\"]", "public.acme.domains"),
            ("domains = [\"127.0.0.1\"]", "public.acme.domains"),
            ("domains = [\"*.example.com\"]", "public.acme.domains"),
            (
                "domains = [\"a.example\"]\ncontact = [\"ops@x\"]",
                "public.acme.contact",
            ),
            (
                "domains = [\"a.example\"]\ndirectory = \"http://ca/dir\"",
                "public.acme.directory",
            ),
            (
                "domains = [\"a.example\"]\nchallenge = \"dns-01\"",
                "public.acme.challenge",
            ),
            (
                "domains = [\"a.example\"]\nchallenge = \"http-01\"",
                "public.acme.challenge",
            ),
            (
                "domains = [\"a.example\"]\nhttp01_listen = \"0.0.0.0:80\"",
                "public.acme.http01_listen",
            ),
            (
                "domains = [\"a.example\"]\nrenew_before_days = 0",
                "public.acme.renew_before_days",
            ),
            (
                "domains = [\"a.example\"]\nretry_min_secs = 10\nretry_max_secs = 5",
                "public.acme.retry_max_secs",
            ),
            (
                "domains = [\"a.example\"]\norder_timeout_secs = 3601",
                "public.acme.order_timeout_secs",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(parse(text).unwrap_err()), key, "{text}");
        }
        let s = parse(
            "domains = [\"a.example\"]\nchallenge = \"http-01\"\nhttp01_listen = \"0.0.0.0:80\"",
        )
        .unwrap();
        assert_eq!(s.challenge, ChallengeKind::Http01);
    }

    /// `[public] cert/key` and `[public.acme]` exclude each other.
    #[test]
    fn files_and_acme_exclude_each_other() {
        let text =
            "[public]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[public.acme]\ndomains = [\"a.example\"]";
        let raw: crate::config::RawConfig = toml::from_str(text).unwrap();
        assert_eq!(
            key_of(raw.validate(Path::new("/")).unwrap_err()),
            "public.acme"
        );
        // Unknown keys are refused.
        let bogus = "[public.acme]\ndomains = [\"a.example\"]\nbogus = 1";
        assert!(toml::from_str::<crate::config::RawConfig>(bogus).is_err());
        let raw: crate::config::RawConfig =
            toml::from_str("[public.acme]\ndomains = [\"a.example\"]").unwrap();
        let cfg = raw.validate(Path::new("/")).unwrap();
        assert_eq!(cfg.public_acme.unwrap().domains, ["a.example"]);
    }
}
