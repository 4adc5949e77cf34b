//! The gateway's engine: the one documented boundary between the HTTP handlers (and the
//! CLI) and everything behind them — links, tokens, passwords, the store, sessions, the
//! VM backend. Handlers parse and answer; decisions are made here. The engine knows
//! nothing of HTTP: it answers with [`EngineError`], which `http::error` maps to
//! statuses in one place.

mod admin;
mod background;
pub mod confine;
mod error;
pub mod limits;
pub mod memory;
mod network;
pub mod passwords;
pub mod priority;
mod readcache;
pub mod recordings;
pub mod serial;
pub mod sessions;
mod visitor;

pub use admin::{LinkDetail, LinkSummary, TargetSpec};
pub use background::background;
pub use error::EngineError;
pub use visitor::VisitorPower;

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vmm_backend::VmBackend;

use crate::config::Config;
use crate::engine::limits::Limiter;
use crate::engine::passwords::{PasswordPolicy, PasswordVerifier};
use crate::engine::sessions::{EndReason, Sessions};
use crate::metrics::Metrics;
use crate::model::links::{ConsoleType, Link, LinkPolicy, LinkRequest};
use crate::model::tokens::{TokenConfig, TokenKeys};
use crate::store::{AuditEvent, AuditKind, Store};

/// Where a console lives.
#[derive(Debug, Clone)]
pub enum ConsoleAddress {
    Unix(std::path::PathBuf),
    Tcp(String),
}

/// A console to relay to, resolved from a stored link (never from the request).
#[derive(Debug, Clone)]
pub struct ResolvedConsole {
    pub address: ConsoleAddress,
    pub kind: ConsoleType,
    pub vnc_password: Option<crate::model::secret::Secret>,
}

/// A link as the admin API returns it on creation.
#[derive(Debug, Serialize)]
pub struct CreatedLink {
    #[serde(flatten)]
    pub link: Link,
    pub url: String,
    pub token: String,
}

/// The result of a successful visitor exchange.
#[derive(Debug)]
pub struct Exchange {
    pub link: Link,
    pub cookie_name: String,
    pub cookie_value: String,
    pub max_age: i64,
}

