//! The PostgreSQL store, for several gateways sharing one state.
//!
//! * Same semantics as [`SqliteStore`](super::SqliteStore): every promise of the
//!   [`Store`] trait holds across gateways. A redemption is one conditional
//!   `UPDATE … RETURNING` (row-level atomic: a concurrent redeemer waits for the row and
//!   re-checks the condition on the new version), so `max_uses` is exact however many
//!   gateways redeem at once.
//! * Migrations in `migrations/pg/*.sql` are applied at open, recorded in
//!   `schema_version`, all in one transaction under `pg_advisory_xact_lock` (two gateways
//!   starting at once do not race). A database from a newer gateway is refused.
//! * A small fixed pool: at most `pool_size` connections, made lazily, replaced when the
//!   server closed one. No TLS (`NoTls`): connect over a unix socket, loopback or a
//!   private network.
//! * Times are BIGINT unix milliseconds, as in SQLite.
//! * The connection string's password never appears in errors, logs or `Debug`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::sqlite::Migration;
use super::{
    admin_token_hash, audit_from, cut, from_ms, key_from, new_admin_token, opt_to_ms,
    plausible_admin_token, target_from, to_ms, token_info, AdminTokenInfo, AuditEvent, AuditRowRaw,
    Grant, LinkRow, RedeemError, Secret, Store, StoreError, Target, TargetAddress, TargetRowRaw,
    LINK_COLS, MAX_AUDIT_DETAIL, MAX_AUDIT_LIST, TARGET_COLS, TOKEN_COLS,
};
use crate::links::{random_token, validate_name, Link};
use crate::tokens::SigningKey;

/// The PostgreSQL schema, in order. Append new versions; never edit a released one.
pub(crate) const PG_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: include_str!("../migrations/pg/0001_init.sql"),
}];

/// Key of the advisory lock that serializes migrations (any fixed number; this one is
/// "vmgw_mig" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x766d_6777_5f6d_6967;

/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Largest allowed pool.
pub const MAX_POOL_SIZE: usize = 256;
/// Default time allowed for connecting (and authenticating).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL-specific store errors. Their messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// An error from the driver or the server (`db error: ERROR: …`), with its causes.
    #[error("PostgreSQL: {}", error_chain(.0))]
    Driver(tokio_postgres::Error),
    /// The driver's message (with its causes) is flattened into `reason` so that the
    /// error reads as one line.
    #[error("connecting to PostgreSQL at {target}: {reason}")]
    Connect {
        /// `user@host/dbname`, without the password.
        target: String,
        reason: String,
    },
    #[error("connecting to PostgreSQL at {target} took longer than {secs} s")]
    ConnectTimeout { target: String, secs: u64 },
    /// Every pooled connection stayed checked out for the wait limit
    /// (`connect_timeout_secs`): the database is slow or the pool is too small.
    #[error("all {size} PostgreSQL connections stayed busy for {secs} s")]
    PoolBusy { size: usize, secs: u64 },
    #[error("not a PostgreSQL connection string (postgres://… or key=value): {0}")]
    BadUrl(String),
    #[error("sslmode=require is not supported: the gateway connects without TLS (use a unix socket, loopback or a private network)")]
    TlsRequired,
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Driver(e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Driver(e).into()
    }
}

impl From<PgError> for StoreError {
    /// Every outage (cannot connect, connection lost or ended by the server, pool wait
    /// timed out) becomes [`StoreError::Unavailable`]; anything else stays a PostgreSQL
    /// error.
    fn from(e: PgError) -> Self {
        let outage = match &e {
            PgError::Connect { .. } | PgError::ConnectTimeout { .. } | PgError::PoolBusy { .. } => {
                true
            }
            PgError::Driver(d) => is_outage(d),
            PgError::BadUrl(_) | PgError::TlsRequired => false,
        };
        if outage {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Postgres(e)
        }
    }
}

/// Whether a driver error means the database is unreachable or going away (a retry on
/// another connection, later, may work) rather than a fault in the statement or data.
fn is_outage(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true; // the connection ended while or before the statement ran
    }
    if let Some(code) = e.code() {
        // 08…: connection exceptions; 57P01 admin shutdown (also pg_terminate_backend),
        // 57P02 crash shutdown, 57P03 cannot connect now (starting or stopping), 57P05
        // idle session timeout; 53300 too many connections.
        let c = code.code();
        return c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "57P05" | "53300");
    }
    // Socket errors (reset, broken pipe) carry the I/O error as their source.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// Where and how to connect: the parsed `[store] url` and the pool settings.
