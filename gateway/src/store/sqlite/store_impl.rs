//! [`Store`] for [`SqliteStore`]: the SQL, in SQLite's dialect; every rule that is not
//! SQL comes from `rows.rs`, shared with the PostgreSQL store.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use time::OffsetDateTime;

use super::super::recordings::{
    audit_params, filter_params, AuditEntry, AuditQuery, RecordingFilter, RecordingInfo,
    RecordingRow, RecordingStatus, MAX_RECORDING_LIST, RECORDING_COLS,
};
use super::super::rows::{
    audit_limit, inserted, refusal, rotation_time, same_hash, to_ms, AuditRow, KeyRow, LinkRow,
    MaybeUnique, NewToken, TargetRow, TokenRow, Unique, AUDIT_COLS, KEY_COLS, LINK_COLS,
    TARGET_COLS, TOKEN_COLS,
};
use super::super::{
    admin_token_hash, plausible_admin_token, redeemed_audit, AdminTokenInfo, AuditEvent, Grant,
    RedeemError, Store, StoreError, Target,
};
use super::{lock, AuditQueue, QueuedWrite, SqliteStore};
use crate::model::links::Link;
use crate::model::tokens::SigningKey;

impl MaybeUnique for rusqlite::Error {
    fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        )
    }
}

fn link_row(r: &Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        id: r.get(0)?,
        vm: r.get(1)?,
        console: r.get(2)?,
        expires_at_ms: r.get(3)?,
        not_before_ms: r.get(4)?,
        password_hash: r.get(5)?,
        max_uses: r.get(6)?,
        max_viewers: r.get(7)?,
        view_only: r.get(8)?,
        allow_power: r.get(9)?,
        note: r.get(10)?,
        uses: r.get(11)?,
        created_at_ms: r.get(12)?,
        revoked_at_ms: r.get(13)?,
        clipboard: r.get(14)?,
        record: r.get(15)?,
    })
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at_ms: r.get(2)?,
        revoked_at_ms: r.get(3)?,
    })
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        kid: r.get(0)?,
        secret: r.get(1)?,
        created_at_ms: r.get(2)?,
        retired: r.get(3)?,
    })
}

fn target_row(r: &Row<'_>) -> rusqlite::Result<TargetRow> {
    Ok(TargetRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        address_kind: r.get(2)?,
        address: r.get(3)?,
        vnc_password: r.get(4)?,
        created_at_ms: r.get(5)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        at_ms: r.get(0)?,
        kind: r.get(1)?,
        link_id: r.get(2)?,
        session_id: r.get(3)?,
        client: r.get(4)?,
        detail: r.get(5)?,
    })
}

fn recording_row(r: &Row<'_>) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: r.get(0)?,
        session_id: r.get(1)?,
        link_id: r.get(2)?,
        vm: r.get(3)?,
        console: r.get(4)?,
        channel: r.get(5)?,
        gateway: r.get(6)?,
        file: r.get(7)?,
        started_at_ms: r.get(8)?,
        ended_at_ms: r.get(9)?,
        bytes: r.get(10)?,
        status: r.get(11)?,
        detail: r.get(12)?,
    })
}

/// An audit row with its id and recording id (columns: id, [`AUDIT_COLS`], recording).
fn audit_entry_row(r: &Row<'_>) -> rusqlite::Result<(i64, AuditRow, Option<String>)> {
    Ok((
        r.get(0)?,
        AuditRow {
            at_ms: r.get(1)?,
            kind: r.get(2)?,
            link_id: r.get(3)?,
            session_id: r.get(4)?,
            client: r.get(5)?,
            detail: r.get(6)?,
        },
        r.get(7)?,
    ))
}

fn audit_entry(
    (id, row, recording_id): (i64, AuditRow, Option<String>),
) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id,
        event: row.into_event()?,
        recording_id,
    })
}

/// Runs `sql` and converts every row with `read` then `convert`.
fn collect<R, T>(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    convert: fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map(args, read)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(convert(r?)?);
    }
    Ok(out)
}