/// The shared state of one gateway process. Its fields are private: the HTTP layer,
/// the server and the CLI go through the methods here and in `admin`, `visitor` and
/// `network`.
#[derive(Debug)]
pub struct App {
    cfg: Config,
    /// `https://host:port` visitors use (links are built from it).
    public_base: String,
    /// Origins allowed to open console WebSockets.
    allowed_origins: Vec<String>,
    store: Arc<dyn Store>,
    backend: Arc<dyn VmBackend>,
    keys: RwLock<Arc<TokenKeys>>,
    token_config: TokenConfig,
    link_policy: LinkPolicy,
    password_policy: PasswordPolicy,
    passwords: PasswordVerifier,
    sessions: Arc<Sessions>,
    limiter: Limiter,
    metrics: Metrics,
    grants: DashMap<[u8; 32], visitor::CachedGrant>,
    /// Links and targets the visitor path read, until the next revocation poll.
    links: readcache::ReadCache<String, Link>,
    targets: readcache::ReadCache<String, crate::store::Target>,
    open_public_conns: AtomicUsize,
    shutdown: CancellationToken,
    /// Relay tasks, so shutdown can wait for their close frames.
    tasks: TaskTracker,
    /// The runtime consoles are relayed on: the one the engine was made on (the
    /// gateway's main runtime, at the process's priority). Connections are set up on a
    /// lower-priority runtime (`server`) and handed over here.
    relays: tokio::runtime::Handle,
    /// Where unix-socket targets may point (checked at registration and connect).
    confinement: crate::engine::confine::SocketConfinement,
    /// Each VM's serial port, shared by its serial-console viewers.
    serial: serial::SerialHubs,
    /// Session recordings of this gateway.
    recorder: Arc<crate::engine::recordings::Recorder>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cookie that carries a visitor's grant for one link.
pub fn cookie_name(link_id: &str) -> String {
    format!("__Host-vmgw-{link_id}")
}

impl App {
    pub async fn new(
        cfg: Config,
        public_base: String,
        store: Arc<dyn Store>,
        backend: Arc<dyn VmBackend>,
    ) -> Result<Arc<App>, EngineError> {
        let mut token_config =
            TokenConfig::new(cfg.token_issuer.clone(), cfg.token_audience.clone());
        token_config.leeway = cfg.token_leeway;
        let keys = store.signing_keys().await?;
        let keys = TokenKeys::new(&keys, token_config.clone()).map_err(EngineError::Keys)?;
        let mut allowed_origins = cfg.allowed_origins.clone();
        if let Some(o) = crate::config::origin_of(&public_base) {
            allowed_origins.push(o);
        }
        let link_policy = LinkPolicy {
            max_ttl: cfg.max_link_ttl,
            ..LinkPolicy::default()
        };
        let password_policy = PasswordPolicy {
            max_concurrent: cfg.limits.max_concurrent_hashes,
            ..PasswordPolicy::default()
        };
        let mut own_dirs = vec![cfg.data_dir.as_path()];
        own_dirs.extend(cfg.run_dir.as_deref());
        let confinement = crate::engine::confine::SocketConfinement::new(
            &cfg.targets.unix_socket_dirs,
            &own_dirs,
            &cfg.targets.unix_socket_owners,
        );
        let serial = serial::SerialHubs::new(serial::SerialLimits {
            scrollback_bytes: cfg.limits.serial_scrollback_bytes,
            viewer_queue_bytes: cfg.limits.serial_viewer_queue_bytes,
            connect_timeout: cfg.limits.console_connect_timeout,
        });
        let recorder = Arc::new(crate::engine::recordings::Recorder::new(
            cfg.recording.clone(),
            &cfg.data_dir,
            store.clone(),
        ));
        Ok(Arc::new(App {
            serial,
            recorder,
            confinement,
            limiter: Limiter::new(&cfg.limits),
            passwords: PasswordVerifier::new(password_policy.clone()),
            password_policy,
            link_policy,
            token_config,
            keys: RwLock::new(Arc::new(keys)),
            allowed_origins,
            public_base,
            store,
            backend,
            sessions: Sessions::new(),
            metrics: Metrics::default(),
            grants: DashMap::new(),
            links: readcache::ReadCache::new(cfg.limits.grant_cache_entries),
            targets: readcache::ReadCache::new(cfg.limits.grant_cache_entries),
            open_public_conns: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            relays: tokio::runtime::Handle::current(),
            cfg,
        }))
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `https://host:port` visitors use.
    pub fn public_base(&self) -> &str {
        &self.public_base
    }

    /// Whether `origin` (lower-cased) may open console WebSockets.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Live sessions (the relay registers in it; shutdown ends them).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Rate limits and per-address connection slots.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Open connections on the public listener (for `/metrics`).
    pub fn open_public_conns(&self) -> &AtomicUsize {
        &self.open_public_conns
    }

    /// Cancelled when the gateway shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Session recordings of this gateway.
    pub fn recorder(&self) -> &Arc<crate::engine::recordings::Recorder> {
        &self.recorder
    }

    /// Relay and background tasks, so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Starts a relay task on the relay runtime (tracked for shutdown).
    pub fn spawn_relay<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, &self.relays);
    }

