//! `[recording]`: session recordings — the gateway-wide default, where files go, their
//! caps and what happens when one is hit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// What the gateway does when a recording cannot go on (a size cap, the folder's total
/// cap, a full disk or any write error, or a writer that cannot keep up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimitAction {
    /// End the session (nothing unrecorded happens on a recorded link). The default.
    #[default]
    EndSession,
    /// Stop recording; the session goes on unrecorded.
    StopRecording,
}

impl LimitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAction::EndSession => "end_session",
            LimitAction::StopRecording => "stop_recording",
        }
    }
}

/// `[recording]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecording {
    /// Record the sessions of links that do not say (`record` unset on the link).
    /// Default false.
    pub default: Option<bool>,
    /// Folder of the recordings (default `<data_dir>/recordings`).
    pub dir: Option<PathBuf>,
    /// Largest recording file, bytes (default 256 MiB).
    pub max_bytes_per_recording: Option<u64>,
    /// Largest total of this gateway's recordings folder, bytes (default 8 GiB).
    pub max_total_bytes: Option<u64>,
    /// Recordings older than this many days are deleted (default 90).
    pub retention_days: Option<u64>,
    /// `end_session` (default) or `stop_recording`: what a hit cap, a full disk or a
    /// writer that cannot keep up does.
    pub on_limit: Option<LimitAction>,
    /// Chunks a session's relay may queue for its recording's writer before the writer
    /// counts as unable to keep up (default 256; at most this many times
    /// `limits.relay_buffer_bytes` of memory per recorded session).
    pub queue_chunks: Option<usize>,
    /// This gateway's name in the recordings list (which gateway holds a file when
    /// several share a PostgreSQL store). Default: the host name.
    pub gateway_name: Option<String>,
    /// Seconds between key points of VNC recordings (default 10; 0: none): the gateway
    /// asks the console for a full screen update this often while the visitor's client
    /// talks, and the recording marks where it starts so that the player can seek there
    /// without replaying from the start.
    pub key_point_interval_secs: Option<u64>,
}

/// Validated `[recording]`.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub default: bool,
    /// The folder as configured; `None`: `recordings` in the data directory (see
    /// [`RecordingSettings::folder`], since the data directory may be set after this).
    pub dir: Option<PathBuf>,
    pub max_bytes_per_recording: u64,
    pub max_total_bytes: u64,
    pub retention: Duration,
    pub on_limit: LimitAction,
    pub queue_chunks: usize,
    pub gateway_name: String,
    /// Time between key points of VNC recordings; `None`: no key points.
    pub key_point_interval: Option<Duration>,
}

impl RecordingSettings {
    /// The recordings folder: as configured, else `DATA/recordings`.
    pub fn folder(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("recordings"))
    }
}

impl Default for RecordingSettings {
    fn default() -> RecordingSettings {
        RecordingSettings {
            default: false,
            dir: None,
            max_bytes_per_recording: 256 << 20,
            max_total_bytes: 8 << 30,
            retention: Duration::from_secs(90 * 86_400),
            on_limit: LimitAction::EndSession,
            queue_chunks: 256,
            gateway_name: host_name(),
            key_point_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// The host name (`gateway` if it cannot be read).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

impl RawRecording {
    pub(super) fn validate(
        self,
        abs: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<RecordingSettings, ConfigError> {
        let d = RecordingSettings::default();
        let positive = |v: Option<u64>, def: u64, key: &'static str| match v {
            None => Ok(def),
            Some(0) => Err(invalid(key, "must be at least 1")),
            Some(n) => Ok(n),
        };
        let max_bytes_per_recording = positive(
            self.max_bytes_per_recording,
            d.max_bytes_per_recording,
            "recording.max_bytes_per_recording",
        )?;
        let max_total_bytes = positive(
            self.max_total_bytes,
            d.max_total_bytes,
            "recording.max_total_bytes",
        )?;
        let days = positive(self.retention_days, 90, "recording.retention_days")?;
        if days > 36_500 {
            return Err(invalid("recording.retention_days", "at most 36500"));
        }
        let queue_chunks = match self.queue_chunks {
            None => d.queue_chunks,
            Some(n) if (1..=1 << 20).contains(&n) => n,
            Some(_) => return Err(invalid("recording.queue_chunks", "1 to 1048576")),
        };
        let gateway_name = match self.gateway_name {
            None => d.gateway_name,
            Some(n)
                if !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
            {
                n
            }
            Some(_) => {
                return Err(invalid(
                    "recording.gateway_name",
                    "1 to 64 letters, digits, '.', '-', '_'",
                ))
            }
        };
        let key_point_interval = match self.key_point_interval_secs {
            None => d.key_point_interval,
            Some(0) => None,
            Some(n) if n <= 3600 => Some(Duration::from_secs(n)),
            Some(_) => {
                return Err(invalid(
                    "recording.key_point_interval_secs",
                    "0 (none) to 3600",
                ))
            }
        };
        Ok(RecordingSettings {
            default: self.default.unwrap_or(false),
            dir: self.dir.map(abs),
            max_bytes_per_recording,
            max_total_bytes,
            retention: Duration::from_secs(days * 86_400),
            on_limit: self.on_limit.unwrap_or_default(),
            queue_chunks,
            gateway_name,
            key_point_interval,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RecordingSettings, ConfigError> {
        let raw: RawRecording = toml::from_str(toml_text).unwrap();
        raw.validate(|p| Path::new("/etc/gw").join(p))
    }

    #[test]
    fn defaults_and_named_errors() {
        let d = parse("").unwrap();
        assert!(!d.default);
        assert_eq!(
            d.folder(Path::new("/var/gw")),
            Path::new("/var/gw/recordings")
        );
        assert_eq!(d.on_limit, LimitAction::EndSession);
        assert_eq!(d.retention, Duration::from_secs(90 * 86_400));
        let s = parse("dir = \"rec\"\non_limit = \"stop_recording\"\ndefault = true\nmax_total_bytes = 10\ngateway_name = \"gw-1\"").unwrap();
        assert_eq!(s.folder(Path::new("/x")), Path::new("/etc/gw/rec"));
        assert_eq!(
            (s.on_limit, s.default, s.max_total_bytes),
            (LimitAction::StopRecording, true, 10)
        );
        assert_eq!(s.gateway_name, "gw-1");
        assert_eq!(d.key_point_interval, Some(Duration::from_secs(10)));
        assert_eq!(
            parse("key_point_interval_secs = 0")
                .unwrap()
                .key_point_interval,
            None
        );
        assert_eq!(
            parse("key_point_interval_secs = 3")
                .unwrap()
                .key_point_interval,
            Some(Duration::from_secs(3))
        );
        for (bad, key) in [
            (
                "key_point_interval_secs = 3601",
                "recording.key_point_interval_secs",
            ),
            (
                "max_bytes_per_recording = 0",
                "recording.max_bytes_per_recording",
            ),
            ("max_total_bytes = 0", "recording.max_total_bytes"),
            ("retention_days = 0", "recording.retention_days"),
            ("queue_chunks = 0", "recording.queue_chunks"),
            ("gateway_name = \"a b\"", "recording.gateway_name"),
        ] {
            match parse(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(toml::from_str::<RawRecording>("on_limit = \"explode\"").is_err());
        assert!(toml::from_str::<RawRecording>("nope = 1").is_err());
    }
}
