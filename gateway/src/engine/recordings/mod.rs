//! Session recordings: a tap on the relay hands what passed (after the filters) to a
//! writer task through a bounded queue; the writer appends framed records (see
//! [`format`]) to a file in the recordings folder and keeps the store's index.
//!
//! The relay never waits for the disk: a full queue counts as a writer that cannot keep
//! up. A full queue, a size cap, the folder's total cap, a full disk or any write error
//! ends the recording as the configured [`LimitAction`] says (end the session, or stop
//! recording and let it go on), logged and audited. Every record goes to the kernel as
//! soon as the writer has it, so a killed gateway leaves a file readable up to its last
//! complete record (and the index says `interrupted` after the next start).

pub mod format;
mod ops;

pub use ops::LIST_LIMIT;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use self::format::Kind;
use crate::config::{LimitAction, RecordingSettings};
use crate::engine::sessions::{EndReason, Session};
use crate::store::{
    AuditEvent, AuditKind, RecordingFilter, RecordingInfo, RecordingStatus, Store, StoreError,
};

/// What the gateway sends a VNC visitor during its own handshake (it answers as an RFB
/// 3.8 server offering security type None, and noVNC answers 3.8): the version, the one
/// security type, SecurityResult OK. A VNC recording starts with these bytes as console →
/// visitor bytes, so that a player reads the very stream the visitor read.
pub const VNC_PREAMBLE: &[u8] = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00";

/// File name suffix of recordings.
pub const FILE_SUFFIX: &str = ".vmrec";
/// Bytes the writer gathers from its queue before one write.
const WRITE_BATCH: usize = 256 * 1024;
/// How long the end of a session waits for room in a full recording queue.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors starting or reading recordings.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recordings folder {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the recordings folder is full (recording.max_total_bytes)")]
    TotalCap,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which way recorded bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Console → visitor.
    ToClient,
    /// Visitor → console (after the relay's filters).
    ToConsole,
}

/// Finds key points in a recording's console → visitor stream (the relay implements it
/// for VNC: see `relay::rfb::keys`). It runs in the recording's writer task, never on
/// the relay's path.
pub trait Indexer: Send + 'static {
    /// The next bytes of the console → visitor stream as relayed (after the preamble),
    /// recorded at `t_us`; `offset` is the stream offset of `data[0]` (the preamble
    /// counted). Returns a key point completed by these bytes, with its time.
    fn to_client(&mut self, offset: u64, t_us: u64, data: &[u8])
        -> Option<(u64, format::KeyPoint)>;
}

/// What a session's recording is of.
#[derive(Debug, Clone)]
pub struct RecordingSpec {
    pub link_id: String,
    pub vm: String,
    /// `vnc`, `spice`, `raw`, …
    pub console: String,
    /// The SPICE channel, for SPICE.
    pub channel: Option<String>,
    /// Bytes the gateway itself sent the visitor before the relay (the RFB handshake
    /// it answers as a server), recorded first as console → visitor bytes.
    pub preamble: Vec<u8>,
}

/// The recordings of one gateway: its folder, its caps, the bytes in it.
#[derive(Debug)]
pub struct Recorder {
    settings: RecordingSettings,
    /// The recordings folder.
    dir: PathBuf,
    store: Arc<dyn Store>,
    /// Bytes of this gateway's recording files (scanned at start, kept up to date).
    total: AtomicU64,
}

/// Messages of a tap to its writer.
#[derive(Debug)]
enum Msg {
    Data(Kind, u64, Bytes),
    End(&'static str),
}

/// What a tap and its writer share.
#[derive(Debug, Default)]
struct Shared {
    /// Why the recording stopped early (set once, by the tap or the writer).
    stop: OnceLock<&'static str>,
    wake: Notify,
}

/// A session's end of its recording: [`Tap::push`] never waits.
#[derive(Debug)]
pub struct Tap {
    id: String,
    tx: mpsc::Sender<Msg>,
    start: std::time::Instant,
    shared: Arc<Shared>,
    action: LimitAction,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Tap {
    /// The recording's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Queues bytes that passed the relay. Returns `false` when the session must end
    /// (the recording cannot go on and `on_limit` is `end_session`).
    pub fn push(&self, dir: Dir, data: Bytes) -> bool {
        if self.shared.stop.get().is_some() {
            return self.action == LimitAction::StopRecording;
        }
        if data.is_empty() {
            return true;
        }
        let kind = match dir {
            Dir::ToClient => Kind::ToClient,
            Dir::ToConsole => Kind::ToConsole,
        };
        let t = micros(self.start.elapsed());
        match self.tx.try_send(Msg::Data(kind, t, data)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stop("writer_behind");
                self.action == LimitAction::StopRecording
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stop("writer_gone");
                self.action == LimitAction::StopRecording
            }
        }
    }

