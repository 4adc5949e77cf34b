//! The share-link model: what an administrator asks for ([`LinkRequest`]), the policy
//! that bounds it ([`LinkPolicy`]), the stored row ([`Link`]) and the checks a visitor's
//! redemption must pass ([`Link::check`], [`Refusal`]).
//!
//! Times are [`OffsetDateTime`] in UTC, RFC 3339 on the wire. Link times are truncated to
//! whole seconds at validation so that the stored row and the signed token (whose `exp`
//! and `nbf` are whole seconds) agree exactly.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::clipboard::ClipboardPolicy;
use crate::model::secret::Secret;

/// Bytes of CSPRNG output in a link id (128 bits).
pub const LINK_ID_BYTES: usize = 16;
/// Longest VM / target / admin-token name accepted.
pub const MAX_NAME_LEN: usize = 63;

/// Which console protocol a link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleType {
    /// RFB (VNC), relayed to noVNC.
    #[default]
    Vnc,
    /// SPICE, relayed to spice-html5.
    Spice,
    /// An opaque byte stream (an external target), shown in a terminal.
    Raw,
    /// A VM's serial port, shared by its viewers (see `engine::serial`), shown in a
    /// terminal.
    Serial,
}

impl ConsoleType {
    /// The wire / storage spelling: `vnc`, `spice`, `raw` or `serial`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleType::Vnc => "vnc",
            ConsoleType::Spice => "spice",
            ConsoleType::Raw => "raw",
            ConsoleType::Serial => "serial",
        }
    }
}

impl fmt::Display for ConsoleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsoleType {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vnc" => Ok(ConsoleType::Vnc),
            "spice" => Ok(ConsoleType::Spice),
            "raw" => Ok(ConsoleType::Raw),
            "serial" => Ok(ConsoleType::Serial),
            _ => Err(LinkError::UnknownConsole),
        }
    }
}

/// Errors of link validation. The messages go back to the administrator as 400s, so they
/// say exactly which field is wrong and why, and never echo a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("one of `expires_at` or `ttl_seconds` is required")]
    MissingExpiry,
    #[error("`expires_at` and `ttl_seconds` are mutually exclusive: give only one")]
    ConflictingExpiry,
    #[error("`ttl_seconds` must be at least 1")]
    ZeroTtl,
    #[error("`expires_at` must be in the future")]
    ExpiryNotInFuture,
    #[error(
        "the link would expire more than {max_ttl_seconds} seconds from now (the maximum lifetime)"
    )]
    ExpiryTooFar { max_ttl_seconds: u64 },
    #[error("`not_before` must be earlier than the expiry time")]
    NotBeforeAfterExpiry,
    #[error("`max_uses` must be at least 1 when set")]
    ZeroMaxUses,
    #[error("`max_viewers` must be at least 1 when set")]
    ZeroMaxViewers,
    #[error("`max_viewers` must be at most {max}")]
    TooManyViewers { max: u32 },
    #[error("`password` must not be empty when set (omit it for a link without password)")]
    EmptyPassword,
    #[error("`password` must be at most {max} bytes")]
    PasswordTooLong { max: usize },
    #[error("`note` must be at most {max} characters")]
    NoteTooLong { max: usize },
    #[error("invalid `{field}`: {reason}")]
    InvalidName {
        field: &'static str,
        reason: &'static str,
    },
    #[error("`console` must be one of `vnc`, `spice`, `raw`, `serial`")]
    UnknownConsole,
    #[error("a time is outside the supported range")]
    TimeOutOfRange,
    #[error("internal: the link's password and password hash do not match up")]
    PasswordHashMismatch,
}

