//! The status file: a JSON snapshot of the running daemon, rewritten atomically (temporary
//! file + rename) every few seconds in its runtime directory, and read by `edgecap status`
//! and by the read-only queue commands while the daemon holds the queue. It holds counters
//! and names only, never the secret.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One camera in the status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CameraStatus {
    /// The camera's name.
    pub name: String,
    /// Frames its source delivered this run.
    pub produced: u64,
    /// Source failures this run.
    pub errors: u64,
    /// Frames change detection skipped this run.
    pub skipped_unchanged: u64,
    /// Frames that could not be processed this run.
    pub bad_frames: u64,
    /// Frames dropped because the disk did not keep up, this run.
    pub dropped_buffer: u64,
}

/// The whole status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// edgecap's version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// This run's id.
    pub run_id: String,
    /// `device.id`.
    pub device: String,
    /// `running`, `stopping` or `stopped`.
    pub state: String,
    /// When the daemon started (RFC 3339, UTC).
    pub started_at: String,
    /// When this file was written (RFC 3339, UTC).
    pub updated_at: String,
    /// The queue directory.
    pub queue_dir: String,
    /// Frames committed to the queue (lifetime).
    pub captured: u64,
    /// Frames the platform accepted (lifetime).
    pub uploaded: u64,
    /// Frames dropped by the budget policy (lifetime).
    pub dropped_budget: u64,
    /// Frames lost to write errors (lifetime).
    pub dropped_write: u64,
    /// Frames dropped before the disk (this run).
    pub dropped_buffer: u64,
    /// Frames refused for good, kept in the queue.
    pub dead: u64,
    /// Damaged spool files moved aside (lifetime).
    pub quarantined: u64,
    /// Frames waiting for upload.
    pub backlog_frames: u64,
    /// Bytes waiting for upload.
    pub backlog_bytes: u64,
    /// Age of the oldest waiting frame, in seconds.
    pub oldest_pending_age_secs: Option<u64>,
    /// Whether the platform is reachable.
    pub online: bool,
    /// A loop stuck longer than the stall limit (the watchdog stopped pinging), if any.
    pub stalled: Option<String>,
    /// Per camera.
    pub cameras: Vec<CameraStatus>,
}

impl Status {
    /// The one-line form used for systemd's `STATUS=` and `edgecap status`'s header.
    pub fn line(&self) -> String {
        let age = self
            .oldest_pending_age_secs
            .map(|a| format!(", oldest {a} s"))
            .unwrap_or_default();
        format!(
            "captured {}, uploaded {}, backlog {} frames ({:.1} MB{age}), dead {}, {}{}",
            self.captured,
            self.uploaded,
            self.backlog_frames,
            self.backlog_bytes as f64 / 1e6,
            self.dead,
            if self.online { "online" } else { "offline" },
            self.stalled
                .as_ref()
                .map(|s| format!(", STALLED: {s}"))
                .unwrap_or_default()
        )
    }
}

/// Writes `status` to `path` atomically.
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file.
pub fn read(path: &Path) -> std::io::Result<Status> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
