//! The checked configuration: the types the rest of edgecap reads. [`super::parse`]
//! produces them from the file; nothing here reads the file, the environment or the disk.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::raw::MetadataApi;
use super::raw::PixelFormat;
use crate::encode::Transform;
use crate::schedule::ActiveHours;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `device.id` (None: the host name, filled in by [`super::resolve()`]).
    pub device_id: Option<String>,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// Every `[[camera]]`, in file order.
    pub cameras: Vec<CameraConfig>,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[upload]`.
    pub upload: UploadConfig,
    /// What only this machine can answer (host name, secret, folder rights), each with the
    /// key and line it came from; [`super::resolve()`] answers it.
    pub deferred: Vec<Deferred>,
    /// Things worth an operator's attention that do not stop the daemon (settings that
    /// work against each other).
    pub warnings: Vec<String>,
}

impl Config {
    /// How many different `groups` lists the cameras have (each needs its own sessions).
    pub fn group_sets(&self) -> usize {
        let mut sets: Vec<&Vec<String>> = self.cameras.iter().map(|c| &c.groups).collect();
        sets.sort();
        sets.dedup();
        sets.len()
    }
}

/// A check [`super::parse`] leaves to [`super::resolve()`] because it needs the
/// environment.
#[derive(Debug, Clone)]
pub enum Deferred {
    /// `device.id` is not set: the host name is the device id.
    HostName,
    /// A folder this user must be able to create and write into.
    Writable {
        /// Where it was configured.
        site: Site,
        /// The folder.
        dir: PathBuf,
        /// A problem when it is not (the queue: nothing works without it); otherwise a
        /// warning (a sink's folder: it may become writable later, and the daemon waits
        /// for it while capture goes on).
        required: bool,
    },
    /// The platform's secret key, to be read from where it was configured.
    Secret {
        /// The key that names its source.
        site: Site,
        /// Where the value is.
        source: SecretSource,
    },
}

/// A key of the config file and its line, for problems found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Key path, e.g. `upload.secret_key_file`.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The file that set it, when the config has drop-ins or overrides (`layers.rs`).
    pub file: Option<std::path::PathBuf>,
}

/// Where the platform's secret key is to be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `secret_key` in the config file itself.
    ConfigFile(Secret),
    /// `secret_key_env`: this environment variable.
    Env(String),
    /// `secret_key_file`: this file.
    File(PathBuf),
    /// `secret_key_credential`: this systemd credential (`LoadCredential=`).
    Credential(String),
}

/// `[daemon]`: process-level behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Stop capturing after this many frames were committed (None: run until a signal).
    pub stop_after_frames: Option<u64>,
    /// After `stop_after_frames`, how long to let the uploader drain the queue.
    pub drain_on_stop: Duration,
    /// How often a one-line summary is logged (None: never).
    pub summary_interval: Option<Duration>,
    /// Where the daemon keeps its status file (read by `edgecap status`).
    pub status_file: PathBuf,
    /// A capture, commit or upload call running longer than this counts as hung: the
    /// systemd watchdog pings stop, so systemd restarts the service.
    pub watchdog_stall: Duration,
    /// Where `/metrics`, `/status` and `/snapshot/<camera>.jpg` are served (None: off).
    pub http_listen: Option<std::net::SocketAddr>,
    /// A `.prom` file the metrics are written to every 30 s, for node_exporter's textfile
    /// collector (None: off).
    pub metrics_textfile: Option<PathBuf>,
}

/// One `[[camera]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Unique camera name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// Where frames come from.
    pub source: SourceConfig,
    /// Time between two captured frames.
    pub interval: Duration,
    /// Asset groups every frame of this camera joins on the platform.
    pub groups: Vec<String>,
    /// Platform filename template (checked to contain `{run}` and `{seq}`).
    pub filename_template: String,
    /// The camera's custom metadata; `{device}` and `{camera}` in strings are expanded by
    /// [`crate::frame::Namer`].
    pub metadata: BTreeMap<String, MetaValue>,
    /// The built-in metadata keys edgecap adds to each frame (a subset of
    /// [`super::BUILTIN_METADATA_KEYS`], in that order).
    pub builtin_metadata: Vec<String>,
    /// Picsellia data tags every frame of this camera gets; `{device}` and `{camera}` are
    /// expanded by [`crate::frame::Namer`].
    pub tags: Vec<String>,
    /// Where the camera stands, sent as standard metadata by the Picsellia sink.
    pub location: Option<Location>,
    /// Daily capture windows in local time (empty: always).
    pub active_hours: ActiveHours,
    /// Pixel transforms (default: none, camera JPEG passes through).
    pub transform: Transform,
    /// Change detection, if enabled.
    pub change_detection: Option<ChangeDetection>,
}

