//! Persistence behind the [`Store`] trait: links (with atomic redemption), admin tokens,
//! token signing keys, console targets and the audit log.
//!
//! This module is the contract: the [`Store`] trait, its types and errors.
//! [`SqliteStore`] (`sqlite/`) is the embedded default; [`PgStore`] (`postgres/`) keeps
//! the same state in PostgreSQL so that several gateways can share it. Both use the
//! same SQL shapes (`UPDATE … RETURNING`, partial unique indexes, integer
//! unix-millisecond times) and share every rule that is not SQL in `rows.rs`: row
//! conversions, validation before SQL, audit text limits, "unique violation →
//! Duplicate", refusal reasons. The behaviours are tested once, against both stores,
//! in `tests/store_contract.rs`.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::model::links::{random_token, validate_name, ConsoleType, Link, LinkError, Refusal};
pub use crate::model::secret::Secret;
use crate::model::tokens::SigningKey;

mod postgres;
mod recordings;
mod rows;
mod sqlite;

pub use postgres::{
    PgError, PgSettings, PgStore, DEFAULT_CONNECT_TIMEOUT as DEFAULT_PG_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE as DEFAULT_PG_POOL_SIZE, MAX_POOL_SIZE as MAX_PG_POOL_SIZE,
};
pub use recordings::{
    AuditEntry, AuditQuery, RecordingFilter, RecordingInfo, RecordingStatus, MAX_RECORDING_LIST,
};
pub use sqlite::{SqliteStore, DEFAULT_COMMIT_INTERVAL};

/// Prefix of admin API bearer tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "vmgw_";
/// Random bytes in an admin token (256 bits).
pub const ADMIN_TOKEN_BYTES: usize = 32;
/// Longest string ever considered as an admin token.
pub const MAX_ADMIN_TOKEN_LEN: usize = 128;
/// Most audit events one `list_audit` call returns.
pub const MAX_AUDIT_LIST: usize = 10_000;
/// Longest audit `detail` kept (longer ones are cut).
pub const MAX_AUDIT_DETAIL: usize = 2048;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Db(rusqlite::Error),
    /// The store cannot be reached or is overloaded right now (refused or dropped
    /// connection, server shutting down, pool wait or lock wait timed out); a retry later
    /// may work. Served as 503 with Retry-After. The text says why (never a password).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("I/O error on the store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("already exists: {0}")]
    Duplicate(String),
    /// A group commit this write was part of failed (the cause is the batch's, shared by
    /// all its writes: audit events, redemptions).
    #[error("writing a batch of audit events and redemptions: {0}")]
    AuditBatch(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store's schema version {found} is newer than this gateway supports ({supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the store's journal mode is {0}, not WAL")]
    NotWal(String),
    #[error("a store task failed")]
    Task,
    #[error(transparent)]
    Postgres(PgError),
}

impl StoreError {
    /// The store cannot be reached or is overloaded right now (a retry later may work),
    /// as opposed to a fault in the request or the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    /// `SQLITE_BUSY` / `SQLITE_LOCKED` (another process kept the file locked past the
    /// busy timeout) is an outage; anything else is a database error.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(format!("SQLite: {e}"))
            }
            _ => StoreError::Db(e),
        }
    }
}

impl From<LinkError> for StoreError {
    fn from(e: LinkError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

/// Why a redemption failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("no such link")]
    NotFound,
    #[error("link refused: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An admin API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenInfo {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub revoked: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A new admin token: `vmgw_` + 256 random bits, URL-safe base64.
pub fn new_admin_token() -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", random_token(ADMIN_TOKEN_BYTES))
}

/// What is stored for an admin token: lowercase hex SHA-256 of the whole token string.
/// (The token has 256 bits of entropy, so a fast hash is enough.)
pub fn admin_token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Cheap shape check before any lookup.
pub(crate) fn plausible_admin_token(token: &str) -> bool {
    token.len() <= MAX_ADMIN_TOKEN_LEN
        && token.len() > ADMIN_TOKEN_PREFIX.len()
        && token.starts_with(ADMIN_TOKEN_PREFIX)
}

/// Where a console target listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetAddress {
    /// `host:port`, IPv6 hosts in brackets (`[::1]:5900`).
    Tcp(String),
    /// Absolute path of a unix socket.
    Unix(PathBuf),
}

