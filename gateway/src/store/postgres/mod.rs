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
//! * Every outage (refused or lost connection, server shutting down, pool wait timed
//!   out) is [`StoreError::Unavailable`].

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;

use super::rows::{pending_migrations, to_ms, Migration};
use super::StoreError;
use pool::Pool;
pub use settings::PgSettings;

mod pool;
mod settings;
mod store_impl;

/// The PostgreSQL schema, in order. Append new versions; never edit a released one.
pub(crate) const PG_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/pg/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/pg/0002_clipboard.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../migrations/pg/0004_recordings.sql"),
    },
];

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
    /// The task opening a connection on the main runtime ended without an answer (the
    /// runtime is shutting down).
    #[error("opening a PostgreSQL connection was cancelled")]
    ConnectTask,
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
            PgError::Connect { .. }
            | PgError::ConnectTimeout { .. }
            | PgError::PoolBusy { .. }
            | PgError::ConnectTask => true,
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

/// PostgreSQL-backed [`Store`](super::Store). Cheap to share behind an `Arc`.
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
            pool: Pool::new(PgSettings {
                pool_size: size,
                ..settings.clone()
            }),
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
}

/// Applies pending `migrations` in one transaction under the migration advisory lock;
/// returns the schema version.
async fn migrate(client: &mut Client, migrations: &[Migration]) -> Result<i64, StoreError> {
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
    let pending = pending_migrations(migrations, current)?;
    let now = to_ms(OffsetDateTime::now_utc())?;
    let mut version = current;
    for m in pending {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES ($1, $2)",
            &[&m.version, &now],
        )
        .await?;
        tracing::info!(version = m.version, "store schema migrated (PostgreSQL)");
        version = m.version;
    }
    tx.commit().await?;
    Ok(version)
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
}