/// A camera's position (WGS 84 degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// -90 to 90.
    pub latitude: f64,
    /// -180 to 180.
    pub longitude: f64,
}

/// `[camera.change_detection]`: keep a frame only when the scene changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeDetection {
    /// Mean absolute difference of the grayscale thumbnails, in percent of full scale,
    /// above which a frame counts as changed.
    pub threshold_percent: f64,
    /// A frame is kept at least this often even when nothing changes.
    pub max_gap: Duration,
}

/// Which V4L2 device a `v4l2` source opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    /// `/dev/video<N>`.
    Index(u32),
    /// A device path; symlinks such as `/dev/v4l/by-id/...` are followed.
    Path(PathBuf),
    /// The first device whose name contains this text (case-insensitive).
    Name(String),
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "/dev/video{i}"),
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Name(n) => write!(f, "the camera named like \"{n}\""),
        }
    }
}

/// A camera source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// The built-in moving test pattern.
    TestPattern {
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// JPEG quality 1–100.
        jpeg_quality: u8,
    },
    /// A V4L2 camera (USB webcam) through nokhwa.
    V4l2 {
        /// Which device.
        device: DeviceSelector,
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
        /// Rate the device runs at (None: the capture rate rounded up).
        device_fps: Option<u32>,
        /// Requested pixel format.
        format: PixelFormat,
        /// No frame for this long: the camera is re-opened.
        frame_timeout: Duration,
    },
    /// A program writing concatenated JPEGs to stdout.
    Command {
        /// Program and arguments, run without a shell.
        argv: Vec<String>,
        /// Larger frames are discarded (and counted) instead of buffered.
        max_frame_bytes: usize,
        /// No frame for this long: the child is restarted.
        frame_timeout: Duration,
    },
}

/// A flat custom-metadata value: the only kinds Nexus accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string.
    Str(String),
}

/// What the queue does when its budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Delete the oldest frame that is not being uploaded to make room (default).
    #[default]
    DropOldest,
    /// Refuse the new frame.
    DropNewest,
    /// Thin the backlog evenly: keep every other frame of it, and every fourth once those
    /// are gone, … (`queue/thin.rs`), so a long outage is sampled over its whole length.
    Thin,
}

/// How the queue makes frames durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Frames arriving within `commit_window_ms` share one directory fsync (default).
    #[default]
    Grouped,
    /// Every frame is fsync'd and committed on its own.
    PerFrame,
}

/// `[queue]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Queue directory (spool files, index, quarantine).
    pub dir: PathBuf,
    /// Budget in bytes of spool files.
    pub max_bytes: u64,
    /// Budget in frames.
    pub max_frames: u64,
    /// Policy when the budget is full.
    pub on_full: OnFull,
    /// Commit mode.
    pub fsync: FsyncMode,
    /// Group-commit window.
    pub commit_window: Duration,
    /// Capacity of the capture → disk channel, in frames.
    pub buffer_frames: usize,
    /// sled's page cache size.
    pub index_cache_bytes: u64,
    /// Cap of the receipt log (proof of delivery), in bytes.
    pub receipts_max_bytes: u64,
    /// Delivered frames kept for `verify --repair`, in bytes (0: none).
    pub keep_delivered_bytes: u64,
}