/// Longest unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_UNIX_PATH: usize = 107;

impl TargetAddress {
    /// Checks the address syntax (no name resolution).
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: &str| Err(StoreError::Invalid(format!("target address: {m}")));
        match self {
            TargetAddress::Tcp(s) => {
                let (host, port) = if let Some(rest) = s.strip_prefix('[') {
                    match rest.split_once("]:") {
                        Some((h, p)) if h.parse::<std::net::Ipv6Addr>().is_ok() => (h, p),
                        _ => return bad("expected [IPv6]:port"),
                    }
                } else {
                    match s.rsplit_once(':') {
                        Some((h, p)) if !h.contains(':') => (h, p),
                        _ => return bad("expected host:port"),
                    }
                };
                if host.is_empty() || host.len() > 253 {
                    return bad("host must be 1 to 253 characters");
                }
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
                {
                    return bad("host has characters other than letters, digits, '.', '-', '_'");
                }
                match port.parse::<u16>() {
                    Ok(p) if p >= 1 && !port.starts_with('+') => Ok(()),
                    _ => bad("port must be 1 to 65535"),
                }
            }
            TargetAddress::Unix(p) => {
                let Some(s) = p.to_str() else {
                    return bad("unix socket path must be UTF-8");
                };
                if !p.is_absolute() {
                    return bad("unix socket path must be absolute");
                }
                if s.len() > MAX_UNIX_PATH {
                    return bad("unix socket path is longer than 107 bytes");
                }
                if s.contains('\0') {
                    return bad("unix socket path contains NUL");
                }
                Ok(())
            }
        }
    }

    fn kind_str(&self) -> &'static str {
        match self {
            TargetAddress::Tcp(_) => "tcp",
            TargetAddress::Unix(_) => "unix",
        }
    }
}

/// Longest stored VNC password for a target.
pub const MAX_VNC_PASSWORD: usize = 128;

/// An external console endpoint, linked to by name like a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: ConsoleType,
    pub address: TargetAddress,
    /// Password the gateway presents to the console server. Stored (the gateway needs
    /// it in clear for VNC authentication); never serialized or logged.
    pub vnc_password: Option<Secret>,
    pub created_at: OffsetDateTime,
}

/// The admin API's view of a target: `has_vnc_password` instead of the password.
#[derive(Serialize)]
struct TargetView<'a> {
    name: &'a str,
    kind: ConsoleType,
    address: &'a TargetAddress,
    has_vnc_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TargetView {
            name: &self.name,
            kind: self.kind,
            address: &self.address,
            has_vnc_password: self.vnc_password.is_some(),
            created_at: self.created_at,
        }
        .serialize(s)
    }
}

