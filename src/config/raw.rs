//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Every struct denies unknown keys. Defaults live in `defaults` below and are the same
//! values `config/edgecap.toml` documents; `validate` in the parent module turns these raw
//! values into the checked [`super::Config`].

use serde::Deserialize;

/// `[device]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub id: Option<String>,
}

/// `[daemon]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    #[serde(default)]
    pub stop_after_frames: u64,
    #[serde(default = "defaults::drain_on_stop_secs")]
    pub drain_on_stop_secs: u64,
    #[serde(default = "defaults::summary_interval_secs")]
    pub summary_interval_secs: u64,
    #[serde(default = "defaults::status_file")]
    pub status_file: String,
    #[serde(default = "defaults::watchdog_stall_secs")]
    pub watchdog_stall_secs: u64,
    #[serde(default)]
    pub http_listen: Option<String>,
    #[serde(default)]
    pub metrics_textfile: Option<String>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        Self {
            stop_after_frames: 0,
            drain_on_stop_secs: defaults::drain_on_stop_secs(),
            summary_interval_secs: defaults::summary_interval_secs(),
            status_file: defaults::status_file(),
            watchdog_stall_secs: defaults::watchdog_stall_secs(),
            http_listen: None,
            metrics_textfile: None,
        }
    }
}

/// `[[camera]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCamera {
    pub name: String,
    pub source: RawSource,
    pub interval_ms: Option<u64>,
    pub fps: Option<f64>,
    #[serde(default = "defaults::groups")]
    pub groups: Vec<String>,
    #[serde(default = "defaults::filename_template")]
    pub filename_template: String,
    #[serde(default)]
    pub metadata: toml::Table,
    #[serde(default = "defaults::builtin_metadata")]
    pub builtin_metadata: Vec<String>,
    #[serde(default)]
    pub active_hours: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default)]
    pub transform: RawTransform,
    #[serde(default)]
    pub change_detection: RawChangeDetection,
}

/// `[camera.transform]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransform {
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    #[serde(default)]
    pub rotate_degrees: u32,
    #[serde(default)]
    pub flip: crate::encode::Flip,
    pub jpeg_quality: Option<u8>,
}

/// `[camera.change_detection]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChangeDetection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "defaults::threshold_percent")]
    pub threshold_percent: f64,
    #[serde(default = "defaults::max_gap_secs")]
    pub max_gap_secs: u64,
}

impl Default for RawChangeDetection {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold_percent: defaults::threshold_percent(),
            max_gap_secs: defaults::max_gap_secs(),
        }
    }
}

/// Which pixel format a V4L2 camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// MJPEG if the camera offers it at the size, else YUYV, else NV12.
    #[default]
    Auto,
    /// Motion JPEG (passed through untouched).
    Mjpeg,
    /// YUYV 4:2:2 (encoded to JPEG by edgecap).
    Yuyv,
    /// NV12 4:2:0 (encoded to JPEG by edgecap).
    Nv12,
}

/// `[camera.source]`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// The built-in moving test pattern.
    TestPattern {
        #[serde(default = "defaults::width")]
        width: u32,
        #[serde(default = "defaults::height")]
        height: u32,
        #[serde(default = "defaults::jpeg_quality")]
        jpeg_quality: u8,
    },
    /// A V4L2 camera (USB webcam) through nokhwa.
    V4l2 {
        #[serde(default = "defaults::v4l2_device")]
        device: String,
        #[serde(default = "defaults::width")]
        width: u32,
        #[serde(default = "defaults::height")]
        height: u32,
        device_fps: Option<u32>,
        #[serde(default)]
        format: PixelFormat,
        #[serde(default = "defaults::frame_timeout_secs")]
        frame_timeout_secs: u64,
    },
    /// A program that writes MJPEG (concatenated JPEGs) to its stdout.
    Command {
        argv: Vec<String>,
        #[serde(default = "defaults::max_frame_bytes")]
        max_frame_bytes: u64,
        #[serde(default = "defaults::frame_timeout_secs")]
        frame_timeout_secs: u64,
    },
}

