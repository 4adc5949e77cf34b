//! The embedded SQLite store.
//!
//! * WAL journal, `synchronous=FULL`: a committed write survives `kill -9` and power
//!   loss. `busy_timeout` lets several processes (the server and the CLI) share a file.
//! * The file (and so its `-wal`/`-shm` companions, which SQLite creates with the same
//!   mode) is 0600.
//! * Migrations in `migrations/*.sql` are applied in order at open, recorded in
//!   `schema_version`, all inside one immediate transaction (idempotent, safe with
//!   concurrent openers). A file from a newer gateway is refused.
//! * One connection behind a mutex; every call runs on the blocking pool.
//! * Times are INTEGER unix milliseconds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::{
    admin_token_hash, audit_from, cut, from_ms, key_from, new_admin_token, opt_to_ms,
    plausible_admin_token, target_from, to_ms, token_info, AdminTokenInfo, AuditEvent, AuditRowRaw,
    Grant, LinkRow, RedeemError, Secret, Store, StoreError, Target, TargetAddress, TargetRowRaw,
    LINK_COLS, MAX_AUDIT_DETAIL, MAX_AUDIT_LIST, TARGET_COLS, TOKEN_COLS,
};
use crate::links::{random_token, validate_name, Link};
use crate::tokens::SigningKey;

/// How long a statement waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// The schema, in order. Append new versions; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/0002_grants.sql"),
    },
];

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// Audit events waiting to be written (see [`SqliteStore::audit`]).
    audit_queue: Arc<Mutex<Vec<QueuedAudit>>>,
}

/// An audit row: at (ms), kind, link id, session id, client, detail.
type AuditRow = (
    i64,
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One audit row and the caller waiting for it to be durable.
struct QueuedAudit {
    row: AuditRow,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the file 0600 if missing and tightens an existing one to 0600.
#[cfg(unix)]
fn secure_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&p))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn secure_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, in WAL mode with
    /// `synchronous=FULL`, and applies pending migrations. Blocking: call at startup or
    /// from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        secure_file(path)?;
        let conn = Connection::open(path)?;
        configure(&conn, true)?;
        let mut conn = conn;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: Some(path.to_path_buf()),
            audit_queue: Arc::default(),
        })
    }

    /// A private in-memory store (tests, `--ephemeral` demos). Nothing is persisted.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn, false)?;
        let mut conn = conn;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
            audit_queue: Arc::default(),
        })
    }

    /// The file this store lives in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&conn);
            f(&mut guard)
        })
        .await
        .map_err(|_| StoreError::Task)?
    }

    /// The redemption (and, with `grant`, the visitor's grant) in one transaction.
    async fn redeem_and_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        grant: Option<String>,
    ) -> Result<Link, RedeemError> {
        let id = id.to_owned();
        let now_ms = to_ms(now)?;
        self.run_redeem(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            // The whole decision is one conditional UPDATE: no read-modify-write window.
            let updated = tx
                .query_row(
                    &format!(
                        "UPDATE links SET uses = uses + 1 \
                         WHERE id = ?1 \
                           AND revoked_at_ms IS NULL \
                           AND expires_at_ms > ?2 \
                           AND (not_before_ms IS NULL OR not_before_ms <= ?2) \
                           AND (max_uses IS NULL OR uses < max_uses) \
                         RETURNING {LINK_COLS}"
                    ),
                    params![id, now_ms],
                    LinkRow::read,
                )
                .optional()
                .map_err(StoreError::from)?;
            if let Some(row) = updated {
                let link = row.into_link()?;
                if let Some(key) = &grant {
                    tx.execute(
                        "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![key, link.id, to_ms(link.expires_at)?, now_ms],
                    )
                    .map_err(StoreError::from)?;
                }
                tx.commit().map_err(StoreError::from)?;
                return Ok(link);
            }
            // Refused: read the row (same transaction) to say why.
            let Some(link) = get_link_tx(&tx, &id)? else {
                return Err(RedeemError::NotFound);
            };
            drop(tx);
            match link.check(now) {
                Err(refusal) => Err(RedeemError::Refused(refusal)),
                Ok(()) => Err(RedeemError::Store(StoreError::Corrupt(
                    "redeem: conditional update refused a redeemable link".into(),
                ))),
            }
        })
        .await
    }

    async fn run_redeem<T, F>(&self, f: F) -> Result<T, RedeemError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RedeemError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&conn);
            f(&mut guard)
        })
        .await
        .map_err(|_| RedeemError::Store(StoreError::Task))?
    }
}