#[derive(Clone)]
pub struct PgSettings {
    /// The parsed connection string (its `Debug` hides the password).
    pub config: tokio_postgres::Config,
    /// Connections in the pool (at most).
    pub pool_size: usize,
    /// Time allowed to connect and authenticate one connection, and to wait for a free
    /// one when all are in use.
    pub connect_timeout: Duration,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &self.describe())
            .field("has_password", &self.config.get_password().is_some())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PgSettings {
    /// Parses a connection string: a `postgres://` or `postgresql://` URL, or the
    /// `host=/run/postgresql user=vmgw dbname=vmgw` key-value form. Default pool
    /// settings. TLS cannot be required (the gateway connects without it).
    pub fn parse(url: &str) -> Result<PgSettings, PgError> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| PgError::BadUrl(e.to_string()))?;
        if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(PgError::TlsRequired);
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(PgError::BadUrl("no host".into()));
        }
        Ok(PgSettings {
            config,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// `user@host[:port][,host…]/dbname`, for messages: never the password.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    Host::Tcp(s) => s.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                match ports.get(i).or(ports.first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        format!(
            "{}@{}/{}",
            c.get_user().unwrap_or("?"),
            hosts.join(","),
            c.get_dbname().or(c.get_user()).unwrap_or("?")
        )
    }
}

/// A bounded pool: at most `size` connections, each checked out by one caller at a time.
struct Pool {
    settings: PgSettings,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A checked-out connection; goes back to the pool when dropped (unless it closed).
struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &self.client {
            Some(c) => c,
            None => unreachable!("a pooled connection is emptied only when dropped"),
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.client {
            Some(c) => c,
            None => unreachable!("a pooled connection is emptied only when dropped"),
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // A connection dropped inside a transaction has already been told to roll
            // back (tokio-postgres queues ROLLBACK on drop), so it is clean to reuse.
            if !c.is_closed() {
                self.pool.idle().push(c);
            }
        }
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // Only pushes and pops happen under this lock: a panic cannot leave it torn.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let wait = self.settings.connect_timeout;
        let permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| PgError::PoolBusy {
                size: self.settings.pool_size,
                secs: wait.as_secs(),
            })?
            .map_err(|_| StoreError::Task)?;
        let reused = loop {
            match self.idle().pop() {
                Some(c) if c.is_closed() => continue,
                other => break other,
            }
        };
        let client = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let s = &self.settings;
        let mut config = s.config.clone();
        config.connect_timeout(s.connect_timeout);
        let connecting = config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(s.connect_timeout, connecting).await {
            Err(_) => {
                return Err(PgError::ConnectTimeout {
                    target: s.describe(),
                    secs: s.connect_timeout.as_secs(),
                })
            }
            Ok(Err(e)) => {
                return Err(PgError::Connect {
                    target: s.describe(),
                    reason: error_chain(&e),
                })
            }
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a PostgreSQL store connection ended");
            }
        });
        Ok(client)
    }
}