/// `[queue]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    #[serde(default = "defaults::queue_dir")]
    pub dir: String,
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "defaults::max_frames")]
    pub max_frames: u64,
    #[serde(default)]
    pub on_full: super::OnFull,
    #[serde(default)]
    pub fsync: super::FsyncMode,
    #[serde(default = "defaults::commit_window_ms")]
    pub commit_window_ms: u64,
    #[serde(default = "defaults::buffer_frames")]
    pub buffer_frames: u64,
    #[serde(default = "defaults::index_cache_bytes")]
    pub index_cache_bytes: u64,
    #[serde(default = "defaults::receipts_max_bytes")]
    pub receipts_max_bytes: u64,
    #[serde(default)]
    pub keep_delivered_bytes: u64,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            dir: defaults::queue_dir(),
            max_bytes: defaults::max_bytes(),
            max_frames: defaults::max_frames(),
            on_full: super::OnFull::default(),
            fsync: super::FsyncMode::default(),
            commit_window_ms: defaults::commit_window_ms(),
            buffer_frames: defaults::buffer_frames(),
            index_cache_bytes: defaults::index_cache_bytes(),
            receipts_max_bytes: defaults::receipts_max_bytes(),
            keep_delivered_bytes: 0,
        }
    }
}

/// Which platform the uploader talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Datature Nexus upload sessions.
    Nexus,
    /// A local folder.
    Directory,
    /// The Picsellia datalake.
    Picsellia,
}

/// How Nexus gets each frame's custom metadata (`upload.metadata_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataApi {
    /// After the upload, through the custom-metadata bulk endpoint (SDK 1.12; default).
    #[default]
    Bulk,
    /// In the upload session request (SDK up to 1.10).
    Session,
    /// Both.
    Both,
}

/// Which frames go first (`upload.order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainOrder {
    /// The oldest waiting frames first (default).
    #[default]
    OldestFirst,
    /// The newest first: after an outage the freshest data arrives first.
    NewestFirst,
}

/// `[upload]`: keys common to all sinks plus each sink's own (checked against `sink`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    pub sink: SinkKind,
    // Common to every sink.
    #[serde(default = "defaults::batch_max_frames")]
    pub batch_max_frames: u64,
    #[serde(default = "defaults::batch_max_bytes")]
    pub batch_max_bytes: u64,
    #[serde(default = "defaults::batch_max_age_secs")]
    pub batch_max_age_secs: u64,
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "defaults::retry_max_secs")]
    pub retry_max_secs: u64,
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "defaults::start_delay_max_secs")]
    pub start_delay_max_secs: u64,
    #[serde(default)]
    pub windows: Vec<String>,
    #[serde(default)]
    pub order: DrainOrder,
    pub max_upload_rate: Option<toml::Value>,
    pub daily_budget: Option<toml::Value>,
    pub monthly_budget: Option<toml::Value>,
    #[serde(default = "defaults::budget_reset_day")]
    pub budget_reset_day: u64,
    #[serde(default)]
    pub budget_reserve_for_newest: bool,
    // Nexus only.
    pub endpoint: Option<String>,
    pub project_id: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_env: Option<String>,
    pub secret_key_file: Option<String>,
    pub secret_key_credential: Option<String>,
    pub put_concurrency: Option<u64>,
    pub session_rate_limit: Option<u64>,
    pub session_rate_window_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub stall_timeout_secs: Option<u64>,
    pub operation_poll_ms: Option<u64>,
    pub operation_timeout_secs: Option<u64>,
    pub metadata_api: Option<MetadataApi>,
    // Directory only.
    pub path: Option<String>,
    // Picsellia only.
    pub picsellia: Option<RawPicsellia>,
}

