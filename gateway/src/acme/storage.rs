//! What ACME leaves in the data directory (`DATA/acme/`), so that restarts reuse it:
//! the account's credentials and the last certificate with its key. Each file is named
//! after the CA's directory URL (a hash of it), so that moving from a staging CA to the
//! production one orders anew. Secrets are written 0600, through a temporary file
//! renamed into place.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

use crate::server::tls;

/// Errors reading or writing the stored ACME material.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("creating {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the account file {0} is not valid")]
    Account(PathBuf, #[source] serde_json::Error),
    #[error("the certificate is not valid X.509")]
    X509(#[source] x509_cert::der::Error),
    #[error("the certificate has no usable expiry time")]
    NoExpiry,
    #[error("loading the certificate and key")]
    Tls(#[from] tls::TlsError),
}

/// A certificate ready to serve, with what scheduling needs to know of it.
#[derive(Debug)]
pub struct StoredCert {
    pub key: CertifiedKey,
    pub not_after: SystemTime,
    /// The DNS names of its subjectAltName, lower-case.
    pub names: Vec<String>,
}

impl StoredCert {
    /// Loads a PEM chain and key; the first certificate is the leaf.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        cert_place: &Path,
        key_place: &Path,
    ) -> Result<StoredCert, StorageError> {
        let key = tls::certified_key_from_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            cert_place,
            key_place,
        )?;
        let leaf = key.end_entity_cert().map_err(tls::TlsError::Config)?;
        let (not_after, names) = leaf_facts(leaf.as_ref())?;
        Ok(StoredCert {
            key,
            not_after,
            names,
        })
    }

    /// Whether it names every domain in `domains`.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.names.contains(d))
    }
}

/// The expiry and DNS names of a DER certificate.
pub fn leaf_facts(der: &[u8]) -> Result<(SystemTime, Vec<String>), StorageError> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let cert = x509_cert::Certificate::from_der(der).map_err(StorageError::X509)?;
    let tbs = &cert.tbs_certificate;
    let not_after = tbs.validity.not_after.to_system_time();
    if not_after <= SystemTime::UNIX_EPOCH {
        return Err(StorageError::NoExpiry);
    }
    let mut names = Vec::new();
    if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
        for n in san.0 {
            if let GeneralName::DnsName(d) = n {
                names.push(d.as_str().to_ascii_lowercase());
            }
        }
    }
    Ok((not_after, names))
}

/// `DATA/acme/`, for one CA.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
    /// A short hash of the CA's directory URL, in every file name.
    tag: String,
}

impl Storage {
    /// The directory, created (0700) if needed, for the CA at `directory`.
    pub fn open(data_dir: &Path, directory: &str) -> Result<Storage, StorageError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = data_dir.join("acme");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| StorageError::Dir(dir.clone(), e))?;
        let digest = Sha256::digest(directory.as_bytes());
        let tag = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Storage { dir, tag })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, kind: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{}.{ext}", self.tag))
    }

    pub fn cert_path(&self) -> PathBuf {
        self.file("cert", "pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.file("key", "pem")
    }

    fn account_path(&self) -> PathBuf {
        self.file("account", "json")
    }

    /// The stored credentials of the account, if any.
    pub fn account(&self) -> Result<Option<instant_acme::AccountCredentials>, StorageError> {
        let path = self.account_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::Read(path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StorageError::Account(path, e))
    }

    pub fn save_account(
        &self,
        creds: &instant_acme::AccountCredentials,
    ) -> Result<(), StorageError> {
        let path = self.account_path();
        let json = serde_json::to_vec(creds).map_err(|e| StorageError::Account(path.clone(), e))?;
        write_private(&path, &json)
    }

    /// Deletes the stored account (the CA no longer knows it); a new one is created at
    /// the next order.
    pub fn forget_account(&self) {
        let path = self.account_path();
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                file = %path.display(),
                "the CA does not know the stored ACME account; a new one will be created"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "removing the ACME account failed")
            }
        }
    }

    /// The stored certificate, if there is one that loads. One that does not is logged
    /// and ignored (a new one will be ordered).
    pub fn certificate(&self) -> Option<StoredCert> {
        let (cp, kp) = (self.cert_path(), self.key_path());
        let (Ok(chain), Ok(key)) = (std::fs::read_to_string(&cp), std::fs::read_to_string(&kp))
        else {
            return None;
        };
        match StoredCert::from_pem(&chain, &key, &cp, &kp) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    cert = %cp.display(),
                    error = %crate::http::error::Chain(&e),
                    "the stored ACME certificate does not load; ordering a new one"
                );
                None
            }
        }
    }

    /// Stores a certificate chain and its key (the key first, both replaced atomically).
    pub fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), StorageError> {
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), chain_pem.as_bytes())
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file renamed over it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    crate::launch::write_private(&tmp, bytes).map_err(|e| StorageError::Write(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| StorageError::Write(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_certificate_round_trips_with_its_facts_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::open(dir.path(), "https://ca.example/dir").unwrap();
        assert!(st.certificate().is_none());
        let ck = rcgen::generate_simple_self_signed(vec!["A.example".into(), "b.example".into()])
            .unwrap();
        st.save_certificate(&ck.cert.pem(), &ck.key_pair.serialize_pem())
            .unwrap();
        let c = st.certificate().unwrap();
        assert_eq!(c.names, ["a.example", "b.example"]);
        assert!(c.covers(&["b.example".into()]));
        assert!(!c.covers(&["c.example".into()]));
        assert!(c.not_after > SystemTime::now());
        for f in [st.key_path(), st.cert_path()] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f:?}");
        }
        let mode = std::fs::metadata(st.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Another CA's directory has its own files.
        let other = Storage::open(dir.path(), "https://staging.example/dir").unwrap();
        assert!(other.certificate().is_none());
        // A damaged file is ignored, not fatal.
        std::fs::write(st.cert_path(), "garbage").unwrap();
        assert!(st.certificate().is_none());
    }
}