/// A panic while the lock was held can only have happened inside a statement or an
/// uncommitted transaction (which rolls back on drop), so the connection is still
/// consistent: recover it instead of failing every later call.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection, file: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    Ok(())
}

pub(crate) fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<i64, StoreError> {
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version       INTEGER NOT NULL PRIMARY KEY,
             applied_at_ms BIGINT  NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    let mut pending: Vec<&Migration> = migrations.iter().filter(|m| m.version > current).collect();
    pending.sort_by_key(|m| m.version);
    let now = to_ms(OffsetDateTime::now_utc())?;
    for m in pending {
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES (?1, ?2)",
            params![m.version, now],
        )?;
        tracing::info!(version = m.version, "store schema migrated");
    }
    tx.commit()?;
    Ok(latest.max(current))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

impl LinkRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRow> {
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
        })
    }
}

fn get_link_tx(conn: &Connection, id: &str) -> Result<Option<Link>, StoreError> {
    let row = conn
        .query_row(
            &format!("SELECT {LINK_COLS} FROM links WHERE id = ?1"),
            params![id],
            LinkRow::read,
        )
        .optional()?;
    row.map(LinkRow::into_link).transpose()
}

fn read_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, Option<i64>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn read_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Vec<u8>, i64, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn all_keys(conn: &Connection) -> Result<Vec<SigningKey>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT kid, secret, created_at_ms, retired FROM signing_keys ORDER BY created_at_ms, rowid",
    )?;
    let rows = stmt.query_map([], read_key)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(key_from(r?)?);
    }
    Ok(out)
}

fn insert_key(conn: &Connection, key: &SigningKey) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO signing_keys (kid, secret, created_at_ms, retired) VALUES (?1, ?2, ?3, ?4)",
        params![key.kid, key.secret, to_ms(key.created_at)?, key.retired],
    )?;
    Ok(())
}

