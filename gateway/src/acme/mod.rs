//! Automatic certificates for the public listener over ACME (RFC 8555).
//!
//! At start the stored certificate (`DATA/acme/`) is served when it is still good for
//! the configured names; otherwise a temporary self-signed one is served until the first
//! order completes. A background task orders at once when needed, then again
//! `renew_before` ahead of expiry; a failed order is logged and retried with a doubling
//! delay between `retry_min` and `retry_max`. The task never ends the gateway. A new
//! certificate goes to new handshakes at once (`CertResolver::replace`); live
//! connections keep theirs.

pub mod challenge;
pub mod client;
pub mod config;
pub mod order;
pub mod storage;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;

use crate::http::error::Chain;
use crate::server::tls::{self, CertResolver, ListenerTls};
use challenge::Challenges;
use client::CaClient;
use config::{AcmeSettings, ChallengeKind};
use storage::{Storage, StoredCert};

/// The longest single sleep of the renewal loop (so that clock changes are noticed).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Errors of the ACME machinery.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("talking to the ACME CA")]
    Ca(#[source] instant_acme::Error),
    /// A problem document from the CA: a failed challenge, a rate limit, a bad request.
    #[error("the CA refused")]
    Refused(#[source] instant_acme::Error),
    #[error("the CA offers no {0:?} challenge")]
    NoChallenge(instant_acme::ChallengeType),
    #[error("unexpected authorization: {0}")]
    Authorization(String),
    #[error("the order failed: {0}")]
    Invalid(String),
    #[error("answering a challenge")]
    Challenge(#[from] challenge::ChallengeError),
    #[error("making the certificate request")]
    Csr(#[source] rcgen::Error),
    #[error("the stored ACME material")]
    Storage(#[from] storage::StorageError),
    #[error("the CA client")]
    Client(#[from] client::ClientError),
    #[error("binding the HTTP-01 listener on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the temporary certificate")]
    Tls(#[from] tls::TlsError),
    #[error("the order took longer than order_timeout_secs")]
    Timeout,
}

impl AcmeError {
    /// The CA's own refusals apart from failures to reach it.
    pub fn from_ca(e: instant_acme::Error) -> AcmeError {
        match e {
            instant_acme::Error::Api(_) => AcmeError::Refused(e),
            other => AcmeError::Ca(other),
        }
    }

    /// Whether the CA does not know the account (a test CA restarted, an account
    /// deactivated elsewhere): a new one must be created.
    fn account_gone(&self) -> bool {
        matches!(
            self,
            AcmeError::Refused(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
        )
    }
}

/// The ACME task of one gateway, ready to run.
#[derive(Debug)]
pub struct Acme {
    settings: AcmeSettings,
    storage: Storage,
    client: CaClient,
    resolver: Arc<CertResolver>,
    challenges: Arc<Challenges>,
    http01: Option<TcpListener>,
    http01_limits: challenge::Http01Limits,
    /// The expiry of the certificate served now, when it is a CA's.
    not_after: Option<SystemTime>,
}

/// When a certificate expiring at `not_after` is due for renewal (at once when there
/// is none).
fn renew_at(not_after: Option<SystemTime>, renew_before: Duration) -> SystemTime {
    match not_after {
        Some(t) => t
            .checked_sub(renew_before)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        None => SystemTime::UNIX_EPOCH,
    }
}

/// The delay after `failures` failed orders in a row (at least 1).
fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

impl Acme {
    /// The public listener's TLS and the task that keeps its certificate: loads what is
    /// stored, binds the HTTP-01 listener, builds the CA client. Nothing is asked of the
    /// CA yet.
    pub async fn prepare(
        settings: AcmeSettings,
        data_dir: &std::path::Path,
        limits: &crate::config::Limits,
    ) -> Result<(ListenerTls, Acme), AcmeError> {
        let storage = Storage::open(data_dir, &settings.directory)?;
        let client = CaClient::new(settings.directory_ca.as_deref())?;
        let stored = storage
            .certificate()
            .filter(|c| c.covers(&settings.domains) && c.not_after > SystemTime::now());
        let (key, not_after) = match stored {
            Some(StoredCert { key, not_after, .. }) => {
                tracing::info!(domains = ?settings.domains, "serving the stored ACME certificate");
                (key, Some(not_after))
            }
            None => {
                tracing::info!(
                    domains = ?settings.domains,
                    "no valid ACME certificate yet: serving a temporary self-signed one until the first order completes"
                );
                let (cert, key) = tls::self_signed(settings.domains.clone())?;
                let place = storage.dir().join("self-signed");
                let key =
                    tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), &place, &place)?;
                (key, None)
            }
        };
        let resolver = CertResolver::new(key);
        let acme_alpn = settings.challenge == ChallengeKind::TlsAlpn01;
        let http01 = match settings.http01_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| AcmeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let tls = ListenerTls {
            config: tls::server_config(resolver.clone(), acme_alpn)?,
            resolver: resolver.clone(),
            files: None,
        };
        let settings_http01_max = settings.http01_max_connections;
        let acme = Acme {
            challenges: Challenges::new(resolver.clone()),
            settings,
            storage,
            client,
            resolver,
            http01,
            http01_limits: challenge::Http01Limits {
                max_connections: settings_http01_max,
                header_read_timeout: limits.header_read_timeout,
                request_timeout: limits.request_timeout,
            },
            not_after,
        };
        Ok((tls, acme))
    }

    /// The HTTP-01 listener's address, when there is one.
    pub fn http01_addr(&self) -> Option<std::net::SocketAddr> {
        self.http01.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Keeps the certificate current until the task is dropped.
    pub async fn run(mut self) {
        let _http01 = self.http01.take().map(|l| {
            AbortOnDrop(tokio::spawn(challenge::serve_http01(
                l,
                self.challenges.clone(),
                self.http01_limits,
            )))
        });
        let mut account = None;
        let mut failures = 0u32;
        loop {
            let due = renew_at(self.not_after, self.settings.renew_before);
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                continue;
            }
            let started = Instant::now();
            match self.renew(&mut account).await {
                Ok(()) => {
                    failures = 0;
                    tracing::info!(
                        domains = ?self.settings.domains,
                        secs = started.elapsed().as_secs_f64(),
                        "ACME certificate obtained and served"
                    );
                    if renew_at(self.not_after, self.settings.renew_before) <= SystemTime::now() {
                        tracing::warn!(
                            "the new certificate is already due for renewal (renew_before_days is longer than its lifetime); next order after retry_max_secs"
                        );
                        tokio::time::sleep(self.settings.retry_max).await;
                    }
                }
                Err(e) => {
                    // Loaded again for the next order (the CA may have forgotten it).
                    account = None;
                    if e.account_gone() {
                        self.storage.forget_account();
                    }
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, self.settings.retry_min, self.settings.retry_max);
                    tracing::warn!(
                        error = %Chain(&e),
                        failures,
                        retry_in_secs = delay.as_secs(),
                        "ACME order failed; the current certificate keeps serving"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One order, from account to certificate served and stored.
    async fn renew(
        &mut self,
        account: &mut Option<instant_acme::Account>,
    ) -> Result<(), AcmeError> {
        let limit = self.settings.order_timeout;
        let account = match account {
            Some(a) => a.clone(),
            None => {
                let a =
                    tokio::time::timeout(limit, self.client.account(&self.settings, &self.storage))
                        .await
                        .map_err(|_| AcmeError::Timeout)??;
                account.insert(a).clone()
            }
        };
        // The order's own polling is bounded by `order_timeout`; this also bounds the
        // requests in between.
        let issued = tokio::time::timeout(
            limit * 2,
            order::order(&account, &self.settings, &self.challenges),
        )
        .await
        .map_err(|_| AcmeError::Timeout)??;
        let (cp, kp) = (self.storage.cert_path(), self.storage.key_path());
        let cert = StoredCert::from_pem(&issued.chain_pem, &issued.key_pem, &cp, &kp)?;
        // Served first: a certificate that cannot be stored is still good until restart.
        self.not_after = Some(cert.not_after);
        self.resolver.replace(cert.key);
        if let Err(e) = self
            .storage
            .save_certificate(&issued.chain_pem, &issued.key_pem)
        {
            tracing::warn!(
                error = %Chain(&e),
                "the new ACME certificate is served but could not be stored; a restart will order again"
            );
        }
        Ok(())
    }
}

/// A spawned task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(600));
        let got: Vec<u64> = (1..=6).map(|f| backoff(f, min, max).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(1000, min, max), max);
    }

    #[test]
    fn renewal_is_due_before_expiry() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert!(renew_at(None, day) <= now);
        assert!(renew_at(Some(now + 40 * day), 30 * day) > now);
        assert!(renew_at(Some(now + 20 * day), 30 * day) <= now);
    }
}