/// PostgreSQL-backed [`Store`]. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.pool.settings.describe())
            .field("pool_size", &self.pool.settings.pool_size)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects (one connection, kept in the pool) and applies pending migrations.
    pub async fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let size = settings.pool_size.clamp(1, MAX_POOL_SIZE);
        let store = PgStore {
            pool: Pool {
                settings: PgSettings {
                    pool_size: size,
                    ..settings.clone()
                },
                idle: Mutex::new(Vec::with_capacity(size)),
                permits: Semaphore::new(size),
            },
        };
        {
            let mut c = store.pool.get().await?;
            migrate(&mut c, PG_MIGRATIONS).await?;
        }
        tracing::info!(target_db = %store.pool.settings.describe(), pool_size = size, "opened the PostgreSQL store");
        Ok(store)
    }

    /// Where this store connects (`user@host/dbname`, no password).
    pub fn describe(&self) -> String {
        self.pool.settings.describe()
    }

    /// The redemption (and, with `grant`, the visitor's grant) in one transaction: if
    /// anything fails before COMMIT (the grant insert, the connection, the server), the
    /// server rolls the use back.
    async fn redeem_and_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        grant: Option<&str>,
    ) -> Result<Link, RedeemError> {
        let now_ms = to_ms(now)?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(StoreError::from)?;
        // The whole decision is one conditional UPDATE: no read-modify-write window. A
        // concurrent redeemer of the same row waits for it and re-checks the WHERE
        // clause against the updated row (READ COMMITTED re-evaluation).
        let updated = tx
            .query_opt(
                &format!(
                    "UPDATE links SET uses = uses + 1 \
                     WHERE id = $1 \
                       AND revoked_at_ms IS NULL \
                       AND expires_at_ms > $2 \
                       AND (not_before_ms IS NULL OR not_before_ms <= $2) \
                       AND (max_uses IS NULL OR uses < max_uses) \
                     RETURNING {LINK_COLS}"
                ),
                &[&id, &now_ms],
            )
            .await
            .map_err(StoreError::from)?;
        if let Some(row) = updated {
            let link = link_row(&row).map_err(StoreError::from)?.into_link()?;
            if let Some(key) = grant {
                let r = tx
                    .execute(
                        "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
                         VALUES ($1, $2, $3, $4)",
                        &[&key, &link.id, &to_ms(link.expires_at)?, &now_ms],
                    )
                    .await;
                match r {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Duplicate("grant".into()).into())
                    }
                    Err(e) => return Err(StoreError::from(e).into()),
                }
            }
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(link);
        }
        // Refused: read the row (same transaction) to say why. A link only ever moves
        // away from redeemable (uses grow, revocation stays), so this cannot contradict
        // the UPDATE.
        let Some(link) = get_link_on(&tx, id).await? else {
            return Err(RedeemError::NotFound);
        };
        drop(tx);
        match link.check(now) {
            Err(refusal) => Err(RedeemError::Refused(refusal)),
            Ok(()) => Err(RedeemError::Store(StoreError::Corrupt(
                "redeem: conditional update refused a redeemable link".into(),
            ))),
        }
    }
}

/// Applies pending `migrations` in one transaction under the migration advisory lock;
/// returns the schema version.
async fn migrate(client: &mut Client, migrations: &[Migration]) -> Result<i64, StoreError> {
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version       BIGINT NOT NULL PRIMARY KEY,
             applied_at_ms BIGINT NOT NULL
         )",
    )
    .await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await?
        .try_get(0)?;
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
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES ($1, $2)",
            &[&m.version, &now],
        )
        .await?;
        tracing::info!(version = m.version, "store schema migrated (PostgreSQL)");
    }
    tx.commit().await?;
    Ok(latest.max(current))
}

/// An error and its causes on one line (`a: b: c`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let msg = c.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cause = c.source();
    }
    out
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// PostgreSQL text cannot hold NUL: refuse it in values that must round-trip.
fn no_nul(what: &str, s: Option<&str>) -> Result<(), StoreError> {
    match s {
        Some(s) if s.contains('\0') => Err(StoreError::Invalid(format!(
            "{what} must not contain NUL characters"
        ))),
        _ => Ok(()),
    }
}

/// Audit text is for people: a NUL becomes U+FFFD rather than failing the event.
fn audit_text(s: Option<String>, max_chars: usize) -> Option<String> {
    cut(s, max_chars).map(|s| {
        if s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s
        }
    })
}

fn link_row(r: &Row) -> Result<LinkRow, tokio_postgres::Error> {
    Ok(LinkRow {
        id: r.try_get(0)?,
        vm: r.try_get(1)?,
        console: r.try_get(2)?,
        expires_at_ms: r.try_get(3)?,
        not_before_ms: r.try_get(4)?,
        password_hash: r.try_get(5)?,
        max_uses: r.try_get(6)?,
        max_viewers: r.try_get(7)?,
        view_only: r.try_get(8)?,
        allow_power: r.try_get(9)?,
        note: r.try_get(10)?,
        uses: r.try_get(11)?,
        created_at_ms: r.try_get(12)?,
        revoked_at_ms: r.try_get(13)?,
    })
}

async fn get_link_on(c: &impl GenericClient, id: &str) -> Result<Option<Link>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {LINK_COLS} FROM links WHERE id = $1"),
            &[&id],
        )
        .await?;
    match row {
        Some(r) => Ok(Some(link_row(&r)?.into_link()?)),
        None => Ok(None),
    }
}

