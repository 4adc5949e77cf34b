//! Live console sessions, with cancellation: revoke, expiry, an admin's kill and shutdown
//! end them with a reason the visitor's page can show.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Why a session ended (sent as the WebSocket close reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Revoked,
    Expired,
    Killed,
    Shutdown,
    IdleTimeout,
    ProtocolError,
    ConsoleClosed,
    ClientClosed,
    /// The session's recording could not go on and `recording.on_limit` is
    /// `end_session`.
    RecordingFailed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Revoked => "revoked",
            EndReason::Expired => "expired",
            EndReason::Killed => "killed",
            EndReason::Shutdown => "shutdown",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::ProtocolError => "protocol_error",
            EndReason::ConsoleClosed => "console_closed",
            EndReason::ClientClosed => "client_closed",
            EndReason::RecordingFailed => "recording_failed",
        }
    }
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("all {0} viewer slots of this link are taken")]
    ViewersFull(u32),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// One live session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub link_id: String,
    pub vm: String,
    pub client: IpAddr,
    pub started_at: OffsetDateTime,
    pub cancel: CancellationToken,
    reason: OnceLock<EndReason>,
    pub bytes_to_client: AtomicU64,
    pub bytes_to_console: AtomicU64,
    /// The session's recording, when it is recorded.
    pub recording: OnceLock<crate::engine::recordings::Tap>,
}

impl Session {
    /// Records console → visitor bytes that passed (when recorded); a recording that
    /// cannot go on may end the session (`recording.on_limit`). Never waits.
    #[inline]
    pub fn record_to_client(&self, data: &bytes::Bytes) {
        if let Some(tap) = self.recording.get() {
            if !tap.push(crate::engine::recordings::Dir::ToClient, data.clone()) {
                self.end(EndReason::RecordingFailed);
            }
        }
    }

    /// Records visitor → console bytes that passed the filters (when recorded).
    #[inline]
    pub fn record_to_console(&self, data: &[u8]) {
        if let Some(tap) = self.recording.get() {
            let chunk = bytes::Bytes::copy_from_slice(data);
            if !tap.push(crate::engine::recordings::Dir::ToConsole, chunk) {
                self.end(EndReason::RecordingFailed);
            }
        }
    }

    /// Ends the session; the first reason given wins.
    pub fn end(&self, reason: EndReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    pub fn reason(&self) -> Option<EndReason> {
        self.reason.get().copied()
    }
}

/// What the admin API shows of a session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub link_id: String,
    pub vm: String,
    pub client: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub bytes_to_client: u64,
    pub bytes_to_console: u64,
}

/// The registry of live sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: DashMap<String, Arc<Session>>,
    /// Live sessions per link (id, counts as a viewer); the entry's lock makes viewer
    /// limits exact. SPICE side channels are sessions that are not viewers.
    by_link: DashMap<String, Vec<(String, bool)>>,
    root: CancellationToken,
}

/// Removes the session from the registry when the relay ends.
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<Sessions>,
    pub session: Arc<Session>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry
            .remove(&self.session.id, &self.session.link_id);
    }
}

impl Sessions {
    pub fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    /// Registers a session for `link_id`. A viewer session is refused when
    /// `max_viewers` viewers already run; other sessions (SPICE side channels) are not
    /// counted.
    pub fn open(
        self: &Arc<Self>,
        link_id: &str,
        vm: &str,
        client: IpAddr,
        max_viewers: Option<u32>,
        viewer: bool,
    ) -> Result<SessionGuard, SessionError> {
        if self.root.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let mut ids = self.by_link.entry(link_id.to_owned()).or_default();
        if let Some(max) = max_viewers.filter(|_| viewer) {
            let viewers = ids.iter().filter(|(_, v)| *v).count();
            if viewers >= usize::try_from(max).unwrap_or(usize::MAX) {
                return Err(SessionError::ViewersFull(max));
            }
        }
        let session = Arc::new(Session {
            id: crate::model::links::new_link_id(),
            link_id: link_id.to_owned(),
            vm: vm.to_owned(),
            client,
            started_at: OffsetDateTime::now_utc(),
            cancel: self.root.child_token(),
            reason: OnceLock::new(),
            bytes_to_client: AtomicU64::new(0),
            bytes_to_console: AtomicU64::new(0),
            recording: OnceLock::new(),
        });
        ids.push((session.id.clone(), viewer));
        drop(ids);
        self.by_id.insert(session.id.clone(), session.clone());
        Ok(SessionGuard {
            registry: self.clone(),
            session,
        })
    }