fn get_link_on(c: &Connection, id: &str) -> Result<Option<Link>, StoreError> {
    // Cached: every visitor request reads its link (SQLite keeps the compiled statement).
    c.prepare_cached(&format!("SELECT {LINK_COLS} FROM links WHERE id = ?1"))?
        .query_row(params![id], link_row)
        .optional()?
        .map(LinkRow::into_link)
        .transpose()
}

fn all_keys(c: &Connection) -> Result<Vec<SigningKey>, StoreError> {
    let sql = format!("SELECT {KEY_COLS} FROM signing_keys ORDER BY created_at_ms, rowid");
    collect(c, &sql, [], key_row, KeyRow::into_key)
}

fn insert_key(c: &Connection, key: &SigningKey) -> Result<(), StoreError> {
    let k = KeyRow::new(key)?;
    c.execute(
        &format!("INSERT INTO signing_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4)"),
        params![k.kid, k.secret, k.created_at_ms, k.retired],
    )?;
    Ok(())
}

fn insert_grant(
    c: &Connection,
    cookie_sha256: &str,
    link_id: &str,
    expires_at_ms: i64,
    created_at_ms: i64,
) -> Result<(), StoreError> {
    let r = c
        .prepare_cached(
            "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                cookie_sha256,
                link_id,
                expires_at_ms,
                created_at_ms
            ])
        });
    inserted(r, Unique::Grant)
}

/// The redemption (and, with `grant`, the visitor's grant, and with `audit` its
/// `link_redeemed` record) inside the caller's transaction (a savepoint of the group
/// commit): all of it or none of it, no use without its grant and its audit record.
fn redeem_in(
    c: &Connection,
    id: &str,
    now: OffsetDateTime,
    grant: Option<&str>,
    audit: Option<AuditEvent>,
) -> Result<Link, RedeemError> {
    let now_ms = to_ms(now)?;
    // The whole decision is one conditional UPDATE: no read-modify-write window.
    let updated = c
        .prepare_cached(&format!(
            "UPDATE links SET uses = uses + 1 \
             WHERE id = ?1 \
               AND revoked_at_ms IS NULL \
               AND expires_at_ms > ?2 \
               AND (not_before_ms IS NULL OR not_before_ms <= ?2) \
               AND (max_uses IS NULL OR uses < max_uses) \
             RETURNING {LINK_COLS}"
        ))
        .and_then(|mut st| st.query_row(params![id, now_ms], link_row))
        .optional()
        .map_err(StoreError::from)?;
    let Some(row) = updated else {
        // Refused: read the row (same transaction) to say why.
        return Err(refusal(get_link_on(c, id)?, now));
    };
    let link = row.into_link()?;
    if let Some(key) = grant {
        insert_grant(c, key, &link.id, to_ms(link.expires_at)?, now_ms)?;
    }
    if let Some(event) = audit {
        let row = AuditRow::new(redeemed_audit(event, &link))?;
        insert_audit_on(c, &row).map_err(StoreError::from)?;
    }
    Ok(link)
}

/// Inserts one audit row (inside the caller's transaction).
fn insert_audit_on(c: &Connection, r: &AuditRow) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        r.at_ms,
        r.kind,
        r.link_id,
        r.session_id,
        r.client,
        r.detail
    ])?;
    Ok(())
}

/// The error every write of a failed batch gets: an outage stays an outage (503).
fn batch_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::AuditBatch(other.to_string()),
    }
}

/// Runs one queued write inside a savepoint of the batch's transaction: a write that
/// fails (a refused redemption, a duplicate grant) is undone alone.
fn write_one(tx: &mut rusqlite::Transaction<'_>, w: &QueuedWrite) -> WriteDone {
    let sp = match tx.savepoint() {
        Ok(sp) => sp,
        Err(e) => return WriteDone::Failed(StoreError::from(e)),
    };
    let done = match w {
        QueuedWrite::Audit { row, .. } => match insert_audit_on(&sp, row) {
            Ok(()) => WriteDone::Audit,
            Err(e) => WriteDone::Failed(e.into()),
        },
        QueuedWrite::Redeem {
            id,
            now,
            grant,
            audit,
            ..
        } => match redeem_in(&sp, id, *now, grant.as_deref(), audit.clone()) {
            Ok(link) => WriteDone::Redeemed(link),
            Err(e) => WriteDone::Refused(e),
        },
    };
    match done {
        WriteDone::Audit | WriteDone::Redeemed(_) => match sp.commit() {
            Ok(()) => done,
            Err(e) => WriteDone::Failed(e.into()),
        },
        // Dropping the savepoint rolls it back.
        WriteDone::Refused(_) | WriteDone::Failed(_) => done,
    }
}

