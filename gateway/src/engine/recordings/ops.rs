//! The engine's recording operations, for the admin API, the CLI and the relay.

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{RecordingError, RecordingSpec};
use crate::config::LimitAction;
use crate::engine::sessions::{EndReason, Session};
use crate::engine::{App, EngineError};
use crate::model::links::Link;
use crate::store::{AuditEntry, AuditKind, AuditQuery, RecordingFilter, RecordingInfo};

/// Most recordings the admin list returns.
pub const LIST_LIMIT: usize = 1000;

impl App {
    /// Whether sessions of `link` are recorded (the link's `record`, else the default).
    pub fn link_recorded(&self, link: &Link) -> bool {
        link.recorded(self.cfg.recording.default)
    }

    /// Starts recording a session of `link` if it is recorded. A recording that cannot
    /// start is logged and audited; with `on_limit = "end_session"` the session must not
    /// go on (`Err`).
    pub async fn start_recording(
        &self,
        session: &Arc<Session>,
        link: &Link,
        channel: Option<String>,
        preamble: Vec<u8>,
        indexer: Option<Box<dyn super::Indexer>>,
    ) -> Result<Option<String>, EndReason> {
        if !self.link_recorded(link) {
            return Ok(None);
        }
        let spec = RecordingSpec {
            link_id: link.id.clone(),
            vm: link.vm.clone(),
            console: link.console.as_str().to_owned(),
            channel,
            preamble,
        };
        match self.recorder.start(session, spec, indexer).await {
            Ok(id) => Ok(Some(id)),
            Err(e) => {
                let action = self.cfg.recording.on_limit;
                let reason = match e {
                    RecordingError::TotalCap => "total_cap",
                    RecordingError::Io { .. } => "write_error",
                    RecordingError::Store(_) => "store_error",
                };
                tracing::warn!(session = %session.id, error = %e, action = action.as_str(), "a recording could not start");
                self.audit(
                    AuditKind::RecordingStopped,
                    Some(&link.id),
                    Some(&session.id),
                    None,
                    Some(format!(
                        "recording=none reason={reason} action={}",
                        action.as_str()
                    )),
                )
                .await;
                match action {
                    LimitAction::EndSession => Err(EndReason::RecordingFailed),
                    LimitAction::StopRecording => Ok(None),
                }
            }
        }
    }

    /// Recordings, newest first, of one link and/or one session, or all.
    pub async fn list_recordings(
        &self,
        link: Option<&str>,
        session: Option<&str>,
    ) -> Result<Vec<RecordingInfo>, EngineError> {
        let filter = RecordingFilter {
            link_id: link.map(str::to_owned),
            session_id: session.map(str::to_owned),
            ..RecordingFilter::default()
        };
        Ok(self.store.list_recordings(&filter, LIST_LIMIT).await?)
    }

    pub async fn get_recording(&self, id: &str) -> Result<RecordingInfo, EngineError> {
        self.store
            .get_recording(id)
            .await?
            .ok_or(EngineError::NotFound)
    }

    /// A recording of this gateway, or [`EngineError::RecordingElsewhere`] naming the
    /// gateway that holds its file.
    async fn local_recording(&self, id: &str) -> Result<RecordingInfo, EngineError> {
        let rec = self.get_recording(id).await?;
        if rec.gateway != self.cfg.recording.gateway_name {
            return Err(EngineError::RecordingElsewhere(rec.gateway));
        }
        Ok(rec)
    }

    /// The file of a recording of this gateway, open for reading, and its size now (a
    /// live recording grows after).
    pub async fn open_recording_file(
        &self,
        id: &str,
    ) -> Result<(RecordingInfo, tokio::fs::File, u64), EngineError> {
        let rec = self.local_recording(id).await?;
        let path = self.recorder.path_of(&rec);
        let io = |e: std::io::Error| -> EngineError {
            if e.kind() == std::io::ErrorKind::NotFound {
                return EngineError::NotFound;
            }
            RecordingError::Io {
                path: path.clone(),
                source: e,
            }
            .into()
        };
        let f = tokio::fs::File::open(&path).await.map_err(io)?;
        let len = f.metadata().await.map_err(io)?.len();
        Ok((rec, f, len))
    }

    /// Deletes a recording of this gateway (file and index entry); audited.
    pub async fn delete_recording(
        &self,
        id: &str,
        client: Option<IpAddr>,
    ) -> Result<(), EngineError> {
        let rec = self.local_recording(id).await?;
        if rec.status == crate::store::RecordingStatus::Recording {
            return Err(EngineError::Conflict(
                "the recording is still being written; end its session first".into(),
            ));
        }
        if !self.recorder.delete(&rec).await? {
            return Err(EngineError::NotFound);
        }
        self.audit(
            AuditKind::RecordingDeleted,
            Some(&rec.link_id),
            Some(&rec.session_id),
            client,
            Some(format!("recording={}", rec.id)),
        )
        .await;
        Ok(())
    }

    /// Audit events by filter, newest first, with their ids and recordings.
    pub async fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
        Ok(self.store.query_audit(q).await?)
    }

    /// Housekeeping: recordings cut by a crash are marked, old ones deleted.
    pub async fn recordings_housekeeping(&self, at_start: bool) {
        if at_start {
            match self.recorder.mark_interrupted().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    count = n,
                    "recordings cut by a stop of the gateway marked interrupted"
                ),
                Err(e) => tracing::warn!(error = %e, "checking for interrupted recordings failed"),
            }
        }
        match self.recorder.prune(OffsetDateTime::now_utc()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                "recordings past recording.retention_days deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning old recordings failed"),
        }
    }
}
