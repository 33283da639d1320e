//! [`Snapshot`]: the one picture of edgecap's numbers. The same type feeds the periodic
//! summary log line, the status file, systemd's `STATUS=`, `edgecap status` and every
//! `--json`, whether the daemon runs or not, so a name means one thing everywhere:
//!
//! - `counters.committed`: frames made durable in the queue (fsync'd and indexed), over
//!   the queue's lifetime. This is what "captured" means in edgecap's promises.
//! - `run.produced`: frames the camera sources delivered in this run, before change
//!   detection, the capture buffer and the disk; `produced - committed` this run is what
//!   was skipped or dropped on the way (each counted under `run` or `counters`).
//! - `counters.*` are lifetime counters persisted in the queue index; `run.*` and
//!   `cameras` count this run only.
//!
//! `uploader` ([`UploaderStatus`]) is what the uploader is doing and why, filled by
//! `upload::state` (the words and their meaning are documented there).
//!
//! The status file is the snapshot as JSON, rewritten atomically (temporary file + rename)
//! every few seconds in the daemon's runtime directory and read by `edgecap status` and by
//! the read-only queue commands while the daemon holds the queue. It holds counters and
//! names only, never the secret.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::queue::{Counters, IndexFailure, ReceiptStats, Stats, Tally};

/// One camera, this run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CameraSnapshot {
    /// The camera's name.
    pub name: String,
    /// Frames its source delivered.
    pub produced: u64,
    /// Source failures.
    pub errors: u64,
    /// Frames change detection skipped.
    pub skipped_unchanged: u64,
    /// Frames that could not be processed.
    pub bad_frames: u64,
    /// Frames dropped because the disk did not keep up.
    pub dropped_buffer: u64,
    /// `starting`, `capturing`, `reopening` (its source failed; opened again with
    /// backoff) or `closed` (outside its active_hours).
    #[serde(default)]
    pub state: String,
    /// When its source last delivered a frame (Unix ms).
    #[serde(default)]
    pub last_frame_ms: Option<i64>,
    /// Frames per second its source delivered, measured over the last 30 s.
    #[serde(default)]
    pub fps: f64,
    /// Times its source was opened again after a failure.
    #[serde(default)]
    pub restarts: u64,
}

/// This run's totals over all cameras.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RunCounters {
    /// Frames the sources delivered.
    pub produced: u64,
    /// Frames dropped before the disk (capture buffer full).
    pub dropped_buffer: u64,
    /// Frames change detection skipped.
    pub skipped_unchanged: u64,
    /// Frames that could not be processed.
    pub bad_frames: u64,
    /// Camera source failures.
    pub camera_errors: u64,
}

impl RunCounters {
    /// The totals of `cameras`.
    pub fn of(cameras: &[CameraSnapshot]) -> Self {
        let mut r = Self::default();
        for c in cameras {
            r.produced += c.produced;
            r.dropped_buffer += c.dropped_buffer;
            r.skipped_unchanged += c.skipped_unchanged;
            r.bad_frames += c.bad_frames;
            r.camera_errors += c.errors;
        }
        r
    }
}

/// The numbers of a daemon (or of a queue nobody runs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    /// edgecap's version.
    pub version: String,
    /// `running`, `stopping` or `stopped` (a daemon's); `idle` for a queue read while no
    /// daemon runs.
    pub state: String,
    /// The daemon's process id (0 when no daemon wrote this).
    pub pid: u32,
    /// The run's id (empty when no daemon wrote this).
    pub run_id: String,
    /// The device id (empty when no daemon wrote this).
    pub device: String,
    /// When the daemon started (RFC 3339, UTC).
    pub started_at: String,
    /// When this snapshot was taken (RFC 3339, UTC).
    pub updated_at: String,
    /// The queue directory.
    pub queue_dir: String,
    /// Frames waiting for upload.
    pub pending: Tally,
    /// Frames being uploaded.
    pub inflight: Tally,
    /// Frames refused for good, kept in the queue.
    pub dead: Tally,
    /// Frames waiting (pending + in flight).
    pub backlog_frames: u64,
    /// Bytes waiting (pending + in flight).
    pub backlog_bytes: u64,
    /// Age of the oldest waiting frame, in seconds.
    pub oldest_pending_age_secs: Option<u64>,
    /// Lifetime counters of the queue.
    pub counters: Counters,
    /// This run's totals.
    pub run: RunCounters,
    /// Whether the platform answered the uploader's last call.
    pub online: bool,
    /// What the uploader is doing and why (state, reason, since/until, last success,
    /// last error, delivery rate).
    pub uploader: UploaderStatus,
    /// A loop stuck longer than the stall limit (the watchdog stopped pinging), if any.
    pub stalled: Option<String>,
    /// Set while the queue index has failed and waits for its repair (frames are still
    /// committed and counted; nothing is uploaded meanwhile).
    pub index_failed: Option<IndexFailure>,
    /// Per camera, this run.
    pub cameras: Vec<CameraSnapshot>,
    /// Proof of delivery: the last receipt and the deliveries of the last hour and day.
    pub receipts: ReceiptStats,
}

impl Snapshot {
    /// The queue's part, from its stats.
    pub fn with_queue(mut self, stats: &Stats, oldest_secs: Option<u64>) -> Self {
        self.pending = stats.pending;
        self.inflight = stats.inflight;
        self.dead = stats.dead;
        self.backlog_frames = stats.pending.frames + stats.inflight.frames;
        self.backlog_bytes = stats.pending.bytes + stats.inflight.bytes;
        self.oldest_pending_age_secs = oldest_secs;
        self.counters = stats.counters;
        self.index_failed.clone_from(&stats.index_failed);
        self
    }