impl Target {
    /// Checks name, address and password.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_name("name", &self.name)?;
        self.address.validate()?;
        if let Some(pw) = &self.vnc_password {
            if pw.is_empty() || pw.len() > MAX_VNC_PASSWORD {
                return Err(StoreError::Invalid(format!(
                    "vnc_password must be 1 to {MAX_VNC_PASSWORD} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// Admin API input for `POST /targets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    pub name: String,
    #[serde(default)]
    pub kind: Option<ConsoleType>,
    pub address: TargetAddress,
    #[serde(default)]
    pub vnc_password: Option<Secret>,
}

impl TargetRequest {
    /// Validates the request into a [`Target`] created at `now`.
    pub fn validate(self, now: OffsetDateTime) -> Result<Target, StoreError> {
        let t = Target {
            name: self.name,
            kind: self.kind.unwrap_or_default(),
            address: self.address,
            vnc_password: self.vnc_password,
            created_at: now,
        };
        t.validate()?;
        Ok(t)
    }
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    LinkCreated,
    LinkRedeemed,
    RedeemRefused,
    PasswordFailure,
    LockedOut,
    SessionStarted,
    SessionEnded,
    LinkRevoked,
    SessionKilled,
    AdminTokenCreated,
    AdminTokenRevoked,
    AdminAuthFailure,
    SigningKeyRotated,
    SigningKeyRemoved,
    TargetCreated,
    TargetDeleted,
    VmAction,
    /// A recording stopped before its session ended (a cap, a full disk, a slow writer);
    /// `detail` says why and what the gateway did.
    RecordingStopped,
    RecordingDeleted,
}

impl AuditKind {
    pub const ALL: &'static [AuditKind] = &[
        AuditKind::LinkCreated,
        AuditKind::LinkRedeemed,
        AuditKind::RedeemRefused,
        AuditKind::PasswordFailure,
        AuditKind::LockedOut,
        AuditKind::SessionStarted,
        AuditKind::SessionEnded,
        AuditKind::LinkRevoked,
        AuditKind::SessionKilled,
        AuditKind::AdminTokenCreated,
        AuditKind::AdminTokenRevoked,
        AuditKind::AdminAuthFailure,
        AuditKind::SigningKeyRotated,
        AuditKind::SigningKeyRemoved,
        AuditKind::TargetCreated,
        AuditKind::TargetDeleted,
        AuditKind::VmAction,
        AuditKind::RecordingStopped,
        AuditKind::RecordingDeleted,
    ];

    /// The snake_case name (as serialized and stored).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LinkCreated => "link_created",
            AuditKind::LinkRedeemed => "link_redeemed",
            AuditKind::RedeemRefused => "redeem_refused",
            AuditKind::PasswordFailure => "password_failure",
            AuditKind::LockedOut => "locked_out",
            AuditKind::SessionStarted => "session_started",
            AuditKind::SessionEnded => "session_ended",
            AuditKind::LinkRevoked => "link_revoked",
            AuditKind::SessionKilled => "session_killed",
            AuditKind::AdminTokenCreated => "admin_token_created",
            AuditKind::AdminTokenRevoked => "admin_token_revoked",
            AuditKind::AdminAuthFailure => "admin_auth_failure",
            AuditKind::SigningKeyRotated => "signing_key_rotated",
            AuditKind::SigningKeyRemoved => "signing_key_removed",
            AuditKind::TargetCreated => "target_created",
            AuditKind::TargetDeleted => "target_deleted",
            AuditKind::VmAction => "vm_action",
            AuditKind::RecordingStopped => "recording_stopped",
            AuditKind::RecordingDeleted => "recording_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record. `detail` is free text for people: never put a token, password or
/// hash in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: AuditKind,
    pub link_id: Option<String>,
    pub session_id: Option<String>,
    /// Client address (as decided by the trusted-proxy rules).
    pub client: Option<String>,
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` at `at` with no other fields.
    pub fn new(kind: AuditKind, at: OffsetDateTime) -> AuditEvent {
        AuditEvent {
            at,
            kind,
            link_id: None,
            session_id: None,
            client: None,
            detail: None,
        }
    }

    pub fn link(mut self, id: impl Into<String>) -> Self {
        self.link_id = Some(id.into());
        self
    }

    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    pub fn client(mut self, addr: impl Into<String>) -> Self {
        self.client = Some(addr.into());
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// The audit record of a counted use, as [`Store::redeem_with_grant_audited`] stores
/// it: `event` with the link's id and `uses=N` (its count after this use) as detail.
pub(crate) fn redeemed_audit(event: AuditEvent, link: &Link) -> AuditEvent {
    let uses = format!("uses={}", link.uses);
    event.link(link.id.clone()).detail(uses)
}

/// A visitor's right to open console sessions of one link, after a successful exchange.
/// Stored (and cached in memory) under the SHA-256 of the cookie that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub link_id: String,
    pub expires_at: OffsetDateTime,
}

/// Link, token, key, target, grant and audit persistence.
///
/// Every method runs its I/O off the async runtime. Times passed in (`now`) are the
/// caller's clock so that tests can move time.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores a new link; [`StoreError::Duplicate`] if the id exists.
    async fn create_link(&self, link: &Link) -> Result<(), StoreError>;
    async fn get_link(&self, id: &str) -> Result<Option<Link>, StoreError>;
    /// All links, newest first.
    async fn list_links(&self) -> Result<Vec<Link>, StoreError>;
    /// Marks a link revoked at `now`; `false` if it is unknown or already revoked.
    async fn revoke_link(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError>;
    /// Atomically re-checks revoked / expired / not-yet-valid / `uses < max_uses` at
    /// `now` and counts one use, returning the updated link; or says why not. Exact
    /// under concurrency (one conditional UPDATE inside an immediate transaction).
    async fn redeem(&self, id: &str, now: OffsetDateTime) -> Result<Link, RedeemError>;
    /// [`Store::redeem`] and the visitor's grant (under `cookie_sha256`, valid until the
    /// link expires) in ONE transaction: whatever fails (the grant cannot be stored, the
    /// connection drops, the server stops), no use is ever counted without its grant.
    /// Required of every store (no two-write default).
    async fn redeem_with_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
    ) -> Result<Link, RedeemError>;
    /// [`Store::redeem_with_grant`] and the visitor's audit record in the SAME
    /// transaction (one durable write per exchange instead of two): `audit`, with its
    /// `detail` set to `uses=N` (the count after this use, see [`redeemed_audit`]), is
    /// stored if and only if the use is counted. Required of every store.
    async fn redeem_with_grant_audited(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
        audit: AuditEvent,
    ) -> Result<Link, RedeemError>;

    /// Creates an admin token; returns its info and the secret token (shown once; only
    /// its SHA-256 is stored). Names follow the VM-name rule and are unique among
    /// non-revoked tokens.
    async fn create_admin_token(&self, name: &str) -> Result<(AdminTokenInfo, String), StoreError>;
    /// The live (non-revoked) token matching `token`, if any.
    async fn check_admin_token(&self, token: &str) -> Result<Option<AdminTokenInfo>, StoreError>;
    /// All admin tokens, revoked ones included, oldest first.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, StoreError>;
    /// Revokes the live token with this id, or else the live token with this name;
    /// `false` if none.
    async fn revoke_admin_token(&self, id_or_name: &str) -> Result<bool, StoreError>;

    /// All token keys, oldest first; creates a fresh signing key when no non-retired
    /// key exists (first use, or after the active key was removed).
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Retires every key and adds a new one, which then signs; old keys keep verifying
    /// until removed.
    async fn rotate_signing_key(&self) -> Result<SigningKey, StoreError>;
    /// Removes a key (tokens signed with it stop verifying); `false` if unknown.
    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError>;

    /// Stores a new target (validated); [`StoreError::Duplicate`] if the name exists.
    async fn put_target(&self, target: &Target) -> Result<(), StoreError>;
    async fn get_target(&self, name: &str) -> Result<Option<Target>, StoreError>;
    /// All targets by name.
    async fn list_targets(&self) -> Result<Vec<Target>, StoreError>;
    async fn delete_target(&self, name: &str) -> Result<bool, StoreError>;

    /// Appends an audit event (durably).
    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// The newest `limit` events (at most [`MAX_AUDIT_LIST`]), newest first, optionally
    /// only those of one link.
    async fn list_audit(
        &self,
        link_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Audit events matching `query` (see [`AuditQuery`]), newest first, each with its id
    /// and its session's recording id.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Deletes events older than `before`; returns how many.
    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError>;

    /// Stores a visitor's grant under the SHA-256 (hex) of its cookie.
    async fn put_grant(&self, cookie_sha256: &str, grant: &Grant) -> Result<(), StoreError>;
    /// The grant stored under this cookie hash, expired or not.
    async fn get_grant(&self, cookie_sha256: &str) -> Result<Option<Grant>, StoreError>;
    /// Deletes grants that expired at or before `now`; returns how many. (Revoking a
    /// link deletes its grants.)
    async fn prune_grants(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Frees what the store holds in memory only as a cache (SQLite's page cache), so
    /// that a burst of visitors does not keep it at its peak; later reads fill it again.
    /// Stores without such a cache do nothing.
    async fn release_memory(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Adds a recording to the index; [`StoreError::Duplicate`] if the id exists.
    async fn put_recording(&self, rec: &RecordingInfo) -> Result<(), StoreError>;
    /// Updates a recording's end, size, status and detail; `false` if unknown.
    async fn finish_recording(
        &self,
        id: &str,
        ended_at: Option<OffsetDateTime>,
        bytes: u64,
        status: RecordingStatus,
        detail: Option<&str>,
    ) -> Result<bool, StoreError>;
    async fn get_recording(&self, id: &str) -> Result<Option<RecordingInfo>, StoreError>;
    /// Recordings matching `filter`, newest first, at most `limit`
    /// (and [`MAX_RECORDING_LIST`]).
    async fn list_recordings(
        &self,
        filter: &RecordingFilter,
        limit: usize,
    ) -> Result<Vec<RecordingInfo>, StoreError>;
    /// Removes a recording from the index; `false` if unknown.
    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError>;

    /// A trivial query, for `/healthz`.
    async fn health(&self) -> Result<(), StoreError>;
}

/// Path of the SQLite file inside a data directory.
pub fn default_sqlite_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.sqlite3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_shape_and_hash() {
        let t = new_admin_token();
        assert!(t.starts_with("vmgw_"));
        assert_eq!(t.len(), 5 + 43);
        assert!(plausible_admin_token(&t));
        assert!(!plausible_admin_token("vmgw_"));
        assert!(!plausible_admin_token("Bearer x"));
        assert!(!plausible_admin_token(&format!("vmgw_{}", "a".repeat(200))));
        assert_ne!(t, new_admin_token());
        let h = admin_token_hash("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn target_addresses() {
        for ok in [
            TargetAddress::Tcp("127.0.0.1:5900".into()),
            TargetAddress::Tcp("vnc.example-host.lan:65535".into()),
            TargetAddress::Tcp("[::1]:5901".into()),
            TargetAddress::Unix("/run/vm/a.sock".into()),
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
        for bad in [
            TargetAddress::Tcp("127.0.0.1".into()),
            TargetAddress::Tcp(":5900".into()),
            TargetAddress::Tcp("h:0".into()),
            TargetAddress::Tcp("h:65536".into()),
            TargetAddress::Tcp("h:+80".into()),
            TargetAddress::Tcp("::1:5900".into()),
            TargetAddress::Tcp("[zz]:5900".into()),
            TargetAddress::Tcp("h h:1".into()),
            TargetAddress::Tcp("h/x:1".into()),
            TargetAddress::Unix("relative.sock".into()),
            TargetAddress::Unix(format!("/{}", "a".repeat(107)).into()),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let j: TargetAddress = serde_json::from_str(r#"{"tcp":"h:1"}"#).expect("tcp");
        assert_eq!(j, TargetAddress::Tcp("h:1".into()));
        let j: TargetAddress = serde_json::from_str(r#"{"unix":"/s"}"#).expect("unix");
        assert_eq!(j, TargetAddress::Unix("/s".into()));
        assert!(serde_json::from_str::<TargetAddress>(r#"{"udp":"h:1"}"#).is_err());
    }

    #[test]
    fn target_json_hides_password() {
        let r: TargetRequest = serde_json::from_str(
            r#"{"name":"ext-1","address":{"tcp":"10.0.0.5:5900"},"vnc_password":"s3cr3t"}"#,
        )
        .expect("parse");
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let t = r
            .validate(OffsetDateTime::UNIX_EPOCH)
            .expect("valid target");
        assert_eq!(t.kind, ConsoleType::Vnc);
        let j = serde_json::to_string(&t).expect("ser");
        assert!(!j.contains("s3cr3t"), "{j}");
        assert!(j.contains(r#""has_vnc_password":true"#), "{j}");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(serde_json::from_str::<TargetRequest>(
            r#"{"name":"x","address":{"tcp":"h:1"},"extra":1}"#
        )
        .is_err());
        let bad = TargetRequest {
            name: "../x".into(),
            kind: None,
            address: TargetAddress::Tcp("h:1".into()),
            vnc_password: None,
        };
        assert!(matches!(
            bad.validate(OffsetDateTime::UNIX_EPOCH),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn audit_kinds_round_trip() {
        for k in AuditKind::ALL {
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_string(k).expect("ser"),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(AuditKind::parse("nope"), None);
    }
}
