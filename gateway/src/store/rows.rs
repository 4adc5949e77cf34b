//! What both SQL stores share, so that a rule fixed once holds in both: rows as stored
//! (times in unix milliseconds, enums as text), their conversion to and from the
//! contract's types with every validation the stores apply before SQL, the audit text
//! rules, "unique violation → Duplicate", the explanation of a refused redemption and
//! the signing-key rotation time. Pure: no driver types.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::{
    admin_token_hash, new_admin_token, AdminTokenInfo, AuditEvent, AuditKind, RedeemError, Secret,
    StoreError, Target, TargetAddress,
};
use crate::model::clipboard::ClipboardPolicy;
use crate::model::links::{random_token, validate_name, ConsoleType, Link};
use crate::model::tokens::SigningKey;

/// One schema migration (each store has its own list, in its own dialect).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// The migrations to apply to a schema at version `current`, in version order; a
/// schema newer than every migration (written by a newer gateway) is refused.
pub(super) fn pending_migrations(
    migrations: &[Migration],
    current: i64,
) -> Result<Vec<Migration>, StoreError> {
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    let mut pending: Vec<Migration> = migrations
        .iter()
        .filter(|m| m.version > current)
        .copied()
        .collect();
    pending.sort_by_key(|m| m.version);
    Ok(pending)
}

/// Longest stored audit `client`, `link_id` and `session_id`.
const MAX_AUDIT_FIELD: usize = 128;

pub(super) fn to_ms(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| StoreError::Invalid("time out of range".into()))
}

pub(super) fn from_ms(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("time {ms} ms out of range")))
}

fn opt_from_ms(ms: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    ms.map(from_ms).transpose()
}

fn opt_to_ms(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(to_ms).transpose()
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v} out of range")))
}

/// Text that must round-trip cannot hold NUL (PostgreSQL refuses it; C strings cut it):
/// refused in both stores alike.
pub(super) fn no_nul(what: &str, s: Option<&str>) -> Result<(), StoreError> {
    match s {
        Some(s) if s.contains('\0') => Err(StoreError::Invalid(format!(
            "{what} must not contain NUL characters"
        ))),
        _ => Ok(()),
    }
}

/// Audit text is for people: cut to `max_chars`, and a NUL becomes U+FFFD rather than
/// failing the event.
pub(super) fn audit_text(s: Option<String>, max_chars: usize) -> Option<String> {
    s.map(|s| {
        let s = if s.chars().count() > max_chars {
            s.chars().take(max_chars).collect()
        } else {
            s
        };
        if s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s
        }
    })
}

/// What an INSERT that hit a unique constraint was adding.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unique<'a> {
    Link(&'a str),
    AdminToken(&'a str),
    Target(&'a str),
    Grant,
    Recording(&'a str),
}

impl Unique<'_> {
    /// The [`StoreError::Duplicate`] for it.
    pub(super) fn duplicate(self) -> StoreError {
        StoreError::Duplicate(match self {
            Unique::Link(id) => format!("link {id}"),
            Unique::AdminToken(name) => format!("admin token {name:?}"),
            Unique::Target(name) => format!("target {name:?}"),
            Unique::Grant => "grant".into(),
            Unique::Recording(id) => format!("recording {id}"),
        })
    }
}

/// A driver error that may be a unique-constraint violation.
pub(super) trait MaybeUnique: Into<StoreError> {
    fn is_unique_violation(&self) -> bool;
}

/// The result of an INSERT: a unique violation becomes [`StoreError::Duplicate`] for
/// `what`, any other error a store error.
pub(super) fn inserted<T, E: MaybeUnique>(
    r: Result<T, E>,
    what: Unique<'_>,
) -> Result<(), StoreError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_unique_violation() => Err(what.duplicate()),
        Err(e) => Err(e.into()),
    }
}

/// Why a conditional redemption UPDATE matched no row, from the link as read after it
/// (a link only ever moves away from redeemable, so this cannot contradict the UPDATE).
pub(super) fn refusal(link: Option<Link>, now: OffsetDateTime) -> RedeemError {
    let Some(link) = link else {
        return RedeemError::NotFound;
    };
    match link.check(now) {
        Err(refusal) => RedeemError::Refused(refusal),
        Ok(()) => RedeemError::Store(StoreError::Corrupt(
            "redeem: conditional update refused a redeemable link".into(),
        )),
    }
}

/// The creation time of a rotated signing key: now, or just after the newest key if
/// the clock stepped back (or another gateway's clock is ahead), so that "newest" stays
/// unambiguous. Millisecond precision, as stored.
pub(super) fn rotation_time(newest_ms: Option<i64>) -> Result<OffsetDateTime, StoreError> {
    let now = to_ms(OffsetDateTime::now_utc())?;
    match newest_ms {
        Some(n) if now <= n => from_ms(n.saturating_add(1)),
        _ => from_ms(now),
    }
}

