//! Fixtures shared by the store test files (the contract suite and the
//! PostgreSQL-specific tests).
#![allow(dead_code, clippy::unwrap_used)]

use gateway::model::links::{new_link_id, Link, LinkPolicy, LinkRequest};
use time::macros::datetime;
use time::OffsetDateTime;

/// The tests' clock.
pub const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

/// A valid link made at [`NOW`] with a stored password hash, a unicode note and the
/// given use limit and start time.
pub fn link_with(max_uses: Option<u32>, not_before: Option<OffsetDateTime>) -> Link {
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
        clipboard: Some(gateway::model::clipboard::ClipboardPolicy::Both),
        record: None,
    }
    .validate(NOW, &LinkPolicy::default())
    .unwrap()
    .into_link(
        new_link_id(),
        NOW,
        Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()),
    )
    .unwrap()
}