/// What one write of a batch came to before the batch's COMMIT.
enum WriteDone {
    Audit,
    Redeemed(Link),
    /// The redemption's own answer (refused, unknown link, duplicate grant...).
    Refused(RedeemError),
    Failed(StoreError),
}

/// Writes a batch of queued writes in ONE immediate transaction (one commit, one fsync),
/// each in its own savepoint, and answers every caller once the commit is durable.
fn write_batch(c: &mut Connection, batch: Vec<QueuedWrite>) {
    let mut tx = match c.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            for w in batch {
                w.answer(Err(batch_error(&e)));
            }
            return;
        }
    };
    let outcomes: Vec<WriteDone> = batch.iter().map(|w| write_one(&mut tx, w)).collect();
    let committed = tx.commit().map_err(StoreError::from);
    for (w, outcome) in batch.into_iter().zip(outcomes) {
        match (&committed, outcome) {
            (Ok(()), done) => w.answer(Ok(done)),
            // Undone with the batch: even a refusal is an error now (its read is gone).
            (Err(e), _) => w.answer(Err(batch_error(e))),
        }
    }
}

impl QueuedWrite {
    fn answer(self, r: Result<WriteDone, StoreError>) {
        match self {
            QueuedWrite::Audit { done, .. } => {
                let _ = done.send(match r {
                    Ok(WriteDone::Failed(e)) | Err(e) => Err(e),
                    Ok(_) => Ok(()),
                });
            }
            QueuedWrite::Redeem { done, .. } => {
                let _ = done.send(match r {
                    Ok(WriteDone::Redeemed(link)) => Ok(link),
                    Ok(WriteDone::Refused(e)) => Err(e),
                    Ok(WriteDone::Failed(e)) | Err(e) => Err(RedeemError::Store(e)),
                    Ok(WriteDone::Audit) => Err(RedeemError::Store(StoreError::Task)),
                });
            }
        }
    }
}

/// The audit writer's hold on the queue: if it ends without finishing (a panic, or a
/// runtime shutting down before it ran), the waiting callers get an error instead of
/// waiting forever, and the next event starts a new writer.
struct AuditWriter {
    /// `None` once the writer has finished normally.
    queue: Option<Arc<Mutex<AuditQueue>>>,
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            let mut q = lock(&queue);
            q.writing = false;
            q.events.clear();
        }
    }
}

impl SqliteStore {
    /// Group commit: the write joins the queue; one writer on the blocking pool writes
    /// every queued write (audit events, redemptions with their grants and records) in
    /// one transaction (one fsync for all the visitors that arrived, started or ended
    /// meanwhile), and again until the queue is empty. Each caller still returns only
    /// once its own write is durable (`synchronous=FULL`). The writer keeps the pace
    /// of `commit_interval`: it sleeps until that long after the last commit began, so
    /// that the writes arriving meanwhile share one fsync.
    fn enqueue(&self, w: QueuedWrite) {
        let start_writer = {
            let mut q = lock(&self.audit_queue);
            q.events.push(w);
            !std::mem::replace(&mut q.writing, true)
        };
        if !start_writer {
            return;
        }
        let queue = Arc::clone(&self.audit_queue);
        let mut writer = AuditWriter {
            queue: Some(Arc::clone(&queue)),
        };
        let conn = Arc::clone(&self.conn);
        let interval = self.commit_interval;
        tokio::task::spawn_blocking(move || {
            loop {
                // Done when nothing is queued; otherwise wait for the pace (writes that
                // arrive meanwhile join this batch), then take the whole queue.
                let wait = {
                    let mut q = lock(&queue);
                    if q.events.is_empty() {
                        q.writing = false;
                        break;
                    }
                    q.last_commit
                        .map(|t| (t + interval).saturating_duration_since(Instant::now()))
                };
                if let Some(wait) = wait.filter(|w| !w.is_zero()) {
                    std::thread::sleep(wait);
                }
                let batch = {
                    let mut q = lock(&queue);
                    q.last_commit = Some(Instant::now());
                    q.commits += 1;
                    std::mem::take(&mut q.events)
                };
                write_batch(&mut lock(&conn), batch);
            }
            drop(writer.queue.take());
        });
    }