/// Checks a VM / target / token name: 1–63 bytes of `[A-Za-z0-9._-]`, the first one
/// alphanumeric. `field` names the field in the error message.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), LinkError> {
    let err = |reason| Err(LinkError::InvalidName { field, reason });
    if name.is_empty() {
        return err("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return err("must be at most 63 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return err("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return err("may contain only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Bounds an administrator's link requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPolicy {
    /// Longest lifetime of a link, counted from its creation.
    pub max_ttl: Duration,
    /// Lifetime given to a request that names neither `expires_at` nor `ttl_seconds`;
    /// `None` makes one of them mandatory.
    pub default_ttl: Option<Duration>,
    /// Longest `note`, in characters.
    pub max_note_len: usize,
    /// Longest `password`, in bytes.
    pub max_password_len: usize,
    /// Largest `max_viewers`.
    pub max_viewers_cap: u32,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy {
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            default_ttl: None,
            max_note_len: 1024,
            max_password_len: 128,
            max_viewers_cap: 100,
        }
    }
}

fn default_false() -> bool {
    false
}

/// The administrator's request for a link (admin API input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub vm: String,
    #[serde(default)]
    pub console: Option<ConsoleType>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default)]
    pub max_uses: Option<u32>,
    #[serde(default)]
    pub max_viewers: Option<u32>,
    #[serde(default = "default_false")]
    pub view_only: bool,
    #[serde(default = "default_false")]
    pub allow_power: bool,
    #[serde(default)]
    pub note: Option<String>,
    /// Which way clipboard text may cross the gateway; `to_guest` when absent.
    #[serde(default)]
    pub clipboard: Option<ClipboardPolicy>,
    /// Record every session of this link (`true`), never (`false`), or as the gateway's
    /// `recording.default` says (unset).
    #[serde(default)]
    pub record: Option<bool>,
}

/// Truncates to whole seconds in UTC (tokens carry whole seconds).
fn whole_seconds_utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
}

fn to_time_duration(d: Duration) -> Result<time::Duration, LinkError> {
    time::Duration::try_from(d).map_err(|_| LinkError::TimeOutOfRange)
}

impl LinkRequest {
    /// Checks the request against `policy` at time `now` and resolves the expiry.
    pub fn validate(
        self,
        now: OffsetDateTime,
        policy: &LinkPolicy,
    ) -> Result<ValidLink, LinkError> {
        validate_name("vm", &self.vm)?;
        let now = whole_seconds_utc(now);
        let max_ttl = to_time_duration(policy.max_ttl)?;
        let latest = now.checked_add(max_ttl).ok_or(LinkError::TimeOutOfRange)?;
        let too_far = || LinkError::ExpiryTooFar {
            max_ttl_seconds: policy.max_ttl.as_secs(),
        };

        let expires_at = match (self.expires_at, self.ttl_seconds) {
            (Some(_), Some(_)) => return Err(LinkError::ConflictingExpiry),
            (Some(at), None) => whole_seconds_utc(at),
            (None, Some(0)) => return Err(LinkError::ZeroTtl),
            (None, Some(ttl)) => {
                if ttl > policy.max_ttl.as_secs() {
                    return Err(too_far());
                }
                let ttl = i64::try_from(ttl).map_err(|_| too_far())?;
                now.checked_add(time::Duration::seconds(ttl))
                    .ok_or(LinkError::TimeOutOfRange)?
            }
            (None, None) => match policy.default_ttl {
                Some(d) => now
                    .checked_add(to_time_duration(d)?)
                    .ok_or(LinkError::TimeOutOfRange)?,
                None => return Err(LinkError::MissingExpiry),
            },
        };
        if expires_at <= now {
            return Err(LinkError::ExpiryNotInFuture);
        }
        if expires_at > latest {
            return Err(too_far());
        }

        let not_before = self.not_before.map(whole_seconds_utc);
        if let Some(nb) = not_before {
            if nb >= expires_at {
                return Err(LinkError::NotBeforeAfterExpiry);
            }
        }
        if self.max_uses == Some(0) {
            return Err(LinkError::ZeroMaxUses);
        }
        match self.max_viewers {
            Some(0) => return Err(LinkError::ZeroMaxViewers),
            Some(n) if n > policy.max_viewers_cap => {
                return Err(LinkError::TooManyViewers {
                    max: policy.max_viewers_cap,
                })
            }
            _ => {}
        }
        if let Some(pw) = &self.password {
            if pw.is_empty() {
                return Err(LinkError::EmptyPassword);
            }
            if pw.len() > policy.max_password_len {
                return Err(LinkError::PasswordTooLong {
                    max: policy.max_password_len,
                });
            }
        }
        if let Some(note) = &self.note {
            if note.chars().count() > policy.max_note_len {
                return Err(LinkError::NoteTooLong {
                    max: policy.max_note_len,
                });
            }
        }

        Ok(ValidLink {
            vm: self.vm,
            console: self.console.unwrap_or_default(),
            expires_at,
            not_before,
            password: self.password,
            max_uses: self.max_uses,
            max_viewers: self.max_viewers,
            view_only: self.view_only,
            allow_power: self.allow_power,
            note: self.note,
            clipboard: self.clipboard.unwrap_or_default(),
            record: self.record,
        })
    }
}

