//! The visitor's side: the token exchange, the grant cookie, the console behind a link,
//! and what a visitor may do to the VM.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use time::OffsetDateTime;
use vmm_backend::{ConsoleKind, PowerAction};

use super::{
    cookie_name, hex, sha256, App, ConsoleAddress, EngineError, Exchange, ResolvedConsole,
};
use crate::engine::passwords::PasswordError;
use crate::engine::sessions::{SessionError, SessionGuard};
use crate::metrics::Metrics;
use crate::model::links::{ConsoleType, Link, Refusal};
use crate::model::tokens::TokenError;
use crate::store::{AuditEvent, AuditKind, Grant, RedeemError, Target, TargetAddress};

/// Longest link id a cached grant holds (ours are 22 characters; a longer one, from an
/// older store, is read from the store each time).
const CACHED_LINK_ID_MAX: usize = 32;

/// A grant as the cache keeps it: inline, without an allocation of its own. A cache of
/// thousands of small `String`s, allocated between the buffers of the sessions being set
/// up, pins one heap page each after those sessions have gone (measured: ~5 MiB kept
/// after 9,900 sessions closed, with the default 4,096 entries).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedGrant {
    link_id: [u8; CACHED_LINK_ID_MAX],
    link_id_len: u8,
    pub(crate) expires_at: OffsetDateTime,
}

impl CachedGrant {
    /// `None` when the link id is too long to be kept inline.
    fn new(g: &Grant) -> Option<CachedGrant> {
        let id = g.link_id.as_bytes();
        let mut link_id = [0u8; CACHED_LINK_ID_MAX];
        link_id.get_mut(..id.len())?.copy_from_slice(id);
        Some(CachedGrant {
            link_id,
            link_id_len: u8::try_from(id.len()).ok()?,
            expires_at: g.expires_at,
        })
    }

    pub(crate) fn link_id(&self) -> &str {
        let id = &self.link_id[..usize::from(self.link_id_len)];
        // Copied from a `str` whole, so always UTF-8.
        std::str::from_utf8(id).unwrap_or_default()
    }
}

/// Caches a grant; a full cache is emptied first (the newest grants are the likeliest to
/// be used; evicted ones are read back from the store). The map keeps its capacity, so
/// its memory stays bounded by `max` entries.
fn cache_grant(grants: &DashMap<[u8; 32], CachedGrant>, key: [u8; 32], grant: &Grant, max: usize) {
    let Some(grant) = CachedGrant::new(grant) else {
        return;
    };
    if grants.len() >= max && !grants.contains_key(&key) {
        grants.clear();
    }
    grants.insert(key, grant);
}

impl App {
    /// The visitor's exchange: token (+ password) → a grant cookie for the link.
    pub async fn exchange(
        &self,
        token: &str,
        password: Option<&str>,
        client: IpAddr,
    ) -> Result<Exchange, EngineError> {
        let now = OffsetDateTime::now_utc();
        if let Err(retry) = self.limiter.exchange(client) {
            Metrics::inc(&self.metrics.rate_limited);
            return Err(EngineError::RateLimited {
                retry_after: retry.0,
                reason: "rate_limited",
            });
        }
        if password.is_some_and(|p| p.len() > self.password_policy.max_len) {
            return Err(EngineError::Invalid("password too long".into()));
        }
        let link = self.link_of_token(token, now).await?;
        if let Err(r) = link.check(now) {
            Metrics::inc(&self.metrics.redemptions_refused);
            return Err(EngineError::Refused(r));
        }
        if let Err(retry) = self.limiter.locked(&link.id) {
            Metrics::inc(&self.metrics.rate_limited);
            return Err(EngineError::RateLimited {
                retry_after: retry.0,
                reason: "locked_out",
            });
        }
        if let Some(hash) = &link.password_hash {
            self.check_password(&link.id, hash, password, client)
                .await?;
        }
        if let Some(max) = link.max_viewers {
            if self.sessions.count_viewers(&link.id) >= usize::try_from(max).unwrap_or(usize::MAX) {
                Metrics::inc(&self.metrics.redemptions_refused);
                return Err(EngineError::Refused(Refusal::ViewersFull));
            }
        }
        // The grant is stored with the redemption, so that a restart does not cost the
        // visitor a use to reconnect; so is its audit record (one durable write).
        let cookie_value = crate::model::links::random_token(32);
        let key = sha256(cookie_value.as_bytes());
        let audit = AuditEvent::new(AuditKind::LinkRedeemed, now).client(client.to_string());
        let link = match self
            .store
            .redeem_with_grant_audited(&link.id, now, &hex(&key), audit)
            .await
        {
            Ok(l) => l,
            Err(RedeemError::Refused(r)) => {
                Metrics::inc(&self.metrics.redemptions_refused);
                return Err(EngineError::Refused(r));
            }
            Err(RedeemError::NotFound) => return Err(EngineError::Unauthorized("invalid_token")),
            Err(RedeemError::Store(e)) => return Err(e.into()),
        };
        Metrics::inc(&self.metrics.redemptions);
        let grant = Grant {
            link_id: link.id.clone(),
            expires_at: link.expires_at,
        };
        cache_grant(
            &self.grants,
            key,
            &grant,
            self.cfg.limits.grant_cache_entries,
        );
        let max_age = (link.expires_at - now).whole_seconds().max(1);
        Ok(Exchange {
            cookie_name: cookie_name(&link.id),
            cookie_value,
            max_age,
            link,
        })
    }