    /// Runs `f` on the relay runtime and waits for it (cancelled if this future is
    /// dropped): what it opens (console sockets, serial hubs) is then driven by the
    /// relay runtime, not by the setup runtime that asked. `None` if the runtime is
    /// shutting down.
    pub async fn on_relay_runtime<F>(&self, f: F) -> Option<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio_util::task::AbortOnDropHandle::new(self.relays.spawn(f))
            .await
            .ok()
    }

    /// Visitors' grants held in memory now (bounded by `limits.grant_cache_entries`).
    pub fn cached_grants(&self) -> usize {
        self.grants.len()
    }

    /// The store, for the CLI's offline commands and for tests. Request handlers go
    /// through the engine's operations instead.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The VM backend, for the CLI and for tests (see [`App::store`]).
    pub fn backend(&self) -> &Arc<dyn VmBackend> {
        &self.backend
    }

    fn keys(&self) -> Arc<TokenKeys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads signing keys from the store (after a rotation).
    pub async fn reload_keys(&self) -> Result<(), EngineError> {
        let keys = self.store.signing_keys().await?;
        let keys = TokenKeys::new(&keys, self.token_config.clone()).map_err(EngineError::Keys)?;
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        Ok(())
    }

    pub async fn audit(
        &self,
        kind: AuditKind,
        link: Option<&str>,
        session: Option<&str>,
        client: Option<IpAddr>,
        detail: Option<String>,
    ) {
        let ev = AuditEvent {
            at: OffsetDateTime::now_utc(),
            kind,
            link_id: link.map(str::to_owned),
            session_id: session.map(str::to_owned),
            client: client.map(|c| c.to_string()),
            detail,
        };
        if let Err(e) = self.store.audit(ev).await {
            tracing::warn!(error = %e, "could not write an audit record");
        }
    }

    /// The visitor URL of a token: the secret rides in the fragment.
    pub fn share_url(&self, token: &str) -> String {
        format!("{}/s/#{}", self.public_base, token)
    }

    /// Whether `name` is something a link can point at: a VM of the backend or a
    /// registered target of the right kind.
    async fn check_link_target(&self, vm: &str, console: ConsoleType) -> Result<(), EngineError> {
        match self.backend.get(vm).await {
            Ok(info) => {
                let ok = match console {
                    ConsoleType::Vnc => info.spec.console.has_vnc(),
                    ConsoleType::Spice => info.spec.console.has_spice(),
                    ConsoleType::Serial => true,
                    ConsoleType::Raw => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(EngineError::Invalid(format!(
                        "VM {vm:?} has no {} console",
                        console.as_str()
                    )))
                }
            }
            Err(e) if e.is_not_found() => match self.store.get_target(vm).await? {
                Some(t) if t.kind == console => Ok(()),
                Some(t) => Err(EngineError::Invalid(format!(
                    "target {vm:?} is a {} console, not {}",
                    t.kind.as_str(),
                    console.as_str()
                ))),
                None => Err(EngineError::Invalid(format!(
                    "no VM or target named {vm:?}"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a link: validates, hashes the password, stores, signs the token.
    pub async fn create_link(
        &self,
        req: LinkRequest,
        client: Option<IpAddr>,
    ) -> Result<CreatedLink, EngineError> {
        let now = OffsetDateTime::now_utc();
        let valid = req.validate(now, &self.link_policy)?;
        self.check_link_target(&valid.vm, valid.console).await?;
        let hash = match &valid.password {
            // In the verifier's pool: within its memory bound, queued behind visitors.
            Some(pw) => Some(
                self.passwords
                    .hash_queued(pw.expose())
                    .await
                    .map_err(EngineError::Hashing)?,
            ),
            None => None,
        };
        let link = valid.into_link(crate::model::links::new_link_id(), now, hash)?;
        self.store.create_link(&link).await?;
        let keys = self.keys();
        let token = keys
            .sign(&keys.claims_for(&link, now))
            .map_err(EngineError::Keys)?;
        Metrics::inc(&self.metrics.links_created);
        self.audit(
            AuditKind::LinkCreated,
            Some(&link.id),
            None,
            client,
            Some(format!("vm={}", link.vm)),
        )
        .await;
        tracing::info!(link = %link.id, vm = %link.vm, "link created");
        Ok(CreatedLink {
            url: self.share_url(&token),
            token,
            link,
        })
    }

    /// The token and URL of a stored link (signed anew with the current key; the claims
    /// are those of the link, so any copy works the same).
    pub fn link_url(&self, link: &Link) -> Result<(String, String), EngineError> {
        let keys = self.keys();
        let token = keys
            .sign(&keys.claims_for(link, link.created_at))
            .map_err(EngineError::Keys)?;
        Ok((self.share_url(&token), token))
    }

    /// Revokes a link and ends its live sessions at once.
    pub async fn revoke_link(&self, id: &str, client: Option<IpAddr>) -> Result<Link, EngineError> {
        let revoked = self
            .store
            .revoke_link(id, OffsetDateTime::now_utc())
            .await?;
        let link = self
            .store
            .get_link(id)
            .await?
            .ok_or(EngineError::NotFound)?;
        self.links.invalidate(id);
        let ended = self.sessions.end_link(id, EndReason::Revoked);
        self.grants.retain(|_, g| g.link_id() != id);
        if revoked {
            Metrics::inc(&self.metrics.links_revoked);
            self.audit(
                AuditKind::LinkRevoked,
                Some(id),
                None,
                client,
                Some(format!("sessions_ended={ended}")),
            )
            .await;
            tracing::info!(link = %id, sessions = ended, "link revoked");
        }
        Ok(link)
    }
}