    /// The one-line form used for systemd's `STATUS=` and `edgecap status`'s header.
    pub fn line(&self) -> String {
        let age = self
            .oldest_pending_age_secs
            .map(|a| format!(", oldest {a} s"))
            .unwrap_or_default();
        format!(
            "{}; committed {}, uploaded {}, backlog {} frames ({:.1} MB{age}), dead {}{}{}",
            self.uploader.text(),
            self.counters.committed,
            self.counters.uploaded,
            self.backlog_frames,
            self.backlog_bytes as f64 / 1e6,
            self.dead.frames,
            self.index_failed
                .as_ref()
                .map(|f| format!(", QUEUE INDEX FAILED since {}: {}", f.since, f.error))
                .unwrap_or_default(),
            self.stalled
                .as_ref()
                .map(|s| format!(", STALLED: {s}"))
                .unwrap_or_default()
        )
    }

    /// Logs the periodic summary line (INFO, every number a structured field).
    pub fn log_summary(&self) {
        let c = &self.counters;
        let r = &self.run;
        info!(
            produced = r.produced,
            committed = c.committed,
            uploaded = c.uploaded,
            dropped_budget = c.dropped_budget,
            dropped_write = c.dropped_write,
            dropped_buffer = r.dropped_buffer,
            skipped_unchanged = r.skipped_unchanged,
            bad_frames = r.bad_frames,
            camera_errors = r.camera_errors,
            dead = self.dead.frames,
            quarantined = c.quarantined,
            interrupted = c.interrupted,
            resent_after_crash = c.resent_after_crash,
            resent_after_error = c.resent_after_error,
            recovered = c.recovered,
            index_failed = self.index_failed.is_some(),
            metadata_retried = c.metadata_retried,
            backlog_frames = self.backlog_frames,
            backlog_bytes = self.backlog_bytes,
            oldest_pending_age_secs = self.oldest_pending_age_secs,
            online = self.online,
            uploader = self.uploader.text(),
            frames_per_min = self.uploader.frames_per_min,
            last_error = self.uploader.last_error.as_deref(),
            "summary"
        );
    }
}

/// Writes `snapshot` to `path` atomically.
pub fn write(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file.
pub fn read(path: &Path) -> std::io::Result<Snapshot> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The uploader's state as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UploaderStatus {
    /// One word (see the module doc).
    pub state: String,
    /// Why, where the state has a reason.
    pub reason: Option<String>,
    /// Since when (Unix ms).
    pub since_ms: i64,
    /// Until when the uploader waits (Unix ms), for `waiting` and `backing off`.
    pub until_ms: Option<i64>,
    /// The last time the platform accepted frames (Unix ms).
    pub last_success_ms: Option<i64>,
    /// The last error (masked), and when.
    pub last_error: Option<String>,
    /// When the last error happened (Unix ms).
    pub last_error_ms: Option<i64>,
    /// Frames delivered per minute, over the last five minutes.
    pub frames_per_min: f64,
    /// Image bytes delivered per minute, over the last five minutes.
    pub bytes_per_min: f64,
    /// Bytes counted against the budgets today (request bodies and overhead).
    pub sent_today_bytes: u64,
    /// Bytes counted against the budgets this budget month.
    pub sent_month_bytes: u64,
    /// Bytes the budgets still allow (the smaller of day and month); None without budgets.
    pub budget_left_bytes: Option<u64>,
    /// When the next upload window opens (Unix ms), while outside one.
    pub next_window_ms: Option<i64>,
    /// The configured cap on the bytes sent per second.
    pub rate_cap_bytes_per_sec: Option<u64>,
    /// The link's measured goodput, bytes per second.
    pub link_bytes_per_sec: Option<f64>,
    /// Upload sessions per window the device allows itself now, learnt from the
    /// platform's 429s (None: the sink has no session limit, or no batch went yet).
    pub session_rate: Option<f64>,
    /// 429s on creating a session (the project's shared limit) since start.
    pub rate_limited: u64,
}

impl UploaderStatus {
    /// The state with its reason and time, e.g. `waiting: session limit until 12:04:31`,
    /// `refused: … since 2026-11-26 10:02:11`, `offline since …`. Times in local time.
    pub fn text(&self) -> String {
        let word = if self.state.is_empty() {
            "starting"
        } else {
            self.state.as_str()
        };
        let mut s = word.to_string();
        if let Some(r) = &self.reason {
            s += ": ";
            s += r;
        }
        match (word, self.until_ms) {
            ("waiting" | "backing off" | "window closed" | "budget spent", Some(until)) => {
                s += &format!(" until {}", local_time(until, false));
            }
            ("refused" | "offline", _) => {
                s += &format!(" since {}", local_time(self.since_ms, true));
            }
            _ => {}
        }
        s
    }
}

/// `ms` as local time: `HH:MM:SS`, with the date when `date` (or when not today).
pub fn local_time(ms: i64, date: bool) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms.to_string();
    };
    let tz = jiff::tz::TimeZone::system();
    let z = ts.to_zoned(tz.clone());
    let today = jiff::Timestamp::now().to_zoned(tz).date();
    if date || z.date() != today {
        z.strftime("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        z.strftime("%H:%M:%S").to_string()
    }
}