    fn remove(&self, id: &str, link_id: &str) {
        self.by_id.remove(id);
        if let dashmap::Entry::Occupied(mut e) = self.by_link.entry(link_id.to_owned()) {
            e.get_mut().retain(|(s, _)| s != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Ends every session of a link; returns how many.
    pub fn end_link(&self, link_id: &str, reason: EndReason) -> usize {
        let ids = self
            .by_link
            .get(link_id)
            .map(|v| v.clone())
            .unwrap_or_default();
        for (id, _) in &ids {
            if let Some(s) = self.by_id.get(id) {
                s.end(reason);
            }
        }
        ids.len()
    }

    /// Ends one session; false if there is no such live session.
    pub fn end(&self, id: &str, reason: EndReason) -> bool {
        match self.by_id.get(id) {
            Some(s) => {
                s.end(reason);
                true
            }
            None => false,
        }
    }

    /// Ends everything (shutdown); new sessions are refused from now on.
    pub fn end_all(&self, reason: EndReason) {
        for s in self.by_id.iter() {
            let _ = s.reason.set(reason);
        }
        self.root.cancel();
    }

    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Gives back the registry's tables grown for a crowd that has left (a map keeps
    /// its capacity after its entries are removed).
    pub fn shrink(&self) {
        self.by_id.shrink_to_fit();
        self.by_link.shrink_to_fit();
    }

    pub fn count_for(&self, link_id: &str) -> usize {
        self.by_link.get(link_id).map(|v| v.len()).unwrap_or(0)
    }

    /// Viewer sessions of a link.
    pub fn count_viewers(&self, link_id: &str) -> usize {
        self.by_link
            .get(link_id)
            .map(|v| v.iter().filter(|(_, viewer)| *viewer).count())
            .unwrap_or(0)
    }

    /// Links with live sessions.
    pub fn live_links(&self) -> Vec<String> {
        self.by_link.iter().map(|e| e.key().clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.get(id).map(|s| s.clone())
    }

    pub fn list(&self, link_id: Option<&str>) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .by_id
            .iter()
            .filter(|s| link_id.is_none_or(|l| s.link_id == l))
            .map(|s| SessionInfo {
                id: s.id.clone(),
                link_id: s.link_id.clone(),
                vm: s.vm.clone(),
                client: s.client.to_string(),
                started_at: s.started_at,
                bytes_to_client: s.bytes_to_client.load(Ordering::Relaxed),
                bytes_to_console: s.bytes_to_console.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|s| s.started_at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn viewer_limit_is_exact_under_contention() {
        let reg = Sessions::new();
        let guards = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        if let Ok(g) = reg.open("L", "vm", ip(), Some(5), true) {
                            guards.lock().expect("lock").push(g);
                        }
                    }
                });
            }
        });
        assert_eq!(guards.lock().expect("lock").len(), 5);
        assert_eq!(reg.count_for("L"), 5);
        guards.lock().expect("lock").clear();
        assert_eq!(reg.count(), 0);
        assert_eq!(reg.count_for("L"), 0);
    }

    #[test]
    fn side_channels_do_not_take_viewer_slots() {
        let reg = Sessions::new();
        let main = reg.open("S", "vm", ip(), Some(1), true).expect("main");
        let display = reg.open("S", "vm", ip(), Some(1), false).expect("display");
        assert!(reg.open("S", "vm", ip(), Some(1), true).is_err());
        assert_eq!(reg.count_viewers("S"), 1);
        assert_eq!(reg.count_for("S"), 2);
        drop((main, display));
        assert!(reg.live_links().is_empty());
    }

    #[test]
    fn shrinking_gives_back_the_tables_a_crowd_grew() {
        let reg = Sessions::new();
        let crowd: Vec<_> = (0..4000)
            .map(|i| {
                reg.open(&format!("L{}", i % 500), "vm", ip(), None, true)
                    .expect("open")
            })
            .collect();
        let stay = reg.open("kept", "vm", ip(), None, true).expect("kept");
        drop(crowd);
        assert_eq!(reg.count(), 1);
        let grown = reg.by_id.capacity() + reg.by_link.capacity();
        assert!(grown >= 4000 + 500, "capacity {grown}");
        reg.shrink();
        let now = reg.by_id.capacity() + reg.by_link.capacity();
        assert!(now < grown / 10, "capacity {grown} -> {now}");
        assert_eq!(reg.count_for("kept"), 1);
        drop(stay);
        assert_eq!(reg.count(), 0);
    }

    #[test]
    fn ending_a_link_cancels_its_sessions_with_the_reason() {
        let reg = Sessions::new();
        let a = reg.open("A", "vm", ip(), None, true).expect("a");
        let b = reg.open("B", "vm", ip(), None, true).expect("b");
        assert_eq!(reg.end_link("A", EndReason::Revoked), 1);
        assert!(a.session.cancel.is_cancelled());
        assert_eq!(a.session.reason(), Some(EndReason::Revoked));
        assert!(!b.session.cancel.is_cancelled());
        assert!(reg.end(&b.session.id, EndReason::Killed));
        assert_eq!(b.session.reason(), Some(EndReason::Killed));
        reg.end_all(EndReason::Shutdown);
        assert!(matches!(
            reg.open("C", "vm", ip(), None, true),
            Err(SessionError::ShuttingDown)
        ));
    }
}
