//! Housekeeping while serving.

use std::sync::Arc;

use time::OffsetDateTime;

use super::App;
use crate::engine::sessions::EndReason;

/// Periodic housekeeping while serving: prune limiter state and expired grants, and pick
/// up revocations made outside this process (CLI, other gateways sharing the store).
pub async fn background(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.cfg.limits.revocation_poll);
    let mut prune_every = 0u32;
    app.recordings_housekeeping(true).await;
    let mut trim =
        crate::engine::memory::TrimPolicy::new(crate::engine::memory::TRIM_AFTER_SESSIONS_ENDED);
    loop {
        tick.tick().await;
        // Links and targets read by the visitor path are read again from now on (see
        // `readcache`): a revoke made elsewhere stops new sessions from here, and the
        // loop below ends the ones opened before.
        app.links.clear();
        app.targets.clear();
        if trim.observe(app.sessions.count(), std::time::Instant::now()) {
            app.sessions.shrink();
            if let Err(e) = app.store.release_memory().await {
                tracing::debug!(error = %e, "the store could not release its cache");
            }
            let _ = tokio::task::spawn_blocking(crate::engine::memory::release_free_memory).await;
        }
        prune_every += 1;
        if prune_every >= 60 {
            prune_every = 0;
            // Keys rotated or removed elsewhere take effect here too.
            if let Err(e) = app.reload_keys().await {
                tracing::warn!(error = %e, "reloading signing keys failed");
            }
            app.limiter.prune();
            app.recordings_housekeeping(false).await;
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