    fn stop(&self, reason: &'static str) {
        let _ = self.shared.stop.set(reason);
        self.shared.wake.notify_one();
    }

    /// The session ended (`reason`): the writer completes the file and the index.
    pub async fn finish(&self, reason: EndReason) {
        let _ = tokio::time::timeout(FINISH_TIMEOUT, self.tx.send(Msg::End(reason.as_str()))).await;
    }
}

/// The recording file of `id` in `dir`.
pub fn file_name(id: &str) -> String {
    format!("{id}{FILE_SUFFIX}")
}

/// Total size of the recording files in `dir` (0 if it cannot be read).
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(FILE_SUFFIX))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Recorder {
    /// The recorder of a gateway whose data directory is `data_dir` (the folder is
    /// created when the first recording starts).
    pub fn new(settings: RecordingSettings, data_dir: &Path, store: Arc<dyn Store>) -> Recorder {
        let dir = settings.folder(data_dir);
        let total = folder_bytes(&dir);
        Recorder {
            settings,
            dir,
            store,
            total: AtomicU64::new(total),
        }
    }

    pub fn settings(&self) -> &RecordingSettings {
        &self.settings
    }

    /// Bytes of this gateway's recordings now.
    pub fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The path of a recording of this gateway.
    pub fn path_of(&self, rec: &RecordingInfo) -> PathBuf {
        self.dir.join(&rec.file)
    }

    /// The recordings folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts recording `session`: creates the file (magic, metadata, preamble), adds it
    /// to the index and spawns its writer. The tap is set on the session.
    pub async fn start(
        self: &Arc<Self>,
        session: &Arc<Session>,
        spec: RecordingSpec,
        indexer: Option<Box<dyn Indexer>>,
    ) -> Result<String, RecordingError> {
        let s = &self.settings;
        if self.total_bytes() >= s.max_total_bytes {
            return Err(RecordingError::TotalCap);
        }
        let io = |source| RecordingError::Io {
            path: self.dir.clone(),
            source,
        };
        create_dir(&self.dir).map_err(io)?;
        let id = crate::model::links::new_link_id();
        let file = file_name(&id);
        let path = self.dir.join(&file);
        let started_at = OffsetDateTime::now_utc();
        let meta = serde_json::json!({
            "format": format::VERSION,
            "recording_id": id,
            "session_id": session.id,
            "link_id": spec.link_id,
            "vm": spec.vm,
            "console": spec.console,
            "channel": spec.channel,
            "gateway": s.gateway_name,
            "started_at": started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        let mut head = format::MAGIC.to_vec();
        format::encode(&mut head, Kind::Meta, 0, meta.to_string().as_bytes());
        if !spec.preamble.is_empty() {
            format::encode_chunked(&mut head, Kind::ToClient, 0, &spec.preamble);
        }
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(io)?;
        let preamble_len = u64::try_from(spec.preamble.len()).unwrap_or(u64::MAX);
        f.write_all(&head).await.map_err(io)?;
        f.flush().await.map_err(io)?;
        let written = u64::try_from(head.len()).unwrap_or(u64::MAX);
        self.total.fetch_add(written, Ordering::Relaxed);
        let info = RecordingInfo {
            id: id.clone(),
            session_id: session.id.clone(),
            link_id: spec.link_id,
            vm: spec.vm,
            console: spec.console,
            channel: spec.channel,
            gateway: s.gateway_name.clone(),
            file,
            started_at,
            ended_at: None,
            bytes: written,
            status: RecordingStatus::Recording,
            detail: None,
        };
        if let Err(e) = self.store.put_recording(&info).await {
            drop(f);
            self.remove_file(&path).await;
            return Err(e.into());
        }
        let (tx, rx) = mpsc::channel(s.queue_chunks);
        let shared = Arc::new(Shared::default());
        let tap = Tap {
            id: id.clone(),
            tx,
            start: std::time::Instant::now(),
            shared: shared.clone(),
            action: s.on_limit,
        };
        let writer = Writer {
            recorder: self.clone(),
            file: f,
            info,
            written,
            buf: Vec::with_capacity(64 * 1024),
            shared,
            session: Arc::downgrade(session),
            stopped: None,
            cut: false,
            indexer,
            to_client_bytes: preamble_len,
        };
        tokio::spawn(writer.run(rx));
        let _ = session.recording.set(tap);
        Ok(id)
    }

    async fn remove_file(&self, path: &Path) {
        let len = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if tokio::fs::remove_file(path).await.is_ok() {
            let _ = self
                .total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(len))
                });
        }
    }

    /// Deletes a recording of this gateway: its file, then its index entry.
    pub async fn delete(&self, rec: &RecordingInfo) -> Result<bool, RecordingError> {
        let path = self.path_of(rec);
        self.remove_file(&path).await;
        Ok(self.store.delete_recording(&rec.id).await?)
    }

    /// After a start: this gateway's recordings still marked `recording` were cut by a
    /// crash or a kill; they become `interrupted`, with their file's size.
    pub async fn mark_interrupted(&self) -> Result<u64, RecordingError> {
        let filter = RecordingFilter {
            gateway: Some(self.settings.gateway_name.clone()),
            status: Some(RecordingStatus::Recording),
            ..RecordingFilter::default()
        };
        let mut n = 0;
        for rec in self
            .store
            .list_recordings(&filter, crate::store::MAX_RECORDING_LIST)
            .await?
        {
            let bytes = tokio::fs::metadata(self.path_of(&rec))
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            self.store
                .finish_recording(
                    &rec.id,
                    None,
                    bytes,
                    RecordingStatus::Interrupted,
                    Some("the gateway stopped while recording"),
                )
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes this gateway's recordings older than `recording.retention_days`.
    pub async fn prune(&self, now: OffsetDateTime) -> Result<u64, RecordingError> {
        let retention =
            time::Duration::try_from(self.settings.retention).unwrap_or(time::Duration::MAX);
        let filter = RecordingFilter {
            gateway: Some(self.settings.gateway_name.clone()),
            started_before: now.checked_sub(retention),
            ..RecordingFilter::default()
        };
        if filter.started_before.is_none() {
            return Ok(0);
        }
        let mut n = 0;
        for rec in self.store.list_recordings(&filter, 1000).await? {
            if rec.status == RecordingStatus::Recording {
                continue;
            }
            if self.delete(&rec).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn audit_stop(&self, info: &RecordingInfo, reason: &str) {
        let detail = format!(
            "recording={} reason={reason} action={}",
            info.id,
            self.settings.on_limit.as_str()
        );
        let ev = AuditEvent::new(AuditKind::RecordingStopped, OffsetDateTime::now_utc())
            .link(info.link_id.clone())
            .session(info.session_id.clone())
            .detail(detail);
        if let Err(e) = self.store.audit(ev).await {
            tracing::warn!(error = %e, "could not write an audit record");
        }
    }
}

/// A recording's writer task.
struct Writer {
    recorder: Arc<Recorder>,
    file: tokio::fs::File,
    info: RecordingInfo,
    /// Bytes in the file.
    written: u64,
    buf: Vec<u8>,
    shared: Arc<Shared>,
    session: Weak<Session>,
    /// Why the recording stopped, once the writer has acted on it.
    stopped: Option<&'static str>,
    /// The writer decided to stop (a cap, a write error): nothing more is written.
    cut: bool,
    /// Finds key points (VNC), if the recording has them.
    indexer: Option<Box<dyn Indexer>>,
    /// Bytes of the console → visitor stream so far (the preamble included).
    to_client_bytes: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut end: Option<&'static str> = None;
        loop {
            let got = tokio::select! {
                m = rx.recv() => Some(m),
                _ = self.shared.wake.notified() => None,
            };
            let closed = matches!(got, Some(None));
            if let Some(Some(m)) = got {
                self.take(m, &mut end);
            }
            while self.buf.len() < WRITE_BATCH && end.is_none() {
                match rx.try_recv() {
                    Ok(m) => self.take(m, &mut end),
                    Err(_) => break,
                }
            }
            self.write_buf().await;
            if let (None, Some(reason)) = (self.stopped, self.shared.stop.get().copied()) {
                self.on_stop(reason).await;
            }
            if end.is_some() || closed {
                break;
            }
        }
        self.complete(end).await;
    }

    /// Adds a message to the write buffer (nothing once stopped), checking the caps.
    fn take(&mut self, m: Msg, end: &mut Option<&'static str>) {
        match m {
            Msg::End(reason) => *end = Some(reason),
            // Chunks queued before a stop the tap decided (a full queue) still passed
            // before it and are kept; after a stop the writer decided, nothing is.
            Msg::Data(kind, t, data) if !self.cut => {
                self.append(kind, t, &data);
                if kind == Kind::ToClient {
                    self.index(t, &data);
                }
            }
            Msg::Data(..) => {}
        }
    }

    fn append(&mut self, kind: Kind, t: u64, data: &[u8]) {
        let s = &self.recorder.settings;
        let parts = data.len().div_ceil(format::MAX_PAYLOAD).max(1);
        let need = u64::try_from(data.len() + parts * (format::FRAME_HEADER + format::BODY_HEADER))
            .unwrap_or(u64::MAX);
        let pending = u64::try_from(self.buf.len()).unwrap_or(u64::MAX);
        if self.written + pending + need > s.max_bytes_per_recording {
            self.stop("size_cap");
            return;
        }
        if self.recorder.total_bytes() + pending + need > s.max_total_bytes {
            self.stop("total_cap");
            return;
        }
        format::encode_chunked(&mut self.buf, kind, t, data);
    }

    /// Passes console → visitor bytes to the indexer; a key point it finds becomes a
    /// record after them.
    fn index(&mut self, t: u64, data: &[u8]) {
        let offset = self.to_client_bytes;
        self.to_client_bytes += u64::try_from(data.len()).unwrap_or(u64::MAX);
        let Some(ix) = self.indexer.as_mut() else {
            return;
        };
        if let Some((at, key)) = ix.to_client(offset, t, data) {
            if !self.cut {
                self.append(Kind::Key, at, &key.encode());
            }
        }
    }

    fn stop(&mut self, reason: &'static str) {
        self.cut = true;
        let _ = self.shared.stop.set(reason);
    }

    /// Writes the buffer out (to the kernel: it survives the process).
    async fn write_buf(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let r = async {
            self.file.write_all(&self.buf).await?;
            self.file.flush().await
        }
        .await;
        let n = u64::try_from(self.buf.len()).unwrap_or(u64::MAX);
        self.buf.clear();
        match r {
            Ok(()) => {
                self.written += n;
                self.recorder.total.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(recording = %self.info.id, error = %e, "writing a recording failed");
                // What reached the file is unknown: its size says.
                if let Ok(m) = self.file.metadata().await {
                    let grew = m.len().saturating_sub(self.written);
                    self.written = m.len();
                    self.recorder.total.fetch_add(grew, Ordering::Relaxed);
                }
                self.stop("write_error");
            }
        }
    }

    /// The recording stopped early: an event record, the log, the audit, the index, and
    /// the session's end if so configured.
    async fn on_stop(&mut self, reason: &'static str) {
        self.stopped = Some(reason);
        let action = self.recorder.settings.on_limit;
        if reason != "write_error" {
            let ev = serde_json::json!({"event": "stopped", "reason": reason, "action": action.as_str()});
            self.event(ev).await;
        }
        tracing::warn!(
            recording = %self.info.id,
            session = %self.info.session_id,
            reason,
            action = action.as_str(),
            "recording stopped"
        );
        self.recorder.audit_stop(&self.info, reason).await;
        let _ = self
            .recorder
            .store
            .finish_recording(
                &self.info.id,
                None,
                self.written,
                RecordingStatus::Stopped,
                Some(reason),
            )
            .await;
        if action == LimitAction::EndSession {
            if let Some(s) = self.session.upgrade() {
                s.end(EndReason::RecordingFailed);
            }
        }
    }

    /// Appends an event record (bypassing the caps by its few bytes: it says why they
    /// were hit).
    async fn event(&mut self, ev: serde_json::Value) {
        let t = micros(self.info_elapsed());
        let mut rec = Vec::new();
        format::encode(&mut rec, Kind::Event, t, ev.to_string().as_bytes());
        if self.file.write_all(&rec).await.is_ok() && self.file.flush().await.is_ok() {
            let n = u64::try_from(rec.len()).unwrap_or(0);
            self.written += n;
            self.recorder.total.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn info_elapsed(&self) -> Duration {
        (OffsetDateTime::now_utc() - self.info.started_at)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// The session ended: the end event, the data on disk, the index.
    async fn complete(mut self, end: Option<&'static str>) {
        let reason = end.unwrap_or("unknown");
        if self.stopped.is_none() {
            self.event(serde_json::json!({"event": "end", "reason": reason}))
                .await;
        }
        let _ = self.file.sync_data().await;
        let (status, detail) = match self.stopped {
            Some(r) => (RecordingStatus::Stopped, r),
            None => (RecordingStatus::Complete, reason),
        };
        if let Err(e) = self
            .recorder
            .store
            .finish_recording(
                &self.info.id,
                Some(OffsetDateTime::now_utc()),
                self.written,
                status,
                Some(detail),
            )
            .await
        {
            tracing::warn!(recording = %self.info.id, error = %e, "could not update the recordings index");
        }
    }
}