pub(super) const LINK_COLS: &str = "id, vm, console, expires_at_ms, not_before_ms, password_hash, \
     max_uses, max_viewers, view_only, allow_power, note, uses, created_at_ms, revoked_at_ms, \
     clipboard, record";

/// A `links` row, in [`LINK_COLS`] order.
pub(super) struct LinkRow {
    pub id: String,
    pub vm: String,
    pub console: String,
    pub expires_at_ms: i64,
    pub not_before_ms: Option<i64>,
    pub password_hash: Option<String>,
    pub max_uses: Option<i64>,
    pub max_viewers: Option<i64>,
    pub view_only: bool,
    pub allow_power: bool,
    pub note: Option<String>,
    pub uses: i64,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub clipboard: String,
    pub record: Option<bool>,
}

impl LinkRow {
    /// The row to insert for a new link, after the checks every store makes before SQL.
    pub(super) fn new(l: &Link) -> Result<LinkRow, StoreError> {
        validate_name("vm", &l.vm)?;
        if l.has_password != l.password_hash.is_some() {
            return Err(StoreError::Invalid(
                "has_password does not match password_hash".into(),
            ));
        }
        no_nul("id", Some(&l.id))?;
        no_nul("note", l.note.as_deref())?;
        no_nul("password_hash", l.password_hash.as_deref())?;
        let revoked_at_ms = if l.revoked {
            Some(to_ms(l.revoked_at.unwrap_or(l.created_at))?)
        } else {
            None
        };
        Ok(LinkRow {
            id: l.id.clone(),
            vm: l.vm.clone(),
            console: l.console.as_str().to_owned(),
            expires_at_ms: to_ms(l.expires_at)?,
            not_before_ms: opt_to_ms(l.not_before)?,
            password_hash: l.password_hash.clone(),
            max_uses: l.max_uses.map(i64::from),
            max_viewers: l.max_viewers.map(i64::from),
            view_only: l.view_only,
            allow_power: l.allow_power,
            note: l.note.clone(),
            uses: i64::from(l.uses),
            created_at_ms: to_ms(l.created_at)?,
            revoked_at_ms,
            clipboard: l.clipboard.as_str().to_owned(),
            record: l.record,
        })
    }

    pub(super) fn into_link(self) -> Result<Link, StoreError> {
        let console: ConsoleType = self
            .console
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("link console {:?}", self.console)))?;
        let revoked_at = opt_from_ms(self.revoked_at_ms)?;
        let clipboard: ClipboardPolicy = self
            .clipboard
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("link clipboard {:?}", self.clipboard)))?;
        Ok(Link {
            clipboard,
            console,
            vm: self.vm,
            expires_at: from_ms(self.expires_at_ms)?,
            not_before: opt_from_ms(self.not_before_ms)?,
            has_password: self.password_hash.is_some(),
            password_hash: self.password_hash,
            max_uses: self.max_uses.map(|v| to_u32(v, "max_uses")).transpose()?,
            max_viewers: self
                .max_viewers
                .map(|v| to_u32(v, "max_viewers"))
                .transpose()?,
            view_only: self.view_only,
            allow_power: self.allow_power,
            note: self.note,
            // Without max_uses the counter may in principle pass u32::MAX: saturate.
            uses: u32::try_from(self.uses.max(0)).unwrap_or(u32::MAX),
            created_at: from_ms(self.created_at_ms)?,
            revoked: revoked_at.is_some(),
            revoked_at,
            record: self.record,
            id: self.id,
        })
    }
}

pub(super) const TOKEN_COLS: &str = "id, name, created_at_ms, revoked_at_ms";

/// An `admin_tokens` row, in [`TOKEN_COLS`] order (the hash is not part of it).
pub(super) struct TokenRow {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A new admin token: its row, the SHA-256 to store with it, and the secret (shown once).
pub(super) struct NewToken {
    pub row: TokenRow,
    pub sha256: String,
    pub secret: String,
}

impl NewToken {
    /// Checks the name and makes a fresh token created now.
    pub(super) fn generate(name: &str) -> Result<NewToken, StoreError> {
        validate_name("name", name)?;
        let secret = new_admin_token();
        Ok(NewToken {
            row: TokenRow {
                id: format!("tok_{}", random_token(9)),
                name: name.to_owned(),
                created_at_ms: to_ms(OffsetDateTime::now_utc())?,
                revoked_at_ms: None,
            },
            sha256: admin_token_hash(&secret),
            secret,
        })
    }
}

impl TokenRow {
    pub(super) fn into_info(self) -> Result<AdminTokenInfo, StoreError> {
        let revoked_at = opt_from_ms(self.revoked_at_ms)?;
        Ok(AdminTokenInfo {
            id: self.id,
            name: self.name,
            created_at: from_ms(self.created_at_ms)?,
            revoked: revoked_at.is_some(),
            revoked_at,
        })
    }
}

/// Compares a stored token hash with the looked-up one in constant time.
pub(super) fn same_hash(stored: &str, wanted: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(stored.as_bytes().ct_eq(wanted.as_bytes()))
}

pub(super) const KEY_COLS: &str = "kid, secret, created_at_ms, retired";

/// A `signing_keys` row, in [`KEY_COLS`] order.
pub(super) struct KeyRow {
    pub kid: String,
    pub secret: Vec<u8>,
    pub created_at_ms: i64,
    pub retired: bool,
}

impl KeyRow {
    pub(super) fn new(k: &SigningKey) -> Result<KeyRow, StoreError> {
        Ok(KeyRow {
            kid: k.kid.clone(),
            secret: k.secret.clone(),
            created_at_ms: to_ms(k.created_at)?,
            retired: k.retired,
        })
    }

