//! Putting a gateway together: store, backend, TLS, listeners, the engine.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use vmm_backend::{BackendConfig, QemuBackend, VmBackend};

use crate::acme::Acme;
use crate::config::{Config, StoreSettings};
use crate::engine::App;
use crate::http::assets::Assets;
use crate::http::Site;
use crate::server::tls::{self, ListenerTls, TlsError};
use crate::server::{self, Listeners};
use crate::store::{default_sqlite_path, PgStore, SqliteStore, Store, StoreError};

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("creating the data directory {0}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    #[error("opening the store")]
    Store(#[from] StoreError),
    #[error("opening the VM backend")]
    Backend(#[from] vmm_backend::BackendError),
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS")]
    Tls(#[from] TlsError),
    #[error("ACME")]
    Acme(#[from] crate::acme::AcmeError),
    #[error("starting the engine")]
    Engine(#[from] crate::engine::EngineError),
}

/// Opens the configured store: PostgreSQL when `[store] url` is set, else the SQLite
/// file of the data directory. The data directory is created if needed either way (VMs
/// and TLS material live there).
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, LaunchError> {
    let data_dir = &cfg.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| LaunchError::DataDir(data_dir.clone(), e))?;
    match &cfg.store {
        StoreSettings::Postgres(pg) => Ok(Arc::new(PgStore::open(pg).await?)),
        StoreSettings::Sqlite { commit_interval } => Ok(Arc::new(
            SqliteStore::open(default_sqlite_path(data_dir))?
                .with_commit_interval(*commit_interval),
        )),
    }
}

/// The VM backend for a configuration.
pub fn open_backend(cfg: &Config, watch_events: bool) -> Result<QemuBackend, LaunchError> {
    let mut b = BackendConfig::new(&cfg.data_dir);
    b.qemu_binary = cfg.qemu_binary.clone();
    b.shutdown_grace = cfg.shutdown_grace;
    b.guest_agent_timeout = cfg.guest_agent_timeout;
    if let Some(r) = &cfg.run_dir {
        b.run_dir = r.clone();
    }
    b.watch_events = watch_events;
    Ok(QemuBackend::open(b)?)
}

/// A gateway ready to serve: the engine and its bound listeners.
#[derive(Debug)]
pub struct Gateway {
    pub app: Arc<App>,
    /// The browser pages.
    pub assets: Assets,
    /// The SHA-256 fingerprint of the public certificate when it is self-signed.
    pub self_signed_fingerprint: Option<String>,
    pub listeners: Listeners,
    pub public_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
}

impl Gateway {
    /// Binds the listeners and builds the engine. The public certificate comes from
    /// files, from ACME (`[public.acme]`, ordered in the background once serving), or
    /// else is a self-signed one for `localhost` (the demo's case).
    pub async fn bind(
        cfg: Config,
        backend: Option<Arc<dyn VmBackend>>,
    ) -> Result<Gateway, LaunchError> {
        let store = open_store(&cfg).await?;
        let backend: Arc<dyn VmBackend> = match backend {
            Some(b) => b,
            None => Arc::new(open_backend(&cfg, true)?),
        };
        // Bring the virtual switches back to their saved state (after a reboot, or
        // changes made behind our back); nothing to do when none are configured.
        let net = backend.network();
        if net.state().map(|s| !s.switches.is_empty()).unwrap_or(false) {
            match net.reconcile().await {
                Ok(r) => tracing::info!(
                    changes = r.ovs_commands,
                    taps_removed = r.removed_taps.len(),
                    "virtual switches reconciled"
                ),
                Err(e) => tracing::warn!(error = %e, "reconciling virtual switches failed"),
            }
        }
        let (public_tls, acme) = public_tls(&cfg).await?;
        let self_signed = cfg.public_tls.is_none() && cfg.public_acme.is_none();
        let self_signed_fingerprint = self_signed.then(|| {
            let fp = tls::fingerprint(&public_tls.resolver.current());
            tracing::info!(sha256 = %fp, "serving a self-signed certificate");
            fp
        });
        let admin_tls = match &cfg.admin_tls {
            Some(f) => Some(ListenerTls::from_files(&f.cert, &f.key, false)?),
            None => None,
        };
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| LaunchError::Bind { addr, source })
        };
        let public = bind(cfg.public_listen).await?;
        let admin = bind(cfg.admin_listen).await?;
        let public_addr = public.local_addr().map_err(|source| LaunchError::Bind {
            addr: cfg.public_listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| LaunchError::Bind {
            addr: cfg.admin_listen,
            source,
        })?;
        let base = cfg.public_base(public_addr);
        let assets = match &cfg.static_dir {
            Some(dir) => Assets::load(dir),
            None => Assets::embedded(),
        };
        let app = App::new(cfg, base, store, backend).await?;
        Ok(Gateway {
            app,
            assets,
            self_signed_fingerprint,
            listeners: Listeners {
                public,
                public_tls,
                admin,
                admin_tls,
                acme,
            },
            public_addr,
            admin_addr,
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let site = Arc::new(Site {
            app: self.app,
            assets: self.assets,
        });
        server::run(site, self.listeners, shutdown).await;
    }
}

/// The public listener's TLS: from files, from ACME (with the task that keeps it), or
/// else a self-signed certificate for `localhost` kept in the data directory.
async fn public_tls(cfg: &Config) -> Result<(ListenerTls, Option<Acme>), LaunchError> {
    match (&cfg.public_tls, &cfg.public_acme) {
        (Some(f), _) => Ok((ListenerTls::from_files(&f.cert, &f.key, false)?, None)),
        (None, Some(settings)) => {
            let (tls, task) = Acme::prepare(settings.clone(), &cfg.data_dir, &cfg.limits).await?;
            Ok((tls, Some(task)))
        }
        (None, None) => {
            let (cert, key) = tls::self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
            let dir = cfg.data_dir.join("tls");
            std::fs::create_dir_all(&dir).map_err(|e| LaunchError::DataDir(dir.clone(), e))?;
            let (cp, kp) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
            if !cp.exists() || !kp.exists() {
                write_private(&kp, key.as_bytes())
                    .map_err(|e| LaunchError::DataDir(kp.clone(), e))?;
                std::fs::write(&cp, cert).map_err(|e| LaunchError::DataDir(cp.clone(), e))?;
            }
            // The demo's certificate is not watched for changes.
            let tls = ListenerTls {
                files: None,
                ..ListenerTls::from_files(&cp, &kp, false)?
            };
            Ok((tls, None))
        }
    }
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