fn token_row(r: &Row) -> Result<(String, String, i64, Option<i64>), tokio_postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
}

fn key_row(r: &Row) -> Result<(String, Vec<u8>, i64, bool), tokio_postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
}

async fn all_keys(c: &impl GenericClient) -> Result<Vec<SigningKey>, StoreError> {
    let rows = c
        .query(
            "SELECT kid, secret, created_at_ms, retired FROM signing_keys \
             ORDER BY created_at_ms, seq",
            &[],
        )
        .await?;
    rows.iter().map(|r| key_from(key_row(r)?)).collect()
}

async fn insert_key(c: &impl GenericClient, key: &SigningKey) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO signing_keys (kid, secret, created_at_ms, retired) VALUES ($1, $2, $3, $4)",
        &[&key.kid, &key.secret, &to_ms(key.created_at)?, &key.retired],
    )
    .await?;
    Ok(())
}

/// Takes the lock that serializes signing-key changes across gateways (readers of the
/// table are not blocked).
async fn lock_keys(c: &impl GenericClient) -> Result<(), StoreError> {
    c.batch_execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    Ok(())
}

fn target_row(r: &Row) -> Result<TargetRowRaw, tokio_postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
    ))
}

fn audit_row(r: &Row) -> Result<AuditRowRaw, tokio_postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
    ))
}

