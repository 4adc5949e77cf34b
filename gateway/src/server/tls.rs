//! TLS for both listeners: rustls (TLS 1.2 and 1.3, HTTP/1.1 by ALPN) with a certificate
//! that can be replaced while serving. New handshakes use the new certificate; live
//! connections keep theirs. A new file that does not load (unreadable, no certificate,
//! no key, a key that does not match the certificate) is refused with a log line and
//! the old certificate keeps serving.
//!
//! The resolver also answers ACME TLS-ALPN-01 challenges (RFC 8737): a handshake that
//! offers only `acme-tls/1` for a domain with a pending challenge gets that challenge's
//! certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol of TLS-ALPN-01 challenges.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("the key does not fit the certificate, or is not usable")]
    Key(#[source] rustls::Error),
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
    #[error("generating a self-signed certificate")]
    SelfSigned(#[from] rcgen::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key from PEM text.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_path.to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_path.to_owned()))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(TlsError::Key)
}

/// Loads a PEM certificate chain and key from files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    certified_key_from_pem(&read(cert)?, &read(key)?, cert, key)
}

/// A self-signed certificate for `names`: (certificate PEM, key PEM).
pub fn self_signed(names: Vec<String>) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// The SHA-256 fingerprint of a certificate chain's first certificate, as browsers show
/// it (`AB:CD:…`).
pub fn fingerprint(key: &CertifiedKey) -> String {
    use sha2::Digest;
    let der = key.cert.first().map(|c| c.as_ref()).unwrap_or_default();
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate a listener serves now, replaceable while it serves.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    /// TLS-ALPN-01 challenge certificates by domain (lower-case).
    challenges: DashMap<String, Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
            challenges: DashMap::new(),
        })
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `key` to new handshakes from now on.
    pub fn replace(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.current.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` with `key` until removed.
    pub fn set_challenge(&self, domain: &str, key: CertifiedKey) {
        self.challenges
            .insert(domain.to_ascii_lowercase(), Arc::new(key));
    }

    pub fn clear_challenge(&self, domain: &str) {
        self.challenges.remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only a pending challenge is ever answered on this protocol.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.get(&name).map(|k| k.clone());
        }
        Some(self.current())
    }
}

/// A rustls server configuration (TLS 1.2 and 1.3, HTTP/1.1, no 0-RTT) around a
/// resolver, with stateless session tickets: a browser resumes its TLS session between
/// the exchange and the console's WebSocket (and on a reconnect) instead of paying a
/// second full handshake. The ticket key lives in memory only and rustls rotates it
/// every 6 hours (a ticket is accepted until the key after its own is replaced, at most
/// 12 hours); TLS 1.3 resumption still runs a fresh ECDHE (rustls offers only
/// `psk_dhe_ke`), so a resumed session keeps forward secrecy; no 0-RTT data is accepted.
/// Tickets cost the server no memory, so a flood of handshakes cannot push legitimate
/// visitors' sessions out of a cache.
pub fn server_config(
    resolver: Arc<CertResolver>,
    acme_alpn: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme_alpn {
        cfg.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    cfg.max_early_data_size = 0;
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

/// A listener's TLS: its configuration, its resolver and, when the certificate comes
/// from files, where to reload it from.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<CertResolver>,
    pub files: Option<(PathBuf, PathBuf)>,
}

impl ListenerTls {
    /// TLS from certificate and key files (reloadable).
    pub fn from_files(cert: &Path, key: &Path, acme_alpn: bool) -> Result<ListenerTls, TlsError> {
        let resolver = CertResolver::new(load_certified_key(cert, key)?);
        Ok(ListenerTls {
            config: server_config(resolver.clone(), acme_alpn)?,
            resolver,
            files: Some((cert.to_owned(), key.to_owned())),
        })
    }

    /// Loads the files again; on any error the old certificate stays (logged).
    pub fn reload(&self, listener: &'static str) -> bool {
        let Some((cert, key)) = &self.files else {
            return false;
        };
        match load_certified_key(cert, key) {
            Ok(k) => {
                self.resolver.replace(k);
                tracing::info!(listener, cert = %cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(
                    listener,
                    cert = %cert.display(),
                    error = %crate::http::error::Chain(&e),
                    "new TLS certificate refused; the old one keeps serving"
                );
                false
            }
        }
    }
}

/// The identity of a file's current content, to notice replacements.
fn stamp(p: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reloads the listeners' certificates on `SIGHUP` and when their files change (checked
/// every `poll`), until the task is dropped.
pub async fn watch_certificates(tls: Vec<(&'static str, ListenerTls)>, poll: Duration) {
    let files: Vec<_> = tls.into_iter().filter(|(_, t)| t.files.is_some()).collect();
    if files.is_empty() {
        return;
    }
    let stamps = |files: &[(&'static str, ListenerTls)]| -> Vec<_> {
        files
            .iter()
            .filter_map(|(_, t)| t.files.as_ref())
            .map(|(c, k)| (stamp(c), stamp(k)))
            .collect()
    };
    let mut seen = stamps(&files);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
        };
        let now = stamps(&files);
        if !by_signal && now == seen {
            continue;
        }
        if by_signal {
            tracing::info!("SIGHUP: reloading TLS certificates");
        }
        seen = now;
        for (name, t) in &files {
            t.reload(name);
        }
    }
}