/// `[upload.picsellia]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPicsellia {
    #[serde(default = "defaults::picsellia_host")]
    pub host: String,
    pub api_token: Option<String>,
    pub api_token_env: Option<String>,
    pub api_token_file: Option<String>,
    pub api_token_credential: Option<String>,
    pub organization: Option<String>,
    pub datalake: Option<String>,
    pub upload_dir: Option<String>,
    pub data_source: Option<String>,
    #[serde(default = "defaults::picsellia_concurrency")]
    pub concurrency: u64,
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default = "defaults::stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    #[serde(default = "defaults::processing_poll_ms")]
    pub processing_poll_ms: u64,
    #[serde(default = "defaults::processing_timeout_secs")]
    pub processing_timeout_secs: u64,
}

/// Default values, shared by serde and by the template test.
pub mod defaults {
    pub fn drain_on_stop_secs() -> u64 {
        30
    }
    pub fn summary_interval_secs() -> u64 {
        60
    }
    pub fn status_file() -> String {
        "/run/edgecap/status.json".to_string()
    }
    pub fn watchdog_stall_secs() -> u64 {
        120
    }
    pub fn groups() -> Vec<String> {
        vec!["main".to_string()]
    }
    pub fn builtin_metadata() -> Vec<String> {
        crate::config::BUILTIN_METADATA_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect()
    }
    pub fn filename_template() -> String {
        "{device}_{camera}_{time}_{run}-{seq}".to_string()
    }
    pub fn width() -> u32 {
        640
    }
    pub fn height() -> u32 {
        480
    }
    pub fn jpeg_quality() -> u8 {
        85
    }
    pub fn v4l2_device() -> String {
        "0".to_string()
    }
    pub fn frame_timeout_secs() -> u64 {
        10
    }
    pub fn max_frame_bytes() -> u64 {
        16 * 1024 * 1024
    }
    pub fn threshold_percent() -> f64 {
        2.0
    }
    pub fn max_gap_secs() -> u64 {
        60
    }
    pub fn interval_ms() -> u64 {
        1000
    }
    pub fn queue_dir() -> String {
        "/var/lib/edgecap/queue".to_string()
    }
    pub fn max_bytes() -> u64 {
        2_000_000_000
    }
    pub fn max_frames() -> u64 {
        100_000
    }
    pub fn commit_window_ms() -> u64 {
        200
    }
    pub fn buffer_frames() -> u64 {
        32
    }
    pub fn receipts_max_bytes() -> u64 {
        8_000_000
    }
    pub fn index_cache_bytes() -> u64 {
        1024 * 1024
    }
    pub fn batch_max_frames() -> u64 {
        500
    }
    pub fn batch_max_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn batch_max_age_secs() -> u64 {
        30
    }
    pub fn retry_initial_ms() -> u64 {
        1000
    }
    pub fn retry_max_secs() -> u64 {
        300
    }
    pub fn max_attempts() -> u32 {
        10
    }
    pub fn start_delay_max_secs() -> u64 {
        30
    }
    pub fn budget_reset_day() -> u64 {
        1
    }
    pub fn endpoint() -> String {
        "https://api.datature.io".to_string()
    }
    pub fn put_concurrency() -> u64 {
        4
    }
    pub fn session_rate_limit() -> u64 {
        u64::from(crate::config::platform::NEXUS_SESSION_RATE_LIMIT)
    }
    pub fn session_rate_window_secs() -> u64 {
        crate::config::platform::NEXUS_SESSION_RATE_WINDOW_SECS
    }
    pub fn connect_timeout_secs() -> u64 {
        10
    }
    pub fn request_timeout_secs() -> u64 {
        60
    }
    pub fn stall_timeout_secs() -> u64 {
        60
    }
    pub fn operation_poll_ms() -> u64 {
        8000
    }
    pub fn operation_timeout_secs() -> u64 {
        600
    }
    pub fn picsellia_host() -> String {
        "https://app.picsellia.com".to_string()
    }
    pub fn picsellia_concurrency() -> u64 {
        4
    }
    pub fn processing_poll_ms() -> u64 {
        5000
    }
    pub fn processing_timeout_secs() -> u64 {
        150
    }
}