#[async_trait]
impl Store for PgStore {
    async fn create_link(&self, link: &Link) -> Result<(), StoreError> {
        validate_name("vm", &link.vm)?;
        if link.has_password != link.password_hash.is_some() {
            return Err(StoreError::Invalid(
                "has_password does not match password_hash".into(),
            ));
        }
        no_nul("note", link.note.as_deref())?;
        no_nul("password_hash", link.password_hash.as_deref())?;
        no_nul("id", Some(&link.id))?;
        let l = link;
        let revoked_at = if l.revoked {
            Some(to_ms(l.revoked_at.unwrap_or(l.created_at))?)
        } else {
            None
        };
        let c = self.pool.get().await?;
        let r = c
            .execute(
                &format!(
                    "INSERT INTO links ({LINK_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ),
                &[
                    &l.id,
                    &l.vm,
                    &l.console.as_str(),
                    &to_ms(l.expires_at)?,
                    &opt_to_ms(l.not_before)?,
                    &l.password_hash,
                    &l.max_uses.map(i64::from),
                    &l.max_viewers.map(i64::from),
                    &l.view_only,
                    &l.allow_power,
                    &l.note,
                    &i64::from(l.uses),
                    &to_ms(l.created_at)?,
                    &revoked_at,
                ],
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("link {}", l.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_link(&self, id: &str) -> Result<Option<Link>, StoreError> {
        let c = self.pool.get().await?;
        get_link_on(&*c, id).await
    }

    async fn list_links(&self) -> Result<Vec<Link>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {LINK_COLS} FROM links ORDER BY created_at_ms DESC, seq DESC"),
                &[],
            )
            .await?;
        rows.iter().map(|r| link_row(r)?.into_link()).collect()
    }

    async fn revoke_link(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let now = to_ms(now)?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE links SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id, &now],
            )
            .await?;
        tx.execute("DELETE FROM grants WHERE link_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(n == 1)
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
        self.redeem_and_grant(id, now, Some(cookie_sha256)).await
    }

    async fn create_admin_token(&self, name: &str) -> Result<(AdminTokenInfo, String), StoreError> {
        validate_name("name", name)?;
        let now_ms = to_ms(OffsetDateTime::now_utc())?;
        let token = new_admin_token();
        let id = format!("tok_{}", random_token(9));
        let c = self.pool.get().await?;
        let r = c
            .execute(
                "INSERT INTO admin_tokens (id, name, token_sha256, created_at_ms) \
                 VALUES ($1, $2, $3, $4)",
                &[&id, &name, &admin_token_hash(&token), &now_ms],
            )
            .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Duplicate(format!("admin token {name:?}")))
            }
            Err(e) => return Err(e.into()),
        }
        let info = AdminTokenInfo {
            id,
            name: name.to_owned(),
            created_at: from_ms(now_ms)?,
            revoked: false,
            revoked_at: None,
        };
        Ok((info, token))
    }

    async fn check_admin_token(&self, token: &str) -> Result<Option<AdminTokenInfo>, StoreError> {
        if !plausible_admin_token(token) {
            return Ok(None);
        }
        let hash = admin_token_hash(token);
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {TOKEN_COLS}, token_sha256 FROM admin_tokens \
                     WHERE token_sha256 = $1 AND revoked_at_ms IS NULL"
                ),
                &[&hash],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get(4)?;
        if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            Ok(Some(token_info(token_row(&row)?)?))
        } else {
            Ok(None)
        }
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {TOKEN_COLS} FROM admin_tokens ORDER BY created_at_ms, seq"),
                &[],
            )
            .await?;
        rows.iter().map(|r| token_info(token_row(r)?)).collect()
    }

    async fn revoke_admin_token(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let now = to_ms(OffsetDateTime::now_utc())?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let mut n = tx
            .execute(
                "UPDATE admin_tokens SET revoked_at_ms = $2 \
                 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id_or_name, &now],
            )
            .await?;
        if n == 0 {
            n = tx
                .execute(
                    "UPDATE admin_tokens SET revoked_at_ms = $2 \
                     WHERE name = $1 AND revoked_at_ms IS NULL",
                    &[&id_or_name, &now],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut c = self.pool.get().await?;
        // The common case reads without a lock; creating the first key takes it, so two
        // gateways starting at once make one key, not two.
        let keys = all_keys(&*c).await?;
        if keys.iter().any(|k| !k.retired) {
            return Ok(keys);
        }
        let tx = c.transaction().await?;
        lock_keys(&tx).await?;
        let mut keys = all_keys(&tx).await?;
        if !keys.iter().any(|k| !k.retired) {
            let key = SigningKey::generate(OffsetDateTime::now_utc());
            insert_key(&tx, &key).await?;
            tracing::info!(kid = %key.kid, "created a token signing key");
            keys = all_keys(&tx).await?;
        }
        tx.commit().await?;
        Ok(keys)
    }

    async fn rotate_signing_key(&self) -> Result<SigningKey, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        lock_keys(&tx).await?;
        let newest: Option<i64> = tx
            .query_one("SELECT MAX(created_at_ms) FROM signing_keys", &[])
            .await?
            .try_get(0)?;
        let mut at = OffsetDateTime::now_utc();
        // Keep "newest" unambiguous even if the clock stepped back (or another
        // gateway's clock is ahead).
        if let Some(n) = newest {
            if to_ms(at)? <= n {
                at = from_ms(n.saturating_add(1))?;
            }
        }
        tx.execute("UPDATE signing_keys SET retired = TRUE", &[])
            .await?;
        let mut key = SigningKey::generate(at);
        key.created_at = from_ms(to_ms(at)?)?;
        insert_key(&tx, &key).await?;
        tx.commit().await?;
        tracing::info!(kid = %key.kid, "rotated the token signing key");
        Ok(key)
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute("DELETE FROM signing_keys WHERE kid = $1", &[&kid])
            .await?;
        Ok(n == 1)
    }

    async fn put_target(&self, target: &Target) -> Result<(), StoreError> {
        target.validate()?;
        no_nul(
            "vnc_password",
            target.vnc_password.as_ref().map(Secret::expose),
        )?;
        let t = target;
        let address = match &t.address {
            TargetAddress::Tcp(s) => s.clone(),
            TargetAddress::Unix(p) => p
                .to_str()
                .ok_or_else(|| StoreError::Invalid("unix socket path must be UTF-8".into()))?
                .to_owned(),
        };
        let c = self.pool.get().await?;
        let r = c
            .execute(
                &format!("INSERT INTO targets ({TARGET_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[
                    &t.name,
                    &t.kind.as_str(),
                    &t.address.kind_str(),
                    &address,
                    &t.vnc_password.as_ref().map(Secret::expose),
                    &to_ms(t.created_at)?,
                ],
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("target {:?}", t.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TARGET_COLS} FROM targets WHERE name = $1"),
                &[&name],
            )
            .await?;
        match row {
            Some(r) => Ok(Some(target_from(target_row(&r)?)?)),
            None => Ok(None),
        }
    }

    async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        let c = self.pool.get().await?;
        // COLLATE "C": byte order, as SQLite's default BINARY collation sorts.
        let rows = c
            .query(
                &format!("SELECT {TARGET_COLS} FROM targets ORDER BY name COLLATE \"C\""),
                &[],
            )
            .await?;
        rows.iter().map(|r| target_from(target_row(r)?)).collect()
    }

    async fn delete_target(&self, name: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM targets WHERE name = $1", &[&name])
            .await?
            == 1)
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let at = to_ms(event.at)?;
        let client = audit_text(event.client, 128);
        let detail = audit_text(event.detail, MAX_AUDIT_DETAIL);
        let link_id = audit_text(event.link_id, 128);
        let session_id = audit_text(event.session_id, 128);
        let kind = event.kind.as_str();
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO audit (at_ms, kind, link_id, session_id, client, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&at, &kind, &link_id, &session_id, &client, &detail],
        )
        .await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        link_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = i64::try_from(limit.min(MAX_AUDIT_LIST)).unwrap_or(0);
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT at_ms, kind, link_id, session_id, client, detail FROM audit \
                 WHERE ($1::TEXT IS NULL OR link_id = $1) ORDER BY id DESC LIMIT $2",
                &[&link_id, &limit],
            )
            .await?;
        rows.iter().map(|r| audit_from(audit_row(r)?)).collect()
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before = to_ms(before)?;
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM audit WHERE at_ms < $1", &[&before])
            .await?)
    }

    async fn put_grant(&self, cookie_sha256: &str, grant: &Grant) -> Result<(), StoreError> {
        let expires = to_ms(grant.expires_at)?;
        let created = to_ms(OffsetDateTime::now_utc())?;
        let c = self.pool.get().await?;
        let r = c
            .execute(
                "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
                 VALUES ($1, $2, $3, $4)",
                &[&cookie_sha256, &grant.link_id, &expires, &created],
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("grant".into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_grant(&self, cookie_sha256: &str) -> Result<Option<Grant>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT link_id, expires_at_ms FROM grants WHERE cookie_sha256 = $1",
                &[&cookie_sha256],
            )
            .await?;
        match row {
            Some(r) => Ok(Some(Grant {
                link_id: r.try_get(0)?,
                expires_at: from_ms(r.try_get(1)?)?,
            })),
            None => Ok(None),
        }
    }

    async fn prune_grants(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = to_ms(now)?;
        let c = self.pool.get().await?;
        Ok(
            c.execute("DELETE FROM grants WHERE expires_at_ms <= $1", &[&now])
                .await?,
        )
    }

    async fn health(&self) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let one: i32 = c.query_one("SELECT 1", &[]).await?.try_get(0)?;
        if one != 1 {
            return Err(StoreError::Corrupt("SELECT 1 did not return 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_hide_the_password() {
        let s = PgSettings::parse("postgres://vmgw:s3cr3tpw@db.example:5433/gw").expect("url");
        assert_eq!(s.describe(), "vmgw@db.example:5433/gw");
        assert!(!format!("{s:?}").contains("s3cr3tpw"), "{s:?}");
        let s = PgSettings::parse("host=/run/postgresql user=vmgw dbname=gw password=s3cr3tpw")
            .expect("key-value");
        assert_eq!(s.describe(), "vmgw@/run/postgresql/gw");
        assert!(!format!("{s:?}").contains("s3cr3tpw"));
        let s = PgSettings::parse("postgresql:///gw?host=/tmp/x&user=u").expect("socket url");
        assert_eq!(s.describe(), "u@/tmp/x/gw");
        assert_eq!(s.pool_size, DEFAULT_POOL_SIZE);
        assert!(matches!(
            PgSettings::parse("postgres://u@h/db?sslmode=require"),
            Err(PgError::TlsRequired)
        ));
        let e = PgSettings::parse("postgres://u:s3cr3tpw@h/db?nonsense=1").expect_err("bad");
        assert!(matches!(e, PgError::BadUrl(_)));
        assert!(!e.to_string().contains("s3cr3tpw"), "{e}");
        assert!(PgSettings::parse("mysql://x").is_err());
    }

    #[test]
    fn audit_text_is_cut_and_nul_free() {
        assert_eq!(
            audit_text(Some("a\0b".into()), 10).as_deref(),
            Some("a\u{FFFD}b")
        );
        assert_eq!(audit_text(Some("abcdef".into()), 3).as_deref(), Some("abc"));
        assert!(no_nul("x", Some("a\0")).is_err());
        assert!(no_nul("x", None).is_ok());
    }
}
