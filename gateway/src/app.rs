//! The gateway's engine: the one documented boundary between the HTTP handlers (and the
//! CLI) and everything behind them — links, tokens, passwords, the store, sessions, the
//! VM backend. Handlers parse and answer; decisions are made here.

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vmm_backend::{ConsoleKind, VmBackend};

use crate::config::Config;
use crate::http::ApiError;
use crate::limits::Limiter;
use crate::links::{ConsoleType, Link, LinkPolicy, LinkRequest, Refusal};
use crate::metrics::Metrics;
use crate::passwords::{PasswordError, PasswordPolicy, PasswordVerifier};
use crate::sessions::{EndReason, Sessions};
use crate::store::{AuditEvent, AuditKind, Grant, RedeemError, Store, Target, TargetAddress};
use crate::tokens::{TokenConfig, TokenError, TokenKeys};

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
    pub vnc_password: Option<crate::secret::Secret>,
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

/// The shared state of one gateway process.
#[derive(Debug)]
pub struct App {
    pub cfg: Config,
    /// `https://host:port` visitors use (links are built from it).
    pub public_base: String,
    /// Origins allowed to open console WebSockets.
    pub allowed_origins: Vec<String>,
    pub store: Arc<dyn Store>,
    pub backend: Arc<dyn VmBackend>,
    pub keys: RwLock<Arc<TokenKeys>>,
    pub token_config: TokenConfig,
    pub link_policy: LinkPolicy,
    pub password_policy: PasswordPolicy,
    pub passwords: PasswordVerifier,
    pub sessions: Arc<Sessions>,
    pub limiter: Limiter,
    pub metrics: Metrics,
    pub grants: DashMap<[u8; 32], Grant>,
    pub open_public_conns: AtomicUsize,
    pub shutdown: CancellationToken,
    /// Relay tasks, so shutdown can wait for their close frames.
    pub tasks: TaskTracker,
    /// The browser pages.
    pub assets: crate::http::assets::Assets,
    /// Where unix-socket targets may point (checked at registration and connect).
    pub confinement: crate::confine::SocketConfinement,
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
    ) -> Result<Arc<App>, ApiError> {
        let mut token_config =
            TokenConfig::new(cfg.token_issuer.clone(), cfg.token_audience.clone());
        token_config.leeway = cfg.token_leeway;
        let keys = store.signing_keys().await?;
        let keys = TokenKeys::new(&keys, token_config.clone())
            .map_err(|e| ApiError::Internal(format!("signing keys: {e}")))?;
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
        let confinement = crate::confine::SocketConfinement::new(
            &cfg.targets.unix_socket_dirs,
            &own_dirs,
            &cfg.targets.unix_socket_owners,
        );
        Ok(Arc::new(App {
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
            open_public_conns: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            assets: crate::http::assets::Assets::load(&cfg.static_dir),
            cfg,
        }))
    }

    fn keys(&self) -> Arc<TokenKeys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads signing keys from the store (after a rotation).
    pub async fn reload_keys(&self) -> Result<(), ApiError> {
        let keys = self.store.signing_keys().await?;
        let keys = TokenKeys::new(&keys, self.token_config.clone())
            .map_err(|e| ApiError::Internal(format!("signing keys: {e}")))?;
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
    async fn check_link_target(&self, vm: &str, console: ConsoleType) -> Result<(), ApiError> {
        match self.backend.get(vm).await {
            Ok(info) => {
                let ok = match console {
                    ConsoleType::Vnc => info.spec.console.has_vnc(),
                    ConsoleType::Spice => info.spec.console.has_spice(),
                    ConsoleType::Raw => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(ApiError::BadRequest(format!(
                        "VM {vm:?} has no {} console",
                        console.as_str()
                    )))
                }
            }
            Err(e) if e.is_not_found() => match self.store.get_target(vm).await? {
                Some(t) if t.kind == console => Ok(()),
                Some(t) => Err(ApiError::BadRequest(format!(
                    "target {vm:?} is a {} console, not {}",
                    t.kind.as_str(),
                    console.as_str()
                ))),
                None => Err(ApiError::BadRequest(format!(
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
    ) -> Result<CreatedLink, ApiError> {
        let now = OffsetDateTime::now_utc();
        let valid = req.validate(now, &self.link_policy)?;
        self.check_link_target(&valid.vm, valid.console).await?;
        let hash = match &valid.password {
            // In the verifier's pool: within its memory bound, queued behind visitors.
            Some(pw) => Some(
                self.passwords
                    .hash_queued(pw.expose())
                    .await
                    .map_err(|e| ApiError::Internal(format!("hashing: {e}")))?,
            ),
            None => None,
        };
        let link = valid.into_link(crate::links::new_link_id(), now, hash)?;
        self.store.create_link(&link).await?;
        let keys = self.keys();
        let token = keys
            .sign(&keys.claims_for(&link, now))
            .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
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
    pub fn link_url(&self, link: &Link) -> Result<(String, String), ApiError> {
        let keys = self.keys();
        let token = keys
            .sign(&keys.claims_for(link, link.created_at))
            .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
        Ok((self.share_url(&token), token))
    }

    /// Revokes a link and ends its live sessions at once.
    pub async fn revoke_link(&self, id: &str, client: Option<IpAddr>) -> Result<Link, ApiError> {
        let revoked = self
            .store
            .revoke_link(id, OffsetDateTime::now_utc())
            .await?;
        let link = self.store.get_link(id).await?.ok_or(ApiError::NotFound)?;
        let ended = self.sessions.end_link(id, EndReason::Revoked);
        self.grants.retain(|_, g| g.link_id != id);
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

    /// The visitor's exchange: token (+ password) → a grant cookie for the link.
    pub async fn exchange(
        &self,
        token: &str,
        password: Option<&str>,
        client: IpAddr,
    ) -> Result<Exchange, ApiError> {
        let now = OffsetDateTime::now_utc();
        if let Err(retry) = self.limiter.exchange(client) {
            Metrics::inc(&self.metrics.rate_limited);
            return Err(ApiError::TooManyRequests {
                retry_after: retry.0,
                reason: "rate_limited",
            });
        }
        if password.is_some_and(|p| p.len() > self.password_policy.max_len) {
            return Err(ApiError::BadRequest("password too long".into()));
        }
        let mut verified = self.keys().verify(token, now);
        if matches!(verified, Err(TokenError::UnknownKey)) {
            // A key rotated by another process (CLI, another gateway): reload once.
            self.reload_keys().await?;
            verified = self.keys().verify(token, now);
        }
        let claims = verified.map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            match e {
                TokenError::Expired => ApiError::Refused(Refusal::Expired),
                TokenError::NotYetValid { opens_at } => {
                    ApiError::Refused(Refusal::NotYetValid { opens_at })
                }
                _ => ApiError::Unauthorized("invalid_token"),
            }
        })?;
        let link = self
            .store
            .get_link(&claims.jti)
            .await?
            .ok_or(ApiError::Unauthorized("invalid_token"))?;
        if link.vm != claims.vm || link.console != claims.console {
            return Err(ApiError::Unauthorized("invalid_token"));
        }
        if let Err(r) = link.check(now) {
            Metrics::inc(&self.metrics.redemptions_refused);
            return Err(ApiError::Refused(r));
        }
        if let Err(retry) = self.limiter.locked(&link.id) {
            Metrics::inc(&self.metrics.rate_limited);
            return Err(ApiError::TooManyRequests {
                retry_after: retry.0,
                reason: "locked_out",
            });
        }
        if let Some(hash) = &link.password_hash {
            let Some(pw) = password else {
                return Err(ApiError::Unauthorized("password_required"));
            };
            match self.passwords.verify(pw, hash).await {
                Ok(true) => self.limiter.password_ok(&link.id),
                Ok(false) => {
                    Metrics::inc(&self.metrics.password_failures);
                    self.audit(
                        AuditKind::PasswordFailure,
                        Some(&link.id),
                        None,
                        Some(client),
                        None,
                    )
                    .await;
                    if let Some(lock) = self.limiter.password_failed(&link.id) {
                        Metrics::inc(&self.metrics.lockouts);
                        self.audit(
                            AuditKind::LockedOut,
                            Some(&link.id),
                            None,
                            Some(client),
                            Some(format!("for {}s", lock.secs())),
                        )
                        .await;
                    }
                    return Err(ApiError::Unauthorized("wrong_password"));
                }
                Err(PasswordError::Busy) => {
                    Metrics::inc(&self.metrics.hash_pool_full);
                    return Err(ApiError::Unavailable {
                        retry_after: Duration::from_secs(1),
                        reason: "busy",
                    });
                }
                Err(e) => return Err(ApiError::Internal(format!("password check: {e}"))),
            }
        }
        if let Some(max) = link.max_viewers {
            if self.sessions.count_viewers(&link.id) >= usize::try_from(max).unwrap_or(usize::MAX) {
                Metrics::inc(&self.metrics.redemptions_refused);
                return Err(ApiError::Refused(Refusal::ViewersFull));
            }
        }
        // The grant is stored with the redemption, so that a restart does not cost the
        // visitor a use to reconnect.
        let cookie_value = crate::links::random_token(32);
        let key = sha256(cookie_value.as_bytes());
        let link = match self
            .store
            .redeem_with_grant(&link.id, now, &hex(&key))
            .await
        {
            Ok(l) => l,
            Err(RedeemError::Refused(r)) => {
                Metrics::inc(&self.metrics.redemptions_refused);
                return Err(ApiError::Refused(r));
            }
            Err(RedeemError::NotFound) => return Err(ApiError::Unauthorized("invalid_token")),
            Err(RedeemError::Store(e)) => return Err(e.into()),
        };
        Metrics::inc(&self.metrics.redemptions);
        self.audit(
            AuditKind::LinkRedeemed,
            Some(&link.id),
            None,
            Some(client),
            Some(format!("uses={}", link.uses)),
        )
        .await;
        let grant = Grant {
            link_id: link.id.clone(),
            expires_at: link.expires_at,
        };
        self.grants.insert(key, grant);
        let max_age = (link.expires_at - now).whole_seconds().max(1);
        Ok(Exchange {
            cookie_name: cookie_name(&link.id),
            cookie_value,
            max_age,
            link,
        })
    }

    /// Checks a grant cookie for `link_id` and returns the current link.
    pub async fn check_grant(&self, link_id: &str, cookie: Option<&str>) -> Result<Link, ApiError> {
        let now = OffsetDateTime::now_utc();
        let cookie = cookie.ok_or(ApiError::Unauthorized("no_session"))?;
        let key = sha256(cookie.as_bytes());
        let cached = self.grants.get(&key).map(|g| g.clone());
        let grant = match cached {
            Some(g) => g,
            // Not seen since this process started: perhaps granted before a restart.
            None => {
                let g = self
                    .store
                    .get_grant(&hex(&key))
                    .await?
                    .ok_or(ApiError::Unauthorized("no_session"))?;
                self.grants.insert(key, g.clone());
                g
            }
        };
        if grant.link_id != link_id || grant.expires_at <= now {
            return Err(ApiError::Unauthorized("no_session"));
        }
        let link = self
            .store
            .get_link(link_id)
            .await?
            .ok_or(ApiError::Unauthorized("no_session"))?;
        // Uses were counted at the exchange; a grant may reconnect until the link ends.
        match link.check(now) {
            Ok(()) | Err(Refusal::Exhausted) => Ok(link),
            Err(r) => Err(ApiError::Refused(r)),
        }
    }

    /// The console of a link, from the stored link only.
    pub async fn resolve_console(&self, link: &Link) -> Result<ResolvedConsole, ApiError> {
        let kind = match link.console {
            ConsoleType::Vnc => Some(ConsoleKind::Vnc),
            ConsoleType::Spice => Some(ConsoleKind::Spice),
            ConsoleType::Raw => None,
        };
        if let Some(kind) = kind {
            match self.backend.console(&link.vm, kind).await {
                Ok(ep) => {
                    return Ok(ResolvedConsole {
                        address: ConsoleAddress::Unix(ep.socket),
                        kind: link.console,
                        vnc_password: None,
                    })
                }
                Err(vmm_backend::BackendError::NotRunning(_)) => {
                    return Err(ApiError::Conflict("vm_not_running".into()))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "console lookup failed");
                    return Err(ApiError::BadGateway("console_unavailable"));
                }
            }
        }
        let target: Target = self
            .store
            .get_target(&link.vm)
            .await?
            .filter(|t| t.kind == link.console)
            .ok_or(ApiError::BadGateway("console_unavailable"))?;
        Ok(ResolvedConsole {
            address: match target.address {
                TargetAddress::Tcp(a) => ConsoleAddress::Tcp(a),
                TargetAddress::Unix(p) => {
                    // Checked again at every connect: the socket may have been replaced,
                    // or the target stored before confinement existed.
                    if let Err(e) = self.confinement.check(&p) {
                        tracing::warn!(target_name = %target.name, error = %e,
                            "unix-socket target refused by confinement");
                        return Err(ApiError::BadGateway("console_unavailable"));
                    }
                    ConsoleAddress::Unix(p)
                }
            },
            kind: target.kind,
            vnc_password: target.vnc_password,
        })
    }
}

/// Periodic housekeeping while serving: prune limiter state and expired grants, and pick
/// up revocations made outside this process (CLI, other gateways sharing the store).
pub async fn background(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.cfg.limits.revocation_poll);
    let mut prune_every = 0u32;
    let mut trim = crate::memory::TrimPolicy::new(crate::memory::TRIM_AFTER_SESSIONS_ENDED);
    loop {
        tick.tick().await;
        if trim.observe(app.sessions.count()) {
            let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
        }
        prune_every += 1;
        if prune_every >= 60 {
            prune_every = 0;
            // Keys rotated or removed elsewhere take effect here too.
            if let Err(e) = app.reload_keys().await {
                tracing::warn!(error = %e, "reloading signing keys failed");
            }
            app.limiter.prune();
            let now = OffsetDateTime::now_utc();
            app.grants.retain(|_, g| g.expires_at > now);
            if let Err(e) = app.store.prune_grants(now).await {
                tracing::warn!(error = %e, "pruning expired grants failed");
            }
        }
        if app.sessions.count() == 0 {
            continue;
        }
        for link_id in app.sessions.live_links() {
            match app.store.get_link(&link_id).await {
                Ok(Some(l)) if l.revoked => {
                    app.sessions.end_link(&link_id, EndReason::Revoked);
                }
                Ok(None) => {
                    app.sessions.end_link(&link_id, EndReason::Revoked);
                }
                _ => {}
            }
        }
    }
}