/// A request that passed [`LinkRequest::validate`]: the expiry is resolved, all times are
/// whole seconds in UTC. The password is still in clear: hash it (see
/// the engine's password pool) and hand the hash to [`ValidLink::into_link`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLink {
    pub vm: String,
    pub console: ConsoleType,
    pub expires_at: OffsetDateTime,
    pub not_before: Option<OffsetDateTime>,
    pub password: Option<Secret>,
    pub max_uses: Option<u32>,
    pub max_viewers: Option<u32>,
    pub view_only: bool,
    pub allow_power: bool,
    pub note: Option<String>,
    pub clipboard: ClipboardPolicy,
    pub record: Option<bool>,
}

impl ValidLink {
    /// Builds the row to store. `password_hash` must be `Some` exactly when the request
    /// had a password (so a forgotten hash cannot silently make an open link).
    pub fn into_link(
        self,
        id: String,
        created_at: OffsetDateTime,
        password_hash: Option<String>,
    ) -> Result<Link, LinkError> {
        if self.password.is_some() != password_hash.is_some() {
            return Err(LinkError::PasswordHashMismatch);
        }
        Ok(Link {
            id,
            vm: self.vm,
            console: self.console,
            expires_at: self.expires_at,
            not_before: self.not_before,
            has_password: password_hash.is_some(),
            password_hash,
            max_uses: self.max_uses,
            max_viewers: self.max_viewers,
            view_only: self.view_only,
            allow_power: self.allow_power,
            note: self.note,
            uses: 0,
            created_at: whole_seconds_utc(created_at),
            revoked: false,
            revoked_at: None,
            clipboard: self.clipboard,
            record: self.record,
        })
    }
}

/// A stored link. Serializes with the contract's field names for the admin API; the
/// password hash is never serialized (only `has_password`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub vm: String,
    pub console: ConsoleType,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    pub has_password: bool,
    /// argon2id PHC string; never serialized, never logged.
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub max_uses: Option<u32>,
    pub max_viewers: Option<u32>,
    pub view_only: bool,
    pub allow_power: bool,
    pub note: Option<String>,
    pub uses: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub revoked: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Which way clipboard text may cross the gateway (as asked; a view-only link never
    /// writes to the guest whatever it says: [`ClipboardPolicy::effective`]).
    #[serde(default)]
    pub clipboard: ClipboardPolicy,
    /// Whether its sessions are recorded: `true`, `false`, or unset for the gateway's
    /// `recording.default`.
    #[serde(default)]
    pub record: Option<bool>,
}

impl Link {
    /// Whether this link's sessions are recorded, given the gateway's default.
    pub fn recorded(&self, default: bool) -> bool {
        self.record.unwrap_or(default)
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id)
            .field("vm", &self.vm)
            .field("console", &self.console)
            .field("expires_at", &self.expires_at)
            .field("not_before", &self.not_before)
            .field("has_password", &self.has_password)
            .field("max_uses", &self.max_uses)
            .field("max_viewers", &self.max_viewers)
            .field("view_only", &self.view_only)
            .field("allow_power", &self.allow_power)
            .field("note", &self.note)
            .field("uses", &self.uses)
            .field("created_at", &self.created_at)
            .field("revoked", &self.revoked)
            .field("revoked_at", &self.revoked_at)
            .field("clipboard", &self.clipboard)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Whether a visitor may redeem the link at `now`, in this order: revoked, expired,
    /// not yet valid, uses exhausted. Viewer limits are the session registry's business.
    pub fn check(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        if self.revoked {
            return Err(Refusal::Revoked);
        }
        if now >= self.expires_at {
            return Err(Refusal::Expired);
        }
        if let Some(opens_at) = self.not_before {
            if now < opens_at {
                return Err(Refusal::NotYetValid { opens_at });
            }
        }
        if let Some(max) = self.max_uses {
            if self.uses >= max {
                return Err(Refusal::Exhausted);
            }
        }
        Ok(())
    }

    /// Uses left, when the link has a `max_uses`.
    pub fn remaining_uses(&self) -> Option<u32> {
        self.max_uses.map(|m| m.saturating_sub(self.uses))
    }
}