fn read_target(r: &rusqlite::Row<'_>) -> rusqlite::Result<TargetRowRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn read_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRowRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_link(&self, link: &Link) -> Result<(), StoreError> {
        validate_name("vm", &link.vm)?;
        if link.has_password != link.password_hash.is_some() {
            return Err(StoreError::Invalid(
                "has_password does not match password_hash".into(),
            ));
        }
        let l = link.clone();
        self.run(move |c| {
            let r = c.execute(
                &format!(
                    "INSERT INTO links ({LINK_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    l.id,
                    l.vm,
                    l.console.as_str(),
                    to_ms(l.expires_at)?,
                    opt_to_ms(l.not_before)?,
                    l.password_hash,
                    l.max_uses.map(i64::from),
                    l.max_viewers.map(i64::from),
                    l.view_only,
                    l.allow_power,
                    l.note,
                    i64::from(l.uses),
                    to_ms(l.created_at)?,
                    if l.revoked {
                        Some(to_ms(l.revoked_at.unwrap_or(l.created_at))?)
                    } else {
                        None
                    },
                ],
            );
            match r {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::Duplicate(format!("link {}", l.id)))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn get_link(&self, id: &str) -> Result<Option<Link>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| get_link_tx(c, &id)).await
    }

    async fn list_links(&self) -> Result<Vec<Link>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {LINK_COLS} FROM links ORDER BY created_at_ms DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([], LinkRow::read)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?.into_link()?);
            }
            Ok(out)
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
        self.redeem_and_grant(id, now, None).await
    }

    async fn redeem_with_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
    ) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, Some(cookie_sha256.to_owned()))
            .await
    }

    async fn create_admin_token(&self, name: &str) -> Result<(AdminTokenInfo, String), StoreError> {
        validate_name("name", name)?;
        let name = name.to_owned();
        let now = OffsetDateTime::now_utc();
        let now_ms = to_ms(now)?;
        self.run(move |c| {
            let token = new_admin_token();
            let id = format!("tok_{}", random_token(9));
            let r = c.execute(
                "INSERT INTO admin_tokens (id, name, token_sha256, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, name, admin_token_hash(&token), now_ms],
            );
            match r {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate(format!("admin token {name:?}")))
                }
                Err(e) => return Err(e.into()),
            }
            let info = AdminTokenInfo {
                id,
                name,
                created_at: from_ms(now_ms)?,
                revoked: false,
                revoked_at: None,
            };
            Ok((info, token))
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
                    |r| Ok((read_token(r)?, r.get::<_, String>(4)?)),
                )
                .optional()?;
            match row {
                Some((t, stored)) if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) => {
                    Ok(Some(token_info(t)?))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {TOKEN_COLS} FROM admin_tokens ORDER BY created_at_ms, rowid"
            ))?;
            let rows = stmt.query_map([], read_token)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(token_info(r?)?);
            }
            Ok(out)
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
            let mut at = OffsetDateTime::now_utc();
            // Keep "newest" unambiguous even if the clock stepped back.
            if let Some(n) = newest {
                if to_ms(at)? <= n {
                    at = from_ms(n.saturating_add(1))?;
                }
            }
            tx.execute("UPDATE signing_keys SET retired = 1", [])?;
            let mut key = SigningKey::generate(at);
            key.created_at = from_ms(to_ms(at)?)?;
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
        target.validate()?;
        let t = target.clone();
        self.run(move |c| {
            let address = match &t.address {
                TargetAddress::Tcp(s) => s.clone(),
                TargetAddress::Unix(p) => p
                    .to_str()
                    .ok_or_else(|| StoreError::Invalid("unix socket path must be UTF-8".into()))?
                    .to_owned(),
            };
            let r = c.execute(
                &format!("INSERT INTO targets ({TARGET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    t.name,
                    t.kind.as_str(),
                    t.address.kind_str(),
                    address,
                    t.vnc_password.as_ref().map(Secret::expose),
                    to_ms(t.created_at)?
                ],
            );
            match r {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::Duplicate(format!("target {:?}", t.name)))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn get_target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {TARGET_COLS} FROM targets WHERE name = ?1"),
                params![name],
                read_target,
            )
            .optional()?
            .map(target_from)
            .transpose()
        })
        .await
    }

    async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        self.run(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {TARGET_COLS} FROM targets ORDER BY name"))?;
            let rows = stmt.query_map([], read_target)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(target_from(r?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_target(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM targets WHERE name = ?1", params![name])? == 1))
            .await
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let at = to_ms(event.at)?;
        let client = cut(event.client, 128);
        let detail = cut(event.detail, MAX_AUDIT_DETAIL);
        let link_id = cut(event.link_id, 128);
        let session_id = cut(event.session_id, 128);
        let kind = event.kind.as_str();
        // Group commit: the event joins the queue, then whoever holds the connection
        // next writes every queued event in one transaction (one fsync for all the
        // sessions that started or ended meanwhile). Each caller still returns only once
        // its own event is durable.
        let (done, committed) = tokio::sync::oneshot::channel();
        lock(&self.audit_queue).push(QueuedAudit {
            row: (at, kind, link_id, session_id, client, detail),
            done,
        });
        let queue = Arc::clone(&self.audit_queue);
        self.run(move |c| {
            let batch = std::mem::take(&mut *lock(&queue));
            if batch.is_empty() {
                return Ok(()); // an earlier caller's transaction took ours along
            }
            let written = write_audit_batch(c, &batch).map_err(|e| e.to_string());
            for q in batch {
                let _ = q.done.send(written.clone());
            }
            Ok(())
        })
        .await?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::AuditBatch(e)),
            Err(_) => Err(StoreError::Task),
        }
    }

    async fn list_audit(
        &self,
        link_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = i64::try_from(limit.min(MAX_AUDIT_LIST)).unwrap_or(0);
        let link_id = link_id.map(str::to_owned);
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT at_ms, kind, link_id, session_id, client, detail FROM audit \
                 WHERE (?1 IS NULL OR link_id = ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![link_id, limit], read_audit)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(audit_from(r?)?);
            }
            Ok(out)
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
        self.run(move |c| {
            c.execute(
                "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![key, link_id, expires, created],
            )?;
            Ok(())
        })
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
                    expires_at: from_ms(exp)?,
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

    async fn health(&self) -> Result<(), StoreError> {
        self.run(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}

/// Inserts queued audit rows in one transaction.
fn write_audit_batch(c: &mut Connection, batch: &[QueuedAudit]) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit (at_ms, kind, link_id, session_id, client, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for q in batch {
            let (at, kind, link_id, session_id, client, detail) = &q.row;
            stmt.execute(params![at, kind, link_id, session_id, client, detail])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{new_link_id, ConsoleType, LinkPolicy, LinkRequest, Refusal};
    use crate::store::{AuditKind, TargetRequest};
    use crate::tokens::{TokenConfig, TokenKeys};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

    fn link_with(max_uses: Option<u32>, not_before: Option<OffsetDateTime>) -> Link {
        LinkRequest {
            vm: "web-01".into(),
            console: None,
            expires_at: None,
            ttl_seconds: Some(3600),
            not_before,
            password: Some("pw".into()),
            max_uses,
            max_viewers: Some(2),
            view_only: true,
            allow_power: false,
            note: Some("for Alice — ünïcode".into()),
        }
        .validate(NOW, &LinkPolicy::default())
        .expect("valid")
        .into_link(
            new_link_id(),
            NOW,
            Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()),
        )
        .expect("link")
    }

    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sqlite3");
        (dir, path)
    }

    #[tokio::test]
    async fn link_crud_and_revoke() {
        let s = SqliteStore::open_in_memory().expect("open");
        let l = link_with(Some(3), None);
        s.create_link(&l).await.expect("create");
        assert!(matches!(
            s.create_link(&l).await,
            Err(StoreError::Duplicate(_))
        ));
        let got = s.get_link(&l.id).await.expect("get").expect("some");
        assert_eq!(got, l);
        assert_eq!(got.password_hash, l.password_hash);
        assert_eq!(s.get_link("nope").await.expect("get"), None);
        let l2 = link_with(None, None);
        s.create_link(&l2).await.expect("create");
        let all = s.list_links().await.expect("list");
        assert_eq!(all.len(), 2);

        let later = NOW + time::Duration::minutes(1);
        assert!(s.revoke_link(&l.id, later).await.expect("revoke"));
        assert!(!s.revoke_link(&l.id, later).await.expect("again"));
        assert!(!s.revoke_link("unknown", later).await.expect("unknown"));
        let got = s.get_link(&l.id).await.expect("get").expect("some");
        assert!(got.revoked);
        assert_eq!(got.revoked_at, Some(later));
        assert!(matches!(
            s.redeem(&l.id, later).await,
            Err(RedeemError::Refused(Refusal::Revoked))
        ));
        // Bad input is refused before SQL.
        let mut bad = link_with(None, None);
        bad.vm = "a/b".into();
        assert!(matches!(
            s.create_link(&bad).await,
            Err(StoreError::Invalid(_))
        ));
        let mut bad = link_with(None, None);
        bad.has_password = false;
        assert!(matches!(
            s.create_link(&bad).await,
            Err(StoreError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn redeem_checks_everything() {
        let s = SqliteStore::open_in_memory().expect("open");
        let opens = NOW + time::Duration::minutes(5);
        let l = link_with(Some(2), Some(opens));
        s.create_link(&l).await.expect("create");
        assert!(matches!(
            s.redeem("missing", NOW).await,
            Err(RedeemError::NotFound)
        ));
        assert!(matches!(
            s.redeem(&l.id, NOW).await,
            Err(RedeemError::Refused(Refusal::NotYetValid { opens_at })) if opens_at == opens
        ));
        let r1 = s.redeem(&l.id, opens).await.expect("first");
        assert_eq!(r1.uses, 1);
        let r2 = s.redeem(&l.id, opens).await.expect("second");
        assert_eq!(r2.uses, 2);
        assert!(matches!(
            s.redeem(&l.id, opens).await,
            Err(RedeemError::Refused(Refusal::Exhausted))
        ));
        assert!(matches!(
            s.redeem(&l.id, l.expires_at).await,
            Err(RedeemError::Refused(Refusal::Expired))
        ));
        // The last millisecond before expiry still redeems (unlimited link).
        let u = link_with(None, None);
        s.create_link(&u).await.expect("create");
        let edge = u.expires_at - time::Duration::milliseconds(1);
        assert_eq!(s.redeem(&u.id, edge).await.expect("edge").uses, 1);
        assert!(matches!(
            s.redeem(&u.id, u.expires_at).await,
            Err(RedeemError::Refused(Refusal::Expired))
        ));
        // Refusals did not count.
        assert_eq!(s.get_link(&l.id).await.expect("get").expect("l").uses, 2);
    }

    async fn hammer(stores: Vec<SqliteStore>, id: String, n: usize) -> (usize, usize) {
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = stores[i % stores.len()].clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move { s.redeem(&id, NOW).await }));
        }
        let (mut ok, mut exhausted) = (0, 0);
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) => ok += 1,
                Err(RedeemError::Refused(Refusal::Exhausted)) => exhausted += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        (ok, exhausted)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redemptions_are_exact() {
        let (_d, path) = tmp();
        let s = SqliteStore::open(&path).expect("open");
        let l = link_with(Some(10), None);
        s.create_link(&l).await.expect("create");
        let (ok, ex) = hammer(vec![s.clone()], l.id.clone(), 100).await;
        assert_eq!((ok, ex), (10, 90));
        assert_eq!(s.get_link(&l.id).await.expect("get").expect("l").uses, 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redemptions_across_connections_are_exact() {
        // Four independent connections (as four processes would have) on one file.
        let (_d, path) = tmp();
        let stores: Vec<SqliteStore> = (0..4)
            .map(|_| SqliteStore::open(&path).expect("open"))
            .collect();
        let l = link_with(Some(10), None);
        stores[0].create_link(&l).await.expect("create");
        let (ok, ex) = hammer(stores.clone(), l.id.clone(), 100).await;
        assert_eq!((ok, ex), (10, 90));
        for s in &stores {
            assert_eq!(s.get_link(&l.id).await.expect("get").expect("l").uses, 10);
        }
    }

    #[tokio::test]
    async fn a_redemption_and_its_grant_commit_together() {
        let s = SqliteStore::open_in_memory().expect("open");
        let l = link_with(Some(2), None);
        s.create_link(&l).await.expect("create");
        let got = s.redeem_with_grant(&l.id, NOW, "k1").await.expect("redeem");
        assert_eq!(got.uses, 1);
        let g = s.get_grant("k1").await.expect("get").expect("stored");
        assert_eq!(
            (g.link_id.as_str(), g.expires_at),
            (l.id.as_str(), l.expires_at)
        );
        // a grant that cannot be stored undoes the use
        assert!(s.redeem_with_grant(&l.id, NOW, "k1").await.is_err());
        assert_eq!(s.get_link(&l.id).await.expect("get").expect("some").uses, 1);
        // a refused redemption stores no grant
        s.redeem_with_grant(&l.id, NOW, "k2")
            .await
            .expect("second use");
        assert!(matches!(
            s.redeem_with_grant(&l.id, NOW, "k3").await,
            Err(RedeemError::Refused(Refusal::Exhausted))
        ));
        assert_eq!(s.get_grant("k3").await.expect("get"), None);
    }

    #[tokio::test]
    async fn grants_are_kept_pruned_and_dropped_on_revoke() {
        let s = SqliteStore::open_in_memory().expect("open");
        let l = link_with(None, None);
        let other = link_with(None, None);
        s.create_link(&l).await.expect("create");
        s.create_link(&other).await.expect("create");
        let g = Grant {
            link_id: l.id.clone(),
            expires_at: NOW + time::Duration::hours(1),
        };
        let short = Grant {
            link_id: other.id.clone(),
            expires_at: NOW - time::Duration::seconds(1),
        };
        s.put_grant("aa", &g).await.expect("put");
        s.put_grant("bb", &short).await.expect("put");
        s.put_grant("cc", &g).await.expect("put");
        assert!(
            s.put_grant("aa", &g).await.is_err(),
            "a cookie hash is one grant"
        );
        assert_eq!(s.get_grant("aa").await.expect("get"), Some(g.clone()));
        assert_eq!(s.get_grant("zz").await.expect("get"), None);
        assert_eq!(s.prune_grants(NOW).await.expect("prune"), 1);
        assert_eq!(s.get_grant("bb").await.expect("get"), None);
        assert!(s.revoke_link(&l.id, NOW).await.expect("revoke"));
        assert_eq!(s.get_grant("aa").await.expect("get"), None);
        assert_eq!(s.get_grant("cc").await.expect("get"), None);
    }

    #[tokio::test]
    async fn admin_tokens() {
        let s = SqliteStore::open_in_memory().expect("open");
        let (info, token) = s.create_admin_token("ci").await.expect("create");
        assert!(token.starts_with("vmgw_"));
        assert_eq!(info.name, "ci");
        assert!(!info.revoked);
        assert_eq!(
            s.check_admin_token(&token).await.expect("check"),
            Some(info.clone())
        );
        // Only the hash is stored.
        let stored: Vec<String> = {
            let c = lock(&s.conn);
            let mut st = c
                .prepare("SELECT token_sha256 FROM admin_tokens")
                .expect("prep");
            st.query_map([], |r| r.get(0))
                .expect("q")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(stored, vec![admin_token_hash(&token)]);
        // Wrong / malformed tokens.
        for bad in [
            "",
            "vmgw_",
            "vmgw_x",
            &token[..token.len() - 1],
            &format!("{token}x"),
            &token.to_uppercase(),
            &format!("Bearer {token}"),
        ] {
            assert_eq!(
                s.check_admin_token(bad).await.expect("check"),
                None,
                "{bad}"
            );
        }
        // Duplicate live name, bad name.
        assert!(matches!(
            s.create_admin_token("ci").await,
            Err(StoreError::Duplicate(_))
        ));
        assert!(matches!(
            s.create_admin_token("bad name").await,
            Err(StoreError::Invalid(_))
        ));
        // Revoke by name, then the name can be reused; revoke by id.
        assert!(s.revoke_admin_token("ci").await.expect("revoke"));
        assert!(!s.revoke_admin_token("ci").await.expect("again"));
        assert_eq!(s.check_admin_token(&token).await.expect("check"), None);
        let (info2, token2) = s.create_admin_token("ci").await.expect("reuse");
        assert_ne!(token, token2);
        assert!(s.revoke_admin_token(&info2.id).await.expect("by id"));
        assert_eq!(s.check_admin_token(&token2).await.expect("check"), None);
        let all = s.list_admin_tokens().await.expect("list");
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|t| t.revoked && t.revoked_at.is_some()));
        assert!(!s.revoke_admin_token("nope").await.expect("unknown"));
        // The secret never appears in the info's JSON.
        assert!(!serde_json::to_string(&all)
            .expect("ser")
            .contains(&token[5..]));
    }

    #[tokio::test]
    async fn signing_keys_rotate_and_remove() {
        let s = SqliteStore::open_in_memory().expect("open");
        let k1 = s.signing_keys().await.expect("keys");
        assert_eq!(k1.len(), 1);
        assert!(!k1[0].retired);
        assert_eq!(k1[0].secret.len(), 32);
        // Stable on repeated calls.
        assert_eq!(s.signing_keys().await.expect("again"), k1);

        let cfg = TokenConfig::default;
        let tk1 = TokenKeys::new(&k1, cfg()).expect("tk1");
        let l = link_with(None, None);
        let t_old = tk1.sign(&tk1.claims_for(&l, NOW)).expect("sign");

        let new = s.rotate_signing_key().await.expect("rotate");
        let k2 = s.signing_keys().await.expect("keys");
        assert_eq!(k2.len(), 2);
        assert!(k2[0].retired && !k2[1].retired);
        assert_eq!(k2[1], new);
        let tk2 = TokenKeys::new(&k2, cfg()).expect("tk2");
        assert_eq!(tk2.signing_kid(), Some(new.kid.as_str()));
        assert!(tk2.verify(&t_old, NOW).is_ok());

        assert!(s.remove_signing_key(&k1[0].kid).await.expect("remove"));
        assert!(!s.remove_signing_key(&k1[0].kid).await.expect("again"));
        let tk3 = TokenKeys::new(&s.signing_keys().await.expect("keys"), cfg()).expect("tk3");
        assert!(tk3.verify(&t_old, NOW).is_err());

        // Removing the active key: a new one is made on next use.
        assert!(s.remove_signing_key(&new.kid).await.expect("remove"));
        let k4 = s.signing_keys().await.expect("keys");
        assert_eq!(k4.len(), 1);
        assert_ne!(k4[0].kid, new.kid);
        assert!(!k4[0].retired);
    }

    #[tokio::test]
    async fn targets() {
        let s = SqliteStore::open_in_memory().expect("open");
        let t: Target = serde_json::from_str::<TargetRequest>(
            r#"{"name":"ext-1","kind":"spice","address":{"tcp":"[::1]:5930"},"vnc_password":"pw"}"#,
        )
        .expect("parse")
        .validate(NOW)
        .expect("valid");
        s.put_target(&t).await.expect("put");
        assert!(matches!(
            s.put_target(&t).await,
            Err(StoreError::Duplicate(_))
        ));
        let u = Target {
            name: "a-unix".into(),
            kind: ConsoleType::Vnc,
            address: TargetAddress::Unix("/run/vmgw/a.sock".into()),
            vnc_password: None,
            created_at: NOW,
        };
        s.put_target(&u).await.expect("put");
        let mut bad = u.clone();
        bad.name = "b".into();
        bad.address = TargetAddress::Unix("rel.sock".into());
        assert!(matches!(
            s.put_target(&bad).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.get_target("ext-1").await.expect("get"), Some(t.clone()));
        assert_eq!(s.get_target("nope").await.expect("get"), None);
        let all = s.list_targets().await.expect("list");
        assert_eq!(all, vec![u.clone(), t.clone()]);
        assert!(s.delete_target("ext-1").await.expect("delete"));
        assert!(!s.delete_target("ext-1").await.expect("again"));
        assert_eq!(s.list_targets().await.expect("list"), vec![u]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_audit_events_are_all_committed_durably() {
        let (_d, path) = tmp();
        let s = Arc::new(SqliteStore::open(&path).expect("open"));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    s.audit(
                        AuditEvent::new(AuditKind::SessionStarted, NOW)
                            .session(format!("s{i}"))
                            .client("192.0.2.1"),
                    )
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("audit");
        }
        assert!(lock(&s.audit_queue).is_empty());
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        let all = s.list_audit(None, MAX_AUDIT_LIST).await.expect("list");
        assert_eq!(all.len(), 200);
        let mut ids: Vec<_> = all.iter().filter_map(|e| e.session_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200);
    }

    #[tokio::test]
    async fn audit_log() {
        let s = SqliteStore::open_in_memory().expect("open");
        for i in 0..5 {
            let mut e =
                AuditEvent::new(AuditKind::PasswordFailure, NOW + time::Duration::seconds(i))
                    .client("192.0.2.7")
                    .detail(format!("attempt {i}"));
            if i % 2 == 0 {
                e = e.link("L1");
            }
            s.audit(e).await.expect("audit");
        }
        s.audit(
            AuditEvent::new(AuditKind::SessionStarted, NOW)
                .link("L2")
                .session("S1")
                .detail("x".repeat(5000)),
        )
        .await
        .expect("audit");
        let all = s.list_audit(None, 100).await.expect("list");
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].kind, AuditKind::SessionStarted);
        assert_eq!(all[0].session_id.as_deref(), Some("S1"));
        assert_eq!(
            all[0].detail.as_ref().map(|d| d.len()),
            Some(MAX_AUDIT_DETAIL)
        );
        assert_eq!(all[1].detail.as_deref(), Some("attempt 4"));
        let l1 = s.list_audit(Some("L1"), 100).await.expect("list");
        assert_eq!(l1.len(), 3);
        assert!(l1.iter().all(|e| e.link_id.as_deref() == Some("L1")));
        assert_eq!(s.list_audit(None, 2).await.expect("list").len(), 2);
        assert_eq!(s.list_audit(None, 0).await.expect("list").len(), 0);
        let n = s
            .prune_audit(NOW + time::Duration::seconds(2))
            .await
            .expect("prune");
        assert_eq!(n, 3); // the session event at NOW and failures 0 and 1
        assert_eq!(s.list_audit(None, 100).await.expect("list").len(), 3);
    }

    #[tokio::test]
    async fn reopen_keeps_everything() {
        let (_d, path) = tmp();
        let l = link_with(Some(5), None);
        let (kid, token, tinfo) = {
            let s = SqliteStore::open(&path).expect("open");
            s.create_link(&l).await.expect("create");
            s.redeem(&l.id, NOW).await.expect("redeem");
            s.redeem(&l.id, NOW).await.expect("redeem");
            s.audit(AuditEvent::new(AuditKind::LinkRedeemed, NOW).link(&l.id))
                .await
                .expect("audit");
            let (info, token) = s.create_admin_token("ops").await.expect("token");
            let kid = s.signing_keys().await.expect("keys")[0].kid.clone();
            s.put_target(&Target {
                name: "t1".into(),
                kind: ConsoleType::Raw,
                address: TargetAddress::Tcp("127.0.0.1:4000".into()),
                vnc_password: Some("vncpw".into()),
                created_at: NOW,
            })
            .await
            .expect("target");
            (kid, token, info)
        };
        let s = SqliteStore::open(&path).expect("reopen");
        let got = s.get_link(&l.id).await.expect("get").expect("link");
        assert_eq!(got.uses, 2);
        assert_eq!(got.password_hash, l.password_hash);
        assert_eq!(got.note, l.note);
        assert_eq!(got.expires_at, l.expires_at);
        let audit = s.list_audit(Some(&l.id), 10).await.expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].kind, AuditKind::LinkRedeemed);
        assert_eq!(
            s.check_admin_token(&token).await.expect("check"),
            Some(tinfo)
        );
        let keys = s.signing_keys().await.expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, kid);
        let t = s.get_target("t1").await.expect("t").expect("some");
        assert_eq!(t.vnc_password.as_ref().map(Secret::expose), Some("vncpw"));
    }

    /// Child half of `committed_writes_survive_abort`: only acts when re-run by it.
    #[test]
    fn abort_child() {
        let Some(path) = std::env::var_os("VMGW_STORE_ABORT_CHILD") else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = SqliteStore::open(&path).expect("open");
            let mut l = link_with(Some(3), None);
            l.id = "abort-link".into();
            s.create_link(&l).await.expect("create");
            s.redeem(&l.id, NOW).await.expect("redeem");
            s.audit(AuditEvent::new(AuditKind::LinkRedeemed, NOW).link(&l.id))
                .await
                .expect("audit");
        });
        // No destructors, no sqlite3_close, no checkpoint: like kill -9 right after
        // the commits returned.
        std::process::abort();
    }

    #[test]
    fn committed_writes_survive_abort() {
        let (_d, path) = tmp();
        let exe = std::env::current_exe().expect("exe");
        let status = std::process::Command::new(exe)
            .args([
                "--exact",
                "store::sqlite::tests::abort_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VMGW_STORE_ABORT_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("spawn child");
        assert!(!status.success(), "the child should have aborted");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = SqliteStore::open(&path).expect("reopen");
            let l = s
                .get_link("abort-link")
                .await
                .expect("get")
                .expect("link survived");
            assert_eq!(l.uses, 1);
            let a = s.list_audit(Some("abort-link"), 10).await.expect("audit");
            assert_eq!(a.len(), 1);
        });
    }

    #[test]
    fn pragmas_and_file_mode() {
        let (_d, path) = tmp();
        let s = SqliteStore::open(&path).expect("open");
        {
            let c = lock(&s.conn);
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("mode");
            assert_eq!(mode, "wal");
            let sync: i64 = c
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("sync");
            assert_eq!(sync, 2, "synchronous=FULL");
            let busy: i64 = c
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .expect("busy");
            assert!(busy >= 1000);
            c.execute_batch("INSERT INTO audit (at_ms, kind) VALUES (0, 'vm_action')")
                .expect("write");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let meta = std::fs::metadata(&p).expect("meta");
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{suffix}");
            }
            // An existing file with loose permissions is tightened at open.
            drop(s);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let _s = SqliteStore::open(&path).expect("reopen");
            let meta = std::fs::metadata(&path).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    fn version(c: &Connection) -> Vec<i64> {
        let mut st = c
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prep");
        st.query_map([], |r| r.get(0))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn migrations_idempotent_ordered_and_guarded() {
        let (_d, path) = tmp();
        drop(SqliteStore::open(&path).expect("open"));
        drop(SqliteStore::open(&path).expect("reopen"));
        let mut c = Connection::open(&path).expect("conn");
        assert_eq!(version(&c), vec![1, 2]);
        // A later migration is applied once, in order, after the existing ones; given
        // out of order it still applies in version order.
        let more = [
            Migration {
                version: 4,
                sql: "ALTER TABLE links ADD COLUMN c4 TEXT; UPDATE links SET c4 = c3;",
            },
            MIGRATIONS[0],
            MIGRATIONS[1],
            Migration {
                version: 3,
                sql: "ALTER TABLE links ADD COLUMN c3 TEXT;",
            },
        ];
        assert_eq!(migrate(&mut c, &more).expect("migrate"), 4);
        assert_eq!(migrate(&mut c, &more).expect("again"), 4);
        assert_eq!(version(&c), vec![1, 2, 3, 4]);
        // A failing migration rolls back entirely.
        let broken = [Migration {
            version: 5,
            sql: "CREATE TABLE t5 (x); THIS IS NOT SQL;",
        }];
        assert!(migrate(&mut c, &broken).is_err());
        assert_eq!(version(&c), vec![1, 2, 3, 4]);
        let t5: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 't5'",
                [],
                |r| r.get(0),
            )
            .expect("q");
        assert_eq!(t5, 0);
        // A store written by a newer gateway is refused.
        drop(c);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew {
                found: 4,
                supported: 2
            })
        ));
    }

    #[tokio::test]
    async fn a_version_1_store_is_upgraded_in_place() {
        let (_d, path) = tmp();
        let mut c = Connection::open(&path).expect("conn");
        migrate(&mut c, &MIGRATIONS[..1]).expect("v1");
        drop(c);
        // what the previous release wrote
        let l = link_with(Some(3), None);
        {
            let old = SqliteStore {
                conn: Arc::new(Mutex::new(Connection::open(&path).expect("conn"))),
                path: None,
                audit_queue: Arc::default(),
            };
            old.create_link(&l).await.expect("create");
        }
        let s = SqliteStore::open(&path).expect("upgrade");
        assert_eq!(s.get_link(&l.id).await.expect("get"), Some(l.clone()));
        let g = Grant {
            link_id: l.id.clone(),
            expires_at: NOW,
        };
        s.put_grant("aa", &g).await.expect("grants table exists");
        drop(s);
        let c = Connection::open(&path).expect("conn");
        assert_eq!(version(&c), vec![1, 2]);
    }

    #[tokio::test]
    async fn health_and_debug() {
        let s = SqliteStore::open_in_memory().expect("open");
        s.health().await.expect("health");
        assert!(format!("{s:?}").contains("SqliteStore"));
        let dyn_store: Arc<dyn Store> = Arc::new(s);
        dyn_store.health().await.expect("dyn");
    }
}