    pub(super) fn into_key(self) -> Result<SigningKey, StoreError> {
        Ok(SigningKey {
            kid: self.kid,
            secret: self.secret,
            created_at: from_ms(self.created_at_ms)?,
            retired: self.retired,
        })
    }
}

pub(super) const TARGET_COLS: &str =
    "name, kind, address_kind, address, vnc_password, created_at_ms";

/// A `targets` row, in [`TARGET_COLS`] order.
pub(super) struct TargetRow {
    pub name: String,
    pub kind: String,
    pub address_kind: String,
    pub address: String,
    pub vnc_password: Option<String>,
    pub created_at_ms: i64,
}

impl TargetRow {
    /// The row to insert, after validating the target.
    pub(super) fn new(t: &Target) -> Result<TargetRow, StoreError> {
        t.validate()?;
        let vnc_password = t.vnc_password.as_ref().map(|p| p.expose().to_owned());
        no_nul("vnc_password", vnc_password.as_deref())?;
        let address = match &t.address {
            TargetAddress::Tcp(s) => s.clone(),
            TargetAddress::Unix(p) => p
                .to_str()
                .ok_or_else(|| StoreError::Invalid("unix socket path must be UTF-8".into()))?
                .to_owned(),
        };
        Ok(TargetRow {
            name: t.name.clone(),
            kind: t.kind.as_str().to_owned(),
            address_kind: t.address.kind_str().to_owned(),
            address,
            vnc_password,
            created_at_ms: to_ms(t.created_at)?,
        })
    }

    pub(super) fn into_target(self) -> Result<Target, StoreError> {
        let kind: ConsoleType = self
            .kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("target kind {:?}", self.kind)))?;
        let address = match self.address_kind.as_str() {
            "tcp" => TargetAddress::Tcp(self.address),
            "unix" => TargetAddress::Unix(PathBuf::from(self.address)),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "target address kind {other:?}"
                )))
            }
        };
        Ok(Target {
            name: self.name,
            kind,
            address,
            vnc_password: self.vnc_password.map(Secret::from),
            created_at: from_ms(self.created_at_ms)?,
        })
    }
}

pub(super) const AUDIT_COLS: &str = "at_ms, kind, link_id, session_id, client, detail";

/// An `audit` row, in [`AUDIT_COLS`] order.
#[derive(Debug, Clone)]
pub(super) struct AuditRow {
    pub at_ms: i64,
    pub kind: String,
    pub link_id: Option<String>,
    pub session_id: Option<String>,
    pub client: Option<String>,
    pub detail: Option<String>,
}

impl AuditRow {
    /// The row to insert: fields cut to their limits, NULs replaced.
    pub(super) fn new(e: AuditEvent) -> Result<AuditRow, StoreError> {
        Ok(AuditRow {
            at_ms: to_ms(e.at)?,
            kind: e.kind.as_str().to_owned(),
            link_id: audit_text(e.link_id, MAX_AUDIT_FIELD),
            session_id: audit_text(e.session_id, MAX_AUDIT_FIELD),
            client: audit_text(e.client, MAX_AUDIT_FIELD),
            detail: audit_text(e.detail, super::MAX_AUDIT_DETAIL),
        })
    }

    pub(super) fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            at: from_ms(self.at_ms)?,
            kind: AuditKind::parse(&self.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("audit kind {:?}", self.kind)))?,
            link_id: self.link_id,
            session_id: self.session_id,
            client: self.client,
            detail: self.detail,
        })
    }
}

/// `limit` for `list_audit`, capped at [`super::MAX_AUDIT_LIST`].
pub(super) fn audit_limit(limit: usize) -> i64 {
    i64::try_from(limit.min(super::MAX_AUDIT_LIST)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rotation_time_is_after_the_newest_key() {
        let far = to_ms(OffsetDateTime::now_utc()).expect("now") + 60_000;
        assert_eq!(
            to_ms(rotation_time(Some(far)).expect("t")).expect("ms"),
            far + 1
        );
        let t = rotation_time(Some(0)).expect("t");
        assert!(to_ms(t).expect("ms") > 0);
        assert!(rotation_time(None).is_ok());
    }

    #[test]
    fn unique_violations_name_what_exists() {
        assert!(matches!(
            Unique::Target("t").duplicate(),
            StoreError::Duplicate(m) if m == "target \"t\""
        ));
    }
}