    /// A link for the visitor path: cached until the next revocation poll (see
    /// `readcache`); unknown links are not cached.
    async fn visitor_link(&self, id: &str) -> Result<Option<Link>, EngineError> {
        if let Some(l) = self.links.get(id) {
            return Ok(Some(l));
        }
        let gen = self.links.generation();
        let link = self.store.get_link(id).await?;
        if let Some(l) = &link {
            self.links.insert(gen, l.id.clone(), l.clone());
        }
        Ok(link)
    }

    /// A registered target for the visitor path, cached like [`App::visitor_link`].
    async fn visitor_target(&self, name: &str) -> Result<Option<Target>, EngineError> {
        if let Some(t) = self.targets.get(name) {
            return Ok(Some(t));
        }
        let gen = self.targets.generation();
        let target = self.store.get_target(name).await?;
        if let Some(t) = &target {
            self.targets.insert(gen, t.name.clone(), t.clone());
        }
        Ok(target)
    }

    /// The stored link a token names, once the token's signature and times check out
    /// and its claims match the link.
    async fn link_of_token(&self, token: &str, now: OffsetDateTime) -> Result<Link, EngineError> {
        let mut verified = self.keys().verify(token, now);
        if matches!(verified, Err(TokenError::UnknownKey)) {
            // A key rotated by another process (CLI, another gateway): reload once.
            self.reload_keys().await?;
            verified = self.keys().verify(token, now);
        }
        let claims = verified.map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            match e {
                TokenError::Expired => EngineError::Refused(Refusal::Expired),
                TokenError::NotYetValid { opens_at } => {
                    EngineError::Refused(Refusal::NotYetValid { opens_at })
                }
                _ => EngineError::Unauthorized("invalid_token"),
            }
        })?;
        let link = self
            .visitor_link(&claims.jti)
            .await?
            .ok_or(EngineError::Unauthorized("invalid_token"))?;
        if link.vm != claims.vm || link.console != claims.console {
            return Err(EngineError::Unauthorized("invalid_token"));
        }
        Ok(link)
    }

    /// A link's password, checked in the bounded pool; a wrong one is counted towards
    /// the link's lockout and audited.
    async fn check_password(
        &self,
        link_id: &str,
        hash: &str,
        password: Option<&str>,
        client: IpAddr,
    ) -> Result<(), EngineError> {
        let Some(pw) = password else {
            return Err(EngineError::Unauthorized("password_required"));
        };
        match self.passwords.verify(pw, hash).await {
            Ok(true) => {
                self.limiter.password_ok(link_id);
                Ok(())
            }
            Ok(false) => {
                Metrics::inc(&self.metrics.password_failures);
                let link = Some(link_id);
                self.audit(AuditKind::PasswordFailure, link, None, Some(client), None)
                    .await;
                if let Some(lock) = self.limiter.password_failed(link_id) {
                    Metrics::inc(&self.metrics.lockouts);
                    let detail = Some(format!("for {}s", lock.secs()));
                    self.audit(AuditKind::LockedOut, link, None, Some(client), detail)
                        .await;
                }
                Err(EngineError::Unauthorized("wrong_password"))
            }
            Err(PasswordError::Busy) => {
                Metrics::inc(&self.metrics.hash_pool_full);
                Err(EngineError::Unavailable {
                    retry_after: Duration::from_secs(1),
                    reason: "busy",
                })
            }
            Err(e) => Err(EngineError::Hashing(e)),
        }
    }

    /// Checks a grant cookie for `link_id` and returns the current link.
    pub async fn check_grant(
        &self,
        link_id: &str,
        cookie: Option<&str>,
    ) -> Result<Link, EngineError> {
        let now = OffsetDateTime::now_utc();
        let cookie = cookie.ok_or(EngineError::Unauthorized("no_session"))?;
        let key = sha256(cookie.as_bytes());
        let cached = self.grants.get(&key).map(|g| *g);
        let (granted_link, expires_at) = match cached {
            Some(g) => (g.link_id() == link_id, g.expires_at),
            // Not seen since this process started: perhaps granted before a restart.
            None => {
                let g = self
                    .store
                    .get_grant(&hex(&key))
                    .await?
                    .ok_or(EngineError::Unauthorized("no_session"))?;
                cache_grant(&self.grants, key, &g, self.cfg.limits.grant_cache_entries);
                (g.link_id == link_id, g.expires_at)
            }
        };
        if !granted_link || expires_at <= now {
            return Err(EngineError::Unauthorized("no_session"));
        }
        let link = self
            .visitor_link(link_id)
            .await?
            .ok_or(EngineError::Unauthorized("no_session"))?;
        // Uses were counted at the exchange; a grant may reconnect until the link ends.
        match link.check(now) {
            Ok(()) | Err(Refusal::Exhausted) => Ok(link),
            Err(r) => Err(EngineError::Refused(r)),
        }
    }

    /// Joins the serial console of a `serial` link's VM (shared with its other viewers;
    /// see [`crate::engine::serial`]). A view-only link's input goes nowhere.
    pub async fn attach_serial(
        &self,
        link: &Link,
    ) -> Result<crate::engine::serial::SerialViewer, crate::engine::serial::SerialError> {
        let ep = self.backend.console(&link.vm, ConsoleKind::Serial).await?;
        self.serial.attach(&link.vm, &ep, link.view_only).await
    }

    /// The console of a link, from the stored link only.
    pub async fn resolve_console(&self, link: &Link) -> Result<ResolvedConsole, EngineError> {
        let kind = match link.console {
            ConsoleType::Vnc => Some(ConsoleKind::Vnc),
            ConsoleType::Spice => Some(ConsoleKind::Spice),
            ConsoleType::Serial => Some(ConsoleKind::Serial),
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
                    return Err(EngineError::Conflict("vm_not_running".into()))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "console lookup failed");
                    return Err(EngineError::ConsoleUnavailable("console_unavailable"));
                }
            }
        }
        let target: Target = self
            .visitor_target(&link.vm)
            .await?
            .filter(|t| t.kind == link.console)
            .ok_or(EngineError::ConsoleUnavailable("console_unavailable"))?;
        Ok(ResolvedConsole {
            address: match target.address {
                TargetAddress::Tcp(a) => ConsoleAddress::Tcp(a),
                TargetAddress::Unix(p) => {
                    // Checked again at every connect: the socket may have been replaced,
                    // or the target stored before confinement existed.
                    if let Err(e) = self.confinement.check(&p) {
                        tracing::warn!(target_name = %target.name, error = %e,
                            "unix-socket target refused by confinement");
                        return Err(EngineError::ConsoleUnavailable("console_unavailable"));
                    }
                    ConsoleAddress::Unix(p)
                }
            },
            kind: target.kind,
            vnc_password: target.vnc_password,
        })
    }
}