/// `[upload]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadConfig {
    /// When a batch is cut.
    pub batch: BatchLimits,
    /// Backoff after transient failures.
    pub retry: RetryPolicy,
    /// Deliveries a frame may fail for a reason of its own before it is marked dead.
    pub max_attempts: u32,
    /// The most a random delay before the first session after start-up, and after an
    /// outage, may be (zero: none): a fleet powered up together does not stampede.
    pub start_delay_max: Duration,
    /// What a metered or part-time link allows: windows, order, rate, budgets.
    pub link: LinkPolicy,
    /// The sink.
    pub sink: SinkConfig,
}

/// `[upload]`'s link policy.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkPolicy {
    /// When uploads may run (empty: always).
    pub windows: crate::schedule::ActiveHours,
    /// Which frames go first.
    pub order: super::raw::DrainOrder,
    /// Request body bytes per second across every transfer (None: no cap).
    pub max_rate: Option<u64>,
    /// Bytes a local day may send (None: no budget).
    pub daily_budget: Option<u64>,
    /// Bytes a month may send (None: no budget).
    pub monthly_budget: Option<u64>,
    /// The day of the month the monthly budget starts again (1 to 28).
    pub reset_day: u8,
    /// Keep part of each budget for the newest frames.
    pub reserve_for_newest: bool,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        Self {
            windows: Default::default(),
            order: Default::default(),
            max_rate: None,
            daily_budget: None,
            monthly_budget: None,
            reset_day: 1,
            reserve_for_newest: false,
        }
    }
}

/// Batch limits: a batch is sent when any is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLimits {
    /// Frames per batch (at most a Nexus session's 5000 assets).
    pub max_frames: usize,
    /// Bytes per batch.
    pub max_bytes: u64,
    /// Age of the oldest pending frame that forces a (smaller) batch out.
    pub max_age: Duration,
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

/// Which sink, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// Datature Nexus upload sessions.
    Nexus(NexusConfig),
    /// A local folder.
    Directory {
        /// Target folder.
        path: PathBuf,
    },
    /// The Picsellia datalake.
    Picsellia(PicselliaConfig),
}

impl SinkConfig {
    /// The name `sink = …` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Nexus(_) => "nexus",
            Self::Directory { .. } => "directory",
            Self::Picsellia(_) => "picsellia",
        }
    }
}

/// Settings of the Picsellia sink (`[upload.picsellia]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PicselliaConfig {
    /// Platform base URL (its path part is ignored, as the SDK does).
    pub host: String,
    /// Organization name or id (None: the token's default organization).
    pub organization: Option<String>,
    /// Datalake name or id (None: the organization's default datalake).
    pub datalake: Option<String>,
    /// Object-storage folder for the uploads (private storage only).
    pub upload_dir: Option<String>,
    /// Data source name; `{device}` is expanded.
    pub data_source: Option<String>,
    /// Frames in flight at once (object name, upload, registration).
    pub concurrency: usize,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for API calls (not storage uploads).
    pub request_timeout: Duration,
    /// A transfer that makes no progress for this long is aborted.
    pub stall_timeout: Duration,
    /// Time between processing-status polls.
    pub processing_poll: Duration,
    /// How long processing may take before the data is taken as delivered anyway.
    pub processing_timeout: Duration,
}

/// Settings of the Nexus sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NexusConfig {
    /// API base URL (its path part is ignored, as the SDK does).
    pub endpoint: String,
    /// Full `proj_…` project id.
    pub project_id: String,
    /// Storage PUTs in parallel.
    pub put_concurrency: usize,
    /// Session creations allowed per window.
    pub session_rate_limit: u32,
    /// The rate-limit window.
    pub session_rate_window: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for API calls (not storage PUTs).
    pub request_timeout: Duration,
    /// A transfer that makes no progress for this long is aborted.
    pub stall_timeout: Duration,
    /// Time between operation polls.
    pub operation_poll: Duration,
    /// How long an operation may take before its assets are checked one by one.
    pub operation_timeout: Duration,
    /// How each frame's custom metadata reaches the platform.
    pub metadata_api: MetadataApi,
}

/// A secret value. It has no `Display`, and its `Debug` prints `Secret(***)`, so it cannot
/// reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
