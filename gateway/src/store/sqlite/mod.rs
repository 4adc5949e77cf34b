//! The embedded SQLite store.
//!
//! * WAL journal, `synchronous=FULL`: a committed write survives `kill -9` and power
//!   loss. `busy_timeout` lets several processes (the server and the CLI) share a file.
//! * The file (and so its `-wal`/`-shm` companions, which SQLite creates with the same
//!   mode) is 0600.
//! * Migrations in `migrations/*.sql` are applied in order at open, recorded in
//!   `schema_version`, all inside one immediate transaction (idempotent, safe with
//!   concurrent openers). A file from a newer gateway is refused.
//! * One connection behind a mutex; every call runs on the blocking pool. The writes of
//!   the visitor path (audit events, redemptions with their grants) are group-committed:
//!   one transaction and one fsync for all those queued meanwhile, each in a savepoint;
//!   every caller returns once its own write is durable. Commits are paced (at most one
//!   per `commit_interval`), so that under load each fsync carries several writes.
//! * Built with `HAVE_FDATASYNC` (`.cargo/config.toml`), as SQLite's own Linux builds
//!   are: a commit waits on fdatasync, which skips the inode's times.
//! * Times are INTEGER unix milliseconds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use time::OffsetDateTime;

pub(crate) use super::rows::Migration;
use super::rows::{pending_migrations, to_ms, AuditRow};
use super::StoreError;

/// The group commit's default pace (`store.commit_interval_ms`): at most one commit
/// (one fsync) of the visitor path's writes per 2 ms. Measured in the load test's rate
/// phases: 0.67 commits per write without it, ~0.1 with it (and fdatasync), and
/// 1.3-1.4x the sessions per second; the price is at most 2 ms added to a write that
/// arrives right after a commit.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(2);

/// How long a statement waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    Migration {
        version: 3,
        sql: include_str!("../migrations/0003_clipboard.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../migrations/0005_recordings.sql"),
    },
];

/// SQLite-backed [`Store`](super::Store).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// Writes waiting for the group commit (see `SqliteStore::enqueue`).
    audit_queue: Arc<Mutex<AuditQueue>>,
    /// The group commit's pace: at most one commit of queued writes per interval.
    commit_interval: Duration,
}

/// The writes (audit events, redemptions) waiting for the group commit, and whether a
/// writer is on its way to them.
#[derive(Default)]
struct AuditQueue {
    events: Vec<QueuedWrite>,
    /// A writer runs (or is scheduled) on the blocking pool: it writes until the queue
    /// is empty, so a new event needs no writer of its own.
    writing: bool,
    /// When the last group commit began: the next waits until `commit_interval` later.
    last_commit: Option<std::time::Instant>,
    /// Group commits made so far.
    commits: u64,
}

impl AuditQueue {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.writing
    }
}

/// One write waiting for the group commit, and the caller waiting for it to be durable.
enum QueuedWrite {
    Audit {
        row: AuditRow,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    /// A redemption (with its grant and audit record, if any): see `redeem_in`.
    Redeem {
        id: String,
        now: OffsetDateTime,
        grant: Option<String>,
        audit: Option<super::AuditEvent>,
        done: tokio::sync::oneshot::Sender<Result<crate::model::links::Link, super::RedeemError>>,
    },
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
            commit_interval: DEFAULT_COMMIT_INTERVAL,
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
            commit_interval: Duration::ZERO,
        })
    }

    /// Paces the group commit: a commit begins at least `interval` after the one
    /// before it, and carries every write queued until then. A write that finds the
    /// last commit `interval` or longer ago is committed at once. `Duration::ZERO`
    /// commits each batch as soon as the one before it is done.
    #[must_use]
    pub fn with_commit_interval(mut self, interval: Duration) -> SqliteStore {
        self.commit_interval = interval;
        self
    }

    /// How many group commits this store has made (one transaction and fsync each).
    pub fn group_commits(&self) -> u64 {
        lock(&self.audit_queue).commits
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
    let pending = pending_migrations(migrations, current)?;
    let now = to_ms(OffsetDateTime::now_utc())?;
    let mut version = current;
    for m in pending {
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES (?1, ?2)",
            params![m.version, now],
        )?;
        tracing::info!(version = m.version, "store schema migrated");
        version = m.version;
    }
    tx.commit()?;
    Ok(version)
}

mod store_impl;

#[cfg(test)]
mod tests;
