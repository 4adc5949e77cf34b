//! The HTTPS client that talks to the CA (rustls with ring, like the listeners; the
//! system's roots or `directory_ca`), and the ACME account, created once and then
//! reused from the data directory.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, BodyWrapper, BytesResponse, HttpClient, NewAccount};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::config::AcmeSettings;
use super::storage::Storage;
use super::AcmeError;

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the directory CA file {0}")]
    ReadCa(std::path::PathBuf, #[source] std::io::Error),
    #[error("no usable certificate in the directory CA file {0}")]
    NoCa(std::path::PathBuf),
    #[error("the system has no usable root certificates")]
    NoSystemRoots,
    #[error("TLS client configuration")]
    Tls(#[from] rustls::Error),
}

/// A client for the CA, cheap to clone.
#[derive(Clone)]
pub struct CaClient(Https);

impl HttpClient for CaClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            fut.await
                .map(BytesResponse::from)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaClient")
    }
}

fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| ClientError::ReadCa(path.to_owned(), e))?;
            for c in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
                // A certificate that is not a usable root is skipped.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(ClientError::NoCa(path.to_owned()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::NoSystemRoots);
            }
        }
    }
    Ok(roots)
}

impl CaClient {
    pub fn new(ca_file: Option<&Path>) -> Result<CaClient, ClientError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(CaClient(
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }

    /// The account at the configured CA: the stored one, else a new one (stored).
    pub async fn account(
        &self,
        settings: &AcmeSettings,
        storage: &Storage,
    ) -> Result<Account, AcmeError> {
        let builder = || Account::builder_with_http(Box::new(self.clone()));
        if let Some(creds) = storage.account()? {
            return builder()
                .from_credentials(creds)
                .await
                .map_err(AcmeError::from_ca);
        }
        let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, creds) = builder()
            .create(&new, settings.directory.clone(), None)
            .await
            .map_err(AcmeError::from_ca)?;
        if let Err(e) = storage.save_account(&creds) {
            // Usable now; a restart will create another one.
            tracing::warn!(
                error = %crate::http::error::Chain(&e),
                "the new ACME account could not be stored"
            );
        }
        tracing::info!(
            directory = %settings.directory,
            account = %account.id(),
            "ACME account created"
        );
        Ok(account)
    }
}
