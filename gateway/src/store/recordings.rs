//! The recordings index and the audit query: types shared by both stores. The files
//! themselves live in the recordings folder of the gateway that made them (see
//! `engine::recordings`); the store only lists them, so that with PostgreSQL every
//! gateway lists the recordings of all.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rows::{from_ms, no_nul, to_ms};
use super::{AuditEvent, AuditKind, StoreError};

/// Most recordings one `list_recordings` call returns.
pub const MAX_RECORDING_LIST: usize = 10_000;

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Being written.
    Recording,
    /// The session ended; the file is complete.
    Complete,
    /// A cap, a full disk or a slow writer stopped it (`detail` says which); the file
    /// is complete up to there.
    Stopped,
    /// The gateway stopped without finishing it (crash, `kill -9`, power loss): the
    /// file reads up to its last complete record.
    Interrupted,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Complete => "complete",
            RecordingStatus::Stopped => "stopped",
            RecordingStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RecordingStatus> {
        [
            RecordingStatus::Recording,
            RecordingStatus::Complete,
            RecordingStatus::Stopped,
            RecordingStatus::Interrupted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One recording in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    pub id: String,
    pub session_id: String,
    pub link_id: String,
    pub vm: String,
    /// The link's console: `vnc`, `spice`, `raw`, …
    pub console: String,
    /// The SPICE channel (`main`, `display`, `inputs`, …) for SPICE recordings.
    pub channel: Option<String>,
    /// The gateway that wrote the file and serves its download.
    pub gateway: String,
    /// File name in that gateway's recordings folder.
    pub file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub bytes: u64,
    pub status: RecordingStatus,
    /// Why it stopped, or the session's end reason.
    pub detail: Option<String>,
}

/// Which recordings to list (all given filters must match).
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub link_id: Option<String>,
    pub session_id: Option<String>,
    pub gateway: Option<String>,
    pub status: Option<RecordingStatus>,
    /// Only those started before this time.
    pub started_before: Option<OffsetDateTime>,
}

/// Which audit events to list: every given filter must match; newest first, `limit` at
/// most, and only events older than `before_id` (the paging cursor: the `id` of the
/// last event of the previous page).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub link_id: Option<String>,
    /// Events of links to this VM (or target).
    pub vm: Option<String>,
    pub kind: Option<AuditKind>,
    pub client: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// An audit event with its id (the paging cursor) and, for a session's events, the id
/// of the session's recording if it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub recording_id: Option<String>,
}

pub(super) const RECORDING_COLS: &str = "id, session_id, link_id, vm, console, channel, gateway, \
     file, started_at_ms, ended_at_ms, bytes, status, detail";

/// A `recordings` row, in [`RECORDING_COLS`] order.
pub(super) struct RecordingRow {
    pub id: String,
    pub session_id: String,
    pub link_id: String,
    pub vm: String,
    pub console: String,
    pub channel: Option<String>,
    pub gateway: String,
    pub file: String,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub bytes: i64,
    pub status: String,
    pub detail: Option<String>,
}

impl RecordingRow {
    pub(super) fn new(r: &RecordingInfo) -> Result<RecordingRow, StoreError> {
        for (what, v) in [
            ("id", Some(r.id.as_str())),
            ("session_id", Some(r.session_id.as_str())),
            ("link_id", Some(r.link_id.as_str())),
            ("gateway", Some(r.gateway.as_str())),
            ("file", Some(r.file.as_str())),
            ("channel", r.channel.as_deref()),
            ("detail", r.detail.as_deref()),
        ] {
            no_nul(what, v)?;
        }
        if r.file.contains('/') || r.file.starts_with('.') || r.file.is_empty() {
            return Err(StoreError::Invalid(
                "recording file must be a plain name".into(),
            ));
        }
        Ok(RecordingRow {
            id: r.id.clone(),
            session_id: r.session_id.clone(),
            link_id: r.link_id.clone(),
            vm: r.vm.clone(),
            console: r.console.clone(),
            channel: r.channel.clone(),
            gateway: r.gateway.clone(),
            file: r.file.clone(),
            started_at_ms: to_ms(r.started_at)?,
            ended_at_ms: r.ended_at.map(to_ms).transpose()?,
            bytes: i64::try_from(r.bytes).unwrap_or(i64::MAX),
            status: r.status.as_str().to_owned(),
            detail: r.detail.clone(),
        })
    }

    pub(super) fn into_info(self) -> Result<RecordingInfo, StoreError> {
        Ok(RecordingInfo {
            status: RecordingStatus::parse(&self.status).ok_or_else(|| {
                StoreError::Corrupt(format!("recording status {:?}", self.status))
            })?,
            id: self.id,
            session_id: self.session_id,
            link_id: self.link_id,
            vm: self.vm,
            console: self.console,
            channel: self.channel,
            gateway: self.gateway,
            file: self.file,
            started_at: from_ms(self.started_at_ms)?,
            ended_at: self.ended_at_ms.map(from_ms).transpose()?,
            bytes: u64::try_from(self.bytes.max(0)).unwrap_or(0),
            detail: self.detail,
        })
    }
}

/// The filter's values as SQL parameters (NULL = no filter), in the order both stores'
/// `list_recordings` SQL uses: link, session, gateway, status, started before (ms).
pub(super) type FilterParams = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// See [`FilterParams`].
pub(super) fn filter_params(f: &RecordingFilter) -> Result<FilterParams, StoreError> {
    Ok((
        f.link_id.clone(),
        f.session_id.clone(),
        f.gateway.clone(),
        f.status.map(|s| s.as_str().to_owned()),
        f.started_before.map(to_ms).transpose()?,
    ))
}

/// The audit query's SQL parameters: link, vm, kind, client, since (ms), until (ms),
/// before id, limit.
pub(super) type AuditParams = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

/// The audit query's values as SQL parameters (NULL = no filter), see [`AuditParams`].
pub(super) fn audit_params(q: &AuditQuery) -> Result<AuditParams, StoreError> {
    Ok((
        q.link_id.clone(),
        q.vm.clone(),
        q.kind.map(|k| k.as_str().to_owned()),
        q.client.clone(),
        q.since.map(to_ms).transpose()?,
        q.until.map(to_ms).transpose()?,
        q.before_id,
        super::rows::audit_limit(q.limit),
    ))
}