/// Why a visitor is refused a link (HTTP 403 with `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the link has expired")]
    Expired,
    #[error("the link has been revoked")]
    Revoked,
    #[error("the link is not valid yet (opens at {opens_at})")]
    NotYetValid { opens_at: OffsetDateTime },
    #[error("the link has no uses left")]
    Exhausted,
    #[error("the link already has as many viewers as it allows")]
    ViewersFull,
}

impl Refusal {
    /// The contract's `reason` string.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::NotYetValid { .. } => "not_yet_valid",
            Refusal::Exhausted => "exhausted",
            Refusal::ViewersFull => "viewers_full",
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn os_random(buf: &mut [u8]) {
    OsRng.fill_bytes(buf);
}

/// `n` random bytes from the OS CSPRNG, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    os_random(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// A new link id: 128 bits from the OS CSPRNG, URL-safe base64 without padding
/// (22 characters).
pub fn new_link_id() -> String {
    random_token(LINK_ID_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

    fn req() -> LinkRequest {
        LinkRequest {
            vm: "web-01".into(),
            console: None,
            expires_at: None,
            ttl_seconds: Some(3600),
            not_before: None,
            password: None,
            max_uses: None,
            max_viewers: None,
            view_only: false,
            allow_power: false,
            note: None,
            clipboard: None,
            record: None,
        }
    }

    fn policy() -> LinkPolicy {
        LinkPolicy::default()
    }

    fn err(r: LinkRequest) -> LinkError {
        match r.validate(NOW, &policy()) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn json_defaults_and_console_spelling() {
        let r: LinkRequest = serde_json::from_str(r#"{"vm":"a","ttl_seconds":60}"#).expect("parse");
        assert_eq!(r.console, None);
        assert!(!r.view_only && !r.allow_power);
        let v = r.validate(NOW, &policy()).expect("valid");
        assert_eq!(v.console, ConsoleType::Vnc);
        for (s, c) in [
            ("vnc", ConsoleType::Vnc),
            ("spice", ConsoleType::Spice),
            ("raw", ConsoleType::Raw),
            ("serial", ConsoleType::Serial),
        ] {
            let j = format!(r#"{{"vm":"a","ttl_seconds":60,"console":"{s}"}}"#);
            let r: LinkRequest = serde_json::from_str(&j).expect("parse");
            assert_eq!(r.console, Some(c));
            assert_eq!(serde_json::to_string(&c).expect("ser"), format!("\"{s}\""));
            assert_eq!(s.parse::<ConsoleType>().expect("parse"), c);
        }
        assert!(serde_json::from_str::<LinkRequest>(r#"{"vm":"a","console":"VNC"}"#).is_err());
        assert!("rdp".parse::<ConsoleType>().is_err());
    }

    #[test]
    fn json_rejects_unknown_fields_and_bad_times() {
        assert!(serde_json::from_str::<LinkRequest>(r#"{"vm":"a","ttl":5}"#).is_err());
        assert!(
            serde_json::from_str::<LinkRequest>(r#"{"vm":"a","expires_at":"tomorrow"}"#).is_err()
        );
        assert!(serde_json::from_str::<LinkRequest>(r#"{"vm":"a","max_uses":-1}"#).is_err());
        let r: LinkRequest = serde_json::from_str(
            r#"{"vm":"a","expires_at":"2030-01-01T15:00:00.75+02:00","not_before":"2030-01-01T12:30:00.9Z"}"#,
        )
        .expect("parse");
        let v = r.validate(NOW, &policy()).expect("valid");
        // Normalised to UTC and whole seconds.
        assert_eq!(v.expires_at, datetime!(2030-01-01 13:00:00 UTC));
        assert_eq!(v.expires_at.offset(), time::UtcOffset::UTC);
        assert_eq!(v.not_before, Some(datetime!(2030-01-01 12:30:00 UTC)));
    }

    #[test]
    fn expiry_rules() {
        // Neither, with and without a default TTL.
        let mut r = req();
        r.ttl_seconds = None;
        assert_eq!(err(r.clone()), LinkError::MissingExpiry);
        let p = LinkPolicy {
            default_ttl: Some(Duration::from_secs(600)),
            ..policy()
        };
        let v = r.validate(NOW, &p).expect("default ttl");
        assert_eq!(v.expires_at, NOW + time::Duration::minutes(10));
        // Both.
        let mut r = req();
        r.expires_at = Some(NOW + time::Duration::hours(1));
        assert_eq!(err(r), LinkError::ConflictingExpiry);
        // Zero TTL, past and present expiry.
        let mut r = req();
        r.ttl_seconds = Some(0);
        assert_eq!(err(r), LinkError::ZeroTtl);
        let mut r = req();
        r.ttl_seconds = None;
        r.expires_at = Some(NOW);
        assert_eq!(err(r.clone()), LinkError::ExpiryNotInFuture);
        r.expires_at = Some(NOW - time::Duration::seconds(1));
        assert_eq!(err(r.clone()), LinkError::ExpiryNotInFuture);
        // Sub-second in the future truncates to now: not in the future.
        r.expires_at = Some(NOW + time::Duration::milliseconds(500));
        assert_eq!(err(r), LinkError::ExpiryNotInFuture);
        // Too far, by TTL (including absurd values) and by date; exactly max is fine.
        let max = policy().max_ttl.as_secs();
        for ttl in [max + 1, u64::MAX] {
            let mut r = req();
            r.ttl_seconds = Some(ttl);
            assert_eq!(
                err(r),
                LinkError::ExpiryTooFar {
                    max_ttl_seconds: max
                }
            );
        }
        let mut r = req();
        r.ttl_seconds = Some(max);
        assert!(r.validate(NOW, &policy()).is_ok());
        let mut r = req();
        r.ttl_seconds = None;
        r.expires_at = Some(NOW + time::Duration::seconds(max as i64 + 1));
        assert!(matches!(err(r), LinkError::ExpiryTooFar { .. }));
        // TTL resolves from now.
        let v = req().validate(NOW, &policy()).expect("valid");
        assert_eq!(v.expires_at, NOW + time::Duration::hours(1));
    }

    #[test]
    fn not_before_rules() {
        let mut r = req();
        r.not_before = Some(NOW + time::Duration::hours(1));
        assert_eq!(err(r.clone()), LinkError::NotBeforeAfterExpiry);
        r.not_before = Some(NOW + time::Duration::hours(2));
        assert_eq!(err(r.clone()), LinkError::NotBeforeAfterExpiry);
        r.not_before = Some(NOW + time::Duration::minutes(59));
        assert!(r.clone().validate(NOW, &policy()).is_ok());
        r.not_before = Some(NOW - time::Duration::days(1));
        assert!(r.validate(NOW, &policy()).is_ok());
    }

    #[test]
    fn counts_password_note() {
        let mut r = req();
        r.max_uses = Some(0);
        assert_eq!(err(r), LinkError::ZeroMaxUses);
        let mut r = req();
        r.max_viewers = Some(0);
        assert_eq!(err(r), LinkError::ZeroMaxViewers);
        let mut r = req();
        r.max_viewers = Some(101);
        assert_eq!(err(r), LinkError::TooManyViewers { max: 100 });
        let mut r = req();
        r.password = Some(Secret::from(String::new()));
        assert_eq!(err(r), LinkError::EmptyPassword);
        let mut r = req();
        r.password = Some(Secret::from("é".repeat(65))); // 130 bytes, 65 chars
        assert_eq!(err(r), LinkError::PasswordTooLong { max: 128 });
        let mut r = req();
        r.password = Some(Secret::from("x".repeat(128)));
        assert!(r.validate(NOW, &policy()).is_ok());
        let mut r = req();
        r.note = Some("é".repeat(1024));
        assert!(r.clone().validate(NOW, &policy()).is_ok());
        r.note = Some("é".repeat(1025));
        assert_eq!(err(r), LinkError::NoteTooLong { max: 1024 });
    }

    #[test]
    fn names() {
        for ok in ["a", "A1", "9vm", "web-01.prod_x", &"a".repeat(63)] {
            assert!(validate_name("vm", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a/b",
            "../etc",
            "a b",
            "a\0",
            "é",
            "a:1",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    validate_name("vm", bad),
                    Err(LinkError::InvalidName { field: "vm", .. })
                ),
                "{bad:?}"
            );
        }
        let mut r = req();
        r.vm = "vm/../other".into();
        let e = err(r);
        assert_eq!(
            e.to_string(),
            "invalid `vm`: may contain only letters, digits, '.', '_' and '-'"
        );
    }

    #[test]
    fn error_messages_do_not_echo_passwords() {
        let mut r = req();
        r.password = Some(Secret::from("hunter2".repeat(40)));
        let e = err(r.clone());
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{r:?}").contains("hunter2"));
        let mut r = req();
        r.password = Some(Secret::from("hunter2"));
        let v = r.validate(NOW, &policy()).expect("valid");
        assert!(!format!("{v:?}").contains("hunter2"));
    }

    fn link() -> Link {
        let mut r = req();
        r.password = Some(Secret::from("pw"));
        r.max_uses = Some(2);
        r.not_before = Some(NOW + time::Duration::minutes(10));
        r.validate(NOW, &policy())
            .expect("valid")
            .into_link(new_link_id(), NOW, Some("$argon2id$fake".into()))
            .expect("link")
    }

    #[test]
    fn into_link_requires_matching_hash() {
        let mut r = req();
        r.password = Some(Secret::from("pw"));
        let v = r.validate(NOW, &policy()).expect("valid");
        assert_eq!(
            v.clone().into_link("x".into(), NOW, None),
            Err(LinkError::PasswordHashMismatch)
        );
        let v2 = req().validate(NOW, &policy()).expect("valid");
        assert_eq!(
            v2.into_link("x".into(), NOW, Some("h".into())),
            Err(LinkError::PasswordHashMismatch)
        );
        let l = v.into_link("x".into(), NOW, Some("h".into())).expect("ok");
        assert!(l.has_password);
        assert_eq!(l.uses, 0);
        assert!(!l.revoked);
    }

    #[test]
    fn link_json_hides_hash_and_uses_contract_names() {
        let l = link();
        let j = serde_json::to_value(&l).expect("ser");
        let s = j.to_string();
        assert!(!s.contains("argon2"), "{s}");
        assert!(!format!("{l:?}").contains("argon2"));
        for k in [
            "id",
            "vm",
            "console",
            "expires_at",
            "not_before",
            "has_password",
            "max_uses",
            "max_viewers",
            "view_only",
            "allow_power",
            "note",
            "uses",
            "created_at",
            "revoked",
            "revoked_at",
        ] {
            assert!(j.get(k).is_some(), "missing {k}");
        }
        assert_eq!(j["expires_at"], "2030-01-01T13:00:00Z");
        assert_eq!(j["console"], "vnc");
        assert_eq!(j["has_password"], true);
        let back: Link = serde_json::from_value(j).expect("de");
        assert_eq!(back.password_hash, None);
        assert_eq!(back.id, l.id);
    }

    #[test]
    fn check_order_and_boundaries() {
        let mut l = link();
        let opens = NOW + time::Duration::minutes(10);
        assert_eq!(l.check(NOW), Err(Refusal::NotYetValid { opens_at: opens }));
        assert_eq!(l.check(opens), Ok(()));
        assert_eq!(
            l.check(l.expires_at - time::Duration::nanoseconds(1)),
            Ok(())
        );
        assert_eq!(l.check(l.expires_at), Err(Refusal::Expired));
        l.uses = 2;
        assert_eq!(l.check(opens), Err(Refusal::Exhausted));
        assert_eq!(l.remaining_uses(), Some(0));
        assert_eq!(l.check(l.expires_at), Err(Refusal::Expired));
        l.revoked = true;
        assert_eq!(l.check(l.expires_at), Err(Refusal::Revoked));
        assert_eq!(l.check(NOW), Err(Refusal::Revoked));
    }

    #[test]
    fn refusal_reasons() {
        assert_eq!(Refusal::Expired.reason(), "expired");
        assert_eq!(Refusal::Revoked.reason(), "revoked");
        assert_eq!(
            Refusal::NotYetValid { opens_at: NOW }.reason(),
            "not_yet_valid"
        );
        assert_eq!(Refusal::Exhausted.reason(), "exhausted");
        assert_eq!(Refusal::ViewersFull.reason(), "viewers_full");
    }

    #[test]
    fn link_ids_are_random_and_url_safe() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = new_link_id();
            assert_eq!(id.len(), 22);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let raw = URL_SAFE_NO_PAD.decode(&id).expect("b64");
            assert_eq!(raw.len(), 16);
            assert!(seen.insert(id));
        }
    }
}