/// What a visitor's power request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitorPower {
    Start,
    Shutdown,
    Poweroff,
    Reset,
}

impl App {
    /// The state word the console page shows: `running`, `stopped`, `paused`, `other`,
    /// or `unknown` for external targets.
    pub async fn vm_state(&self, vm: &str) -> &'static str {
        match self.backend.get(vm).await {
            Ok(info) => match info.state {
                vmm_backend::VmState::Running => "running",
                vmm_backend::VmState::Stopped => "stopped",
                vmm_backend::VmState::Paused => "paused",
                vmm_backend::VmState::Other => "other",
            },
            Err(_) => "unknown",
        }
    }

    /// The guest keyboard layout of a link's VM, for the console page's "type text" and
    /// on-screen keys (None: not set, or not a VM; the page then assumes `en-us`).
    pub async fn keyboard_layout(&self, link: &Link) -> Option<&'static str> {
        if link.console == ConsoleType::Raw {
            return None;
        }
        let info = self.backend.get(&link.vm).await.ok()?;
        info.spec.keyboard_layout.map(|l| l.as_str())
    }

    /// A visitor's power action on the VM of a link that allows it, audited. A shutdown
    /// may take the guest's whole grace period: it is started and `Ok(false)` returned
    /// at once (finished in the background); other actions complete first (`Ok(true)`).
    pub async fn visitor_power(
        self: &Arc<Self>,
        link: &Link,
        action: VisitorPower,
        client: IpAddr,
    ) -> Result<bool, EngineError> {
        if !link.allow_power {
            return Err(EngineError::Forbidden("power_not_allowed"));
        }
        let (action, word) = match action {
            VisitorPower::Start => (PowerAction::Start, "start"),
            VisitorPower::Shutdown => (PowerAction::Shutdown, "shutdown"),
            VisitorPower::Poweroff => (PowerAction::Poweroff, "poweroff"),
            VisitorPower::Reset => (PowerAction::Reset, "reset"),
        };
        self.audit(
            AuditKind::VmAction,
            Some(&link.id),
            None,
            Some(client),
            Some(format!("visitor {word}")),
        )
        .await;
        if action == PowerAction::Shutdown {
            let app = self.clone();
            let vm = link.vm.clone();
            self.tasks.spawn(async move {
                if let Err(e) = app.backend.power(&vm, action).await {
                    tracing::debug!(error = %e, "visitor shutdown failed");
                }
            });
            return Ok(false);
        }
        match self.backend.power(&link.vm, action).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_client_error() => {
                tracing::debug!(error = %e, "visitor power action refused");
                Err(EngineError::Conflict("not_possible_now".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a viewer slot (or, for SPICE's secondary channels, a non-viewer session)
    /// on the link's VM for `client`.
    pub fn open_session(
        &self,
        link: &Link,
        client: IpAddr,
        viewer: bool,
    ) -> Result<SessionGuard, EngineError> {
        self.sessions
            .open(&link.id, &link.vm, client, link.max_viewers, viewer)
            .map_err(|e| match e {
                SessionError::ViewersFull(_) => EngineError::Refused(Refusal::ViewersFull),
                SessionError::ShuttingDown => EngineError::Unavailable {
                    retry_after: Duration::from_secs(5),
                    reason: "shutting_down",
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_cache_stays_bounded_and_keeps_the_newest() {
        let grants = DashMap::new();
        let grant = |i: u32| Grant {
            link_id: format!("link-{i}"),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        };
        for i in 0..1000 {
            cache_grant(&grants, key(i), &grant(i), 64);
            assert!(grants.len() <= 64, "{} entries after {i}", grants.len());
            assert_eq!(
                grants.get(&key(i)).map(|g| g.link_id().to_owned()),
                Some(format!("link-{i}"))
            );
        }
        // Caching a grant already there (a store read after a restart) evicts nothing.
        let n = grants.len();
        cache_grant(&grants, key(999), &grant(999), n);
        assert_eq!(grants.len(), n);
        // Link ids up to 32 bytes are kept whole; a longer one is not cached at all.
        let long = |len: usize| Grant {
            link_id: "é".repeat(len / 2),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        let g = CachedGrant::new(&long(32)).expect("32 bytes fit");
        assert_eq!(g.link_id(), "é".repeat(16));
        assert!(CachedGrant::new(&long(34)).is_none());
        let before = grants.len();
        cache_grant(&grants, key(5000), &long(34), 10_000);
        assert_eq!(grants.len(), before);
        assert!(grants.get(&key(5000)).is_none());
    }
}
