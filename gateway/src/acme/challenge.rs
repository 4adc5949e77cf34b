//! Answering the CA's challenges: TLS-ALPN-01 through the public listener's resolver
//! (RFC 8737), HTTP-01 through a small plain-HTTP listener that answers
//! `/.well-known/acme-challenge/<token>` and nothing else (RFC 8555 §8.3).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::server::tls::CertResolver;

const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// Connections the HTTP-01 listener serves at once; more wait in the backlog.
const HTTP01_MAX_CONNECTIONS: usize = 64;

/// Errors arming a challenge.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("making the TLS-ALPN-01 certificate")]
    Cert(#[from] rcgen::Error),
    #[error("loading the TLS-ALPN-01 key")]
    Key(#[from] rustls::Error),
}

/// The challenges being answered now.
#[derive(Debug)]
pub struct Challenges {
    resolver: Arc<CertResolver>,
    /// HTTP-01 key authorizations by token.
    tokens: DashMap<String, String>,
}

/// A challenge answered until dropped.
#[derive(Debug)]
pub enum Armed {
    TlsAlpn(Arc<Challenges>, String),
    Http(Arc<Challenges>, String),
}

impl Drop for Armed {
    fn drop(&mut self) {
        match self {
            Armed::TlsAlpn(c, domain) => c.resolver.clear_challenge(domain),
            Armed::Http(c, token) => {
                c.tokens.remove(token);
            }
        }
    }
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge for `domain`: the
/// domain as its only name and the key authorization's SHA-256 in `acmeIdentifier`.
pub fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, ChallengeError> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Not `CertifiedKey::from_der`: its check that key and certificate match parses the
    // certificate with webpki, which refuses the critical `acmeIdentifier` extension.
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

impl Challenges {
    pub fn new(resolver: Arc<CertResolver>) -> Arc<Challenges> {
        Arc::new(Challenges {
            resolver,
            tokens: DashMap::new(),
        })
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` until the guard is dropped.
    pub fn arm_tls_alpn(
        self: &Arc<Self>,
        domain: &str,
        digest: &[u8],
    ) -> Result<Armed, ChallengeError> {
        self.resolver
            .set_challenge(domain, alpn_certificate(domain, digest)?);
        Ok(Armed::TlsAlpn(self.clone(), domain.to_owned()))
    }

    /// Answers HTTP-01 requests for `token` until the guard is dropped.
    pub fn arm_http(self: &Arc<Self>, token: &str, key_authorization: &str) -> Armed {
        self.tokens
            .insert(token.to_owned(), key_authorization.to_owned());
        Armed::Http(self.clone(), token.to_owned())
    }

    /// The answer to one HTTP-01 request.
    fn http_answer(&self, req: &Request<Incoming>) -> Response<Full<bytes::Bytes>> {
        let found = (req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD)
            .then(|| req.uri().path().strip_prefix(HTTP01_PREFIX))
            .flatten()
            .and_then(|token| self.tokens.get(token).map(|k| k.clone()));
        let (status, body) = match found {
            Some(key_auth) => (StatusCode::OK, key_auth),
            None => (StatusCode::NOT_FOUND, String::new()),
        };
        let mut resp = Response::new(Full::new(bytes::Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        resp
    }
}

/// Serves HTTP-01 answers on `listener` until the task is dropped.
pub async fn serve_http01(listener: TcpListener, challenges: Arc<Challenges>) {
    let cap = Arc::new(Semaphore::new(HTTP01_MAX_CONNECTIONS));
    loop {
        let Ok(permit) = cap.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP-01 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let resp = challenges.http_answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP-01 connection failed"),
                Err(_) => tracing::debug!(%peer, "HTTP-01 connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}
