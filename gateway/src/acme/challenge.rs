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

/// The HTTP-01 listener's bounds: connections at most, and the time a request has to
/// arrive and to finish (the gateway's `header_read_timeout` and `request_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Http01Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
}

/// Serves HTTP-01 answers on `listener` until the task is dropped.
pub async fn serve_http01(
    listener: TcpListener,
    challenges: Arc<Challenges>,
    limits: Http01Limits,
) {
    let cap = Arc::new(Semaphore::new(limits.max_connections));
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
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.request_timeout, conn).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP-01 connection failed"),
                Err(_) => tracing::debug!(%peer, "HTTP-01 connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use x509_cert::der::{Decode, Encode};

    /// RFC 8737 §3: the domain as the only name, and a critical `acmeIdentifier`
    /// extension holding the SHA-256 of the key authorization as an OCTET STRING.
    #[test]
    fn the_tls_alpn_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let key = alpn_certificate("gw.example.com", &digest).unwrap();
        let der = key.end_entity_cert().unwrap();
        let (_, names) = super::super::storage::leaf_facts(der.as_ref()).unwrap();
        assert_eq!(names, ["gw.example.com"]);
        let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
        let ext = cert
            .tbs_certificate
            .extensions
            .unwrap()
            .into_iter()
            .find(|e| e.extn_id.to_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        let want = x509_cert::der::asn1::OctetString::new(digest.to_vec())
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(ext.extn_value.as_bytes(), want.as_slice());
    }

    #[test]
    fn guards_withdraw_their_challenge() {
        let (cert, key) = crate::server::tls::self_signed(vec!["a.example".into()]).unwrap();
        let p = std::path::Path::new("x");
        let resolver = CertResolver::new(
            crate::server::tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), p, p)
                .unwrap(),
        );
        let ch = Challenges::new(resolver);
        let armed = ch.arm_http("tok", "tok.thumb");
        assert_eq!(ch.tokens.get("tok").unwrap().as_str(), "tok.thumb");
        drop(armed);
        assert!(ch.tokens.is_empty());
    }
}