    async fn redeem_and_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        grant: Option<&str>,
        audit: Option<AuditEvent>,
    ) -> Result<Link, RedeemError> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.enqueue(QueuedWrite::Redeem {
            id: id.to_owned(),
            now,
            grant: grant.map(str::to_owned),
            audit,
            done,
        });
        committed
            .await
            .map_err(|_| RedeemError::Store(StoreError::Task))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_link(&self, link: &Link) -> Result<(), StoreError> {
        let l = LinkRow::new(link)?;
        self.run(move |c| {
            let r = c.execute(
                &format!(
                    "INSERT INTO links ({LINK_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
                ),
                params![
                    l.id,
                    l.vm,
                    l.console,
                    l.expires_at_ms,
                    l.not_before_ms,
                    l.password_hash,
                    l.max_uses,
                    l.max_viewers,
                    l.view_only,
                    l.allow_power,
                    l.note,
                    l.uses,
                    l.created_at_ms,
                    l.revoked_at_ms,
                    l.clipboard,
                    l.record,
                ],
            );
            inserted(r, Unique::Link(&l.id))
        })
        .await
    }

    async fn get_link(&self, id: &str) -> Result<Option<Link>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| get_link_on(c, &id)).await
    }

    async fn list_links(&self) -> Result<Vec<Link>, StoreError> {
        self.run(|c| {
            let sql =
                format!("SELECT {LINK_COLS} FROM links ORDER BY created_at_ms DESC, rowid DESC");
            collect(c, &sql, [], link_row, LinkRow::into_link)
        })
        .await
    }

    async fn revoke_link(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let now = to_ms(now)?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE links SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![id, now],
            )?;
            tx.execute("DELETE FROM grants WHERE link_id = ?1", params![id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn redeem(&self, id: &str, now: OffsetDateTime) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, None, None).await
    }

    async fn redeem_with_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
    ) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, Some(cookie_sha256), None)
            .await
    }

    async fn redeem_with_grant_audited(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
        audit: AuditEvent,
    ) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, Some(cookie_sha256), Some(audit))
            .await
    }

    async fn create_admin_token(&self, name: &str) -> Result<(AdminTokenInfo, String), StoreError> {
        let t = NewToken::generate(name)?;
        self.run(move |c| {
            let r = c.execute(
                "INSERT INTO admin_tokens (id, name, token_sha256, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![t.row.id, t.row.name, t.sha256, t.row.created_at_ms],
            );
            inserted(r, Unique::AdminToken(&t.row.name))?;
            Ok((t.row.into_info()?, t.secret))
        })
        .await
    }

    async fn check_admin_token(&self, token: &str) -> Result<Option<AdminTokenInfo>, StoreError> {
        if !plausible_admin_token(token) {
            return Ok(None);
        }
        let hash = admin_token_hash(token);
        self.run(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {TOKEN_COLS}, token_sha256 FROM admin_tokens \
                         WHERE token_sha256 = ?1 AND revoked_at_ms IS NULL"
                    ),
                    params![hash],
                    |r| Ok((token_row(r)?, r.get::<_, String>(4)?)),
                )
                .optional()?;
            match row {
                Some((t, stored)) if same_hash(&stored, &hash) => Ok(Some(t.into_info()?)),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, StoreError> {
        self.run(|c| {
            let sql =
                format!("SELECT {TOKEN_COLS} FROM admin_tokens ORDER BY created_at_ms, rowid");
            collect(c, &sql, [], token_row, TokenRow::into_info)
        })
        .await
    }

    async fn revoke_admin_token(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let key = id_or_name.to_owned();
        let now = to_ms(OffsetDateTime::now_utc())?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = tx.execute(
                "UPDATE admin_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![key, now],
            )?;
            if n == 0 {
                n = tx.execute(
                    "UPDATE admin_tokens SET revoked_at_ms = ?2 \
                     WHERE name = ?1 AND revoked_at_ms IS NULL",
                    params![key, now],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.run(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut keys = all_keys(&tx)?;
            if !keys.iter().any(|k| !k.retired) {
                let key = SigningKey::generate(OffsetDateTime::now_utc());
                insert_key(&tx, &key)?;
                tracing::info!(kid = %key.kid, "created a token signing key");
                keys = all_keys(&tx)?;
            }
            tx.commit()?;
            Ok(keys)
        })
        .await
    }

    async fn rotate_signing_key(&self) -> Result<SigningKey, StoreError> {
        self.run(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let newest: Option<i64> =
                tx.query_row("SELECT MAX(created_at_ms) FROM signing_keys", [], |r| {
                    r.get(0)
                })?;
            let at = rotation_time(newest)?;
            tx.execute("UPDATE signing_keys SET retired = 1", [])?;
            let key = SigningKey::generate(at);
            insert_key(&tx, &key)?;
            tx.commit()?;
            tracing::info!(kid = %key.kid, "rotated the token signing key");
            Ok(key)
        })
        .await
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let kid = kid.to_owned();
        self.run(move |c| {
            let n = c.execute("DELETE FROM signing_keys WHERE kid = ?1", params![kid])?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_target(&self, target: &Target) -> Result<(), StoreError> {
        let t = TargetRow::new(target)?;
        self.run(move |c| {
            let r = c.execute(
                &format!("INSERT INTO targets ({TARGET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    t.name,
                    t.kind,
                    t.address_kind,
                    t.address,
                    t.vnc_password,
                    t.created_at_ms
                ],
            );
            inserted(r, Unique::Target(&t.name))
        })
        .await
    }

    async fn get_target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            c.prepare_cached(&format!(
                "SELECT {TARGET_COLS} FROM targets WHERE name = ?1"
            ))?
            .query_row(params![name], target_row)
            .optional()?
            .map(TargetRow::into_target)
            .transpose()
        })
        .await
    }

    async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        self.run(|c| {
            let sql = format!("SELECT {TARGET_COLS} FROM targets ORDER BY name");
            collect(c, &sql, [], target_row, TargetRow::into_target)
        })
        .await
    }

    async fn delete_target(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM targets WHERE name = ?1", params![name])? == 1))
            .await
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let row = AuditRow::new(event)?;
        let (done, committed) = tokio::sync::oneshot::channel();
        self.enqueue(QueuedWrite::Audit { row, done });
        committed.await.map_err(|_| StoreError::Task)?
    }

    async fn list_audit(
        &self,
        link_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = audit_limit(limit);
        let link_id = link_id.map(str::to_owned);
        self.run(move |c| {
            let sql = format!(
                "SELECT {AUDIT_COLS} FROM audit \
                 WHERE (?1 IS NULL OR link_id = ?1) ORDER BY id DESC LIMIT ?2"
            );
            collect(
                c,
                &sql,
                params![link_id, limit],
                audit_row,
                AuditRow::into_event,
            )
        })
        .await
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (link, vm, kind, client, since, until, before, limit) = audit_params(query)?;
        self.run(move |c| {
            let sql = "SELECT a.id, a.at_ms, a.kind, a.link_id, a.session_id, a.client, a.detail, \
                 (SELECT r.id FROM recordings r WHERE r.session_id = a.session_id \
                  ORDER BY r.started_at_ms LIMIT 1) \
                 FROM audit a \
                 WHERE (?1 IS NULL OR a.link_id = ?1) \
                 AND (?2 IS NULL OR a.link_id IN (SELECT id FROM links WHERE vm = ?2)) \
                 AND (?3 IS NULL OR a.kind = ?3) \
                 AND (?4 IS NULL OR a.client = ?4) \
                 AND (?5 IS NULL OR a.at_ms >= ?5) \
                 AND (?6 IS NULL OR a.at_ms < ?6) \
                 AND (?7 IS NULL OR a.id < ?7) \
                 ORDER BY a.id DESC LIMIT ?8";
            collect(
                c,
                sql,
                params![link, vm, kind, client, since, until, before, limit],
                audit_entry_row,
                audit_entry,
            )
        })
        .await
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before = to_ms(before)?;
        self.run(move |c| {
            let n = c.execute("DELETE FROM audit WHERE at_ms < ?1", params![before])?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn put_grant(&self, cookie_sha256: &str, grant: &Grant) -> Result<(), StoreError> {
        let key = cookie_sha256.to_owned();
        let link_id = grant.link_id.clone();
        let expires = to_ms(grant.expires_at)?;
        let created = to_ms(OffsetDateTime::now_utc())?;
        self.run(move |c| insert_grant(c, &key, &link_id, expires, created))
            .await
    }

    async fn get_grant(&self, cookie_sha256: &str) -> Result<Option<Grant>, StoreError> {
        let key = cookie_sha256.to_owned();
        self.run(move |c| {
            let row = c
                .query_row(
                    "SELECT link_id, expires_at_ms FROM grants WHERE cookie_sha256 = ?1",
                    params![key],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            row.map(|(link_id, exp)| {
                Ok(Grant {
                    link_id,
                    expires_at: super::super::rows::from_ms(exp)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn prune_grants(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = to_ms(now)?;
        self.run(move |c| {
            let n = c.execute("DELETE FROM grants WHERE expires_at_ms <= ?1", params![now])?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn release_memory(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.execute_batch("PRAGMA shrink_memory")?))
            .await
    }

    async fn put_recording(&self, rec: &RecordingInfo) -> Result<(), StoreError> {
        let r = RecordingRow::new(rec)?;
        self.run(move |c| {
            let res = c.execute(
                &format!(
                    "INSERT INTO recordings ({RECORDING_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                params![
                    r.id,
                    r.session_id,
                    r.link_id,
                    r.vm,
                    r.console,
                    r.channel,
                    r.gateway,
                    r.file,
                    r.started_at_ms,
                    r.ended_at_ms,
                    r.bytes,
                    r.status,
                    r.detail,
                ],
            );
            inserted(res, Unique::Recording(&r.id))
        })
        .await
    }

    async fn finish_recording(
        &self,
        id: &str,
        ended_at: Option<OffsetDateTime>,
        bytes: u64,
        status: RecordingStatus,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let ended = ended_at.map(to_ms).transpose()?;
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let detail = detail.map(|d| d.replace('\0', "\u{FFFD}"));
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE recordings SET ended_at_ms = ?2, bytes = ?3, status = ?4, detail = ?5 \
                 WHERE id = ?1",
                params![id, ended, bytes, status.as_str(), detail],
            )? == 1)
        })
        .await
    }

    async fn get_recording(&self, id: &str) -> Result<Option<RecordingInfo>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {RECORDING_COLS} FROM recordings WHERE id = ?1"),
                params![id],
                recording_row,
            )
            .optional()?
            .map(RecordingRow::into_info)
            .transpose()
        })
        .await
    }

    async fn list_recordings(
        &self,
        filter: &RecordingFilter,
        limit: usize,
    ) -> Result<Vec<RecordingInfo>, StoreError> {
        let (link, session, gateway, status, before) = filter_params(filter)?;
        let limit = i64::try_from(limit.min(MAX_RECORDING_LIST)).unwrap_or(0);
        self.run(move |c| {
            let sql = format!(
                "SELECT {RECORDING_COLS} FROM recordings \
                 WHERE (?1 IS NULL OR link_id = ?1) AND (?2 IS NULL OR session_id = ?2) \
                 AND (?3 IS NULL OR gateway = ?3) AND (?4 IS NULL OR status = ?4) \
                 AND (?5 IS NULL OR started_at_ms < ?5) \
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?6"
            );
            collect(
                c,
                &sql,
                params![link, session, gateway, status, before, limit],
                recording_row,
                RecordingRow::into_info,
            )
        })
        .await
    }

    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM recordings WHERE id = ?1", params![id])? == 1))
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.run(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}
