//! Configuration: the TOML file, its validation, and the checked [`Config`] the rest of the
//! daemon reads.
//!
//! Two stages (ripgrep's flags → args split): `raw` mirrors the file with serde
//! (`deny_unknown_fields` everywhere), then [`parse`] checks every value and collects *all*
//! problems, each with its key path and line, instead of stopping at the first. Each
//! top-level section and each `[[camera]]` is deserialized on its own, so one bad section
//! does not hide the errors of another.
//!
//! The commented template `config/edgecap.toml` is the reference for every key; it is
//! compiled in and printed by `edgecap config print-default`.
//!
//! Relative paths (queue dir, directory sink, secret file) are taken relative to the
//! working directory, which is `/` under systemd: use absolute paths there.

mod locate;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue, ValueDeserializer};

use locate::{Locator, Seg, line_of, render_path};
pub use raw::PixelFormat;
use raw::{RawCamera, RawDaemon, RawDevice, RawQueue, RawSource, RawUpload, SinkKind, defaults};

use crate::capture::schedule::{ActiveHours, Window};
use crate::encode::{Rotate, Transform};

/// The commented default config, byte for byte what `config print-default` prints.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../config/edgecap.toml");

/// Names of the metadata keys edgecap adds to every frame itself. A camera's own
/// `metadata` may not use them.
pub const BUILTIN_METADATA_KEYS: &[&str] = &[
    "capture_time_ms",
    "capture_time",
    "clock_synced",
    "device",
    "camera",
    "run_id",
    "sequence",
    "width",
    "height",
];

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `device.id`, or the host name.
    pub device_id: String,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// Every `[[camera]]`, in file order.
    pub cameras: Vec<CameraConfig>,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[upload]`.
    pub upload: UploadConfig,
    /// Where the secret key came from, for the permission check of [`load`].
    pub secret_source: SecretSource,
    /// Things worth an operator's attention that do not stop the daemon (a config file
    /// holding a secret that others can read, …). Filled by [`load`].
    pub warnings: Vec<String>,
}

/// Where the Nexus secret key was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretSource {
    /// No secret (directory sink).
    #[default]
    None,
    /// `secret_key` in the config file itself.
    ConfigFile,
    /// `secret_key_env`.
    Env,
    /// `secret_key_file`.
    File(PathBuf),
    /// `secret_key_credential` (systemd `LoadCredential=`).
    Credential,
}

/// `[daemon]`: process-level behaviour.
#[derive(Debug, Clone)]
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
}

/// One `[[camera]]`.
#[derive(Debug, Clone)]
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
    /// The camera's custom metadata, templates already expanded.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Daily capture windows in local time (empty: always).
    pub active_hours: ActiveHours,
    /// Pixel transforms (default: none, camera JPEG passes through).
    pub transform: Transform,
    /// Change detection, if enabled.
    pub change_detection: Option<ChangeDetection>,
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
#[derive(Debug, Clone)]
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
}

/// `[upload]`.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// When a batch is cut.
    pub batch: BatchLimits,
    /// Backoff after transient failures.
    pub retry: RetryPolicy,
    /// Deliveries a frame may fail for a reason of its own before it is marked dead.
    pub max_attempts: u32,
    /// The sink.
    pub sink: SinkConfig,
}

/// Batch limits: a batch is sent when any is reached.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Frames per batch (≤ 5000).
    pub max_frames: usize,
    /// Bytes per batch.
    pub max_bytes: u64,
    /// Age of the oldest pending frame that forces a (smaller) batch out.
    pub max_age: Duration,
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

/// Which sink, with its settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// Datature Nexus upload sessions.
    Nexus(NexusConfig),
    /// A local folder.
    Directory {
        /// Target folder.
        path: PathBuf,
    },
}

/// Settings of the Nexus sink.
#[derive(Debug, Clone)]
pub struct NexusConfig {
    /// API base URL (its path part is ignored, as the SDK does).
    pub endpoint: String,
    /// Full `proj_…` project id.
    pub project_id: String,
    /// The project's secret key.
    pub secret: Secret,
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
}

/// A secret value. It has no `Display`, and its `Debug` prints `Secret(***)`, so it cannot
/// reach a log line by accident.
#[derive(Clone)]
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

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `camera[0].source.width` (empty for syntax errors).
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{path}: {} problem(s):\n{}", .problems.len(), render_problems(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a systemd credential (`LoadCredential=NAME:FILE` puts it in
/// `$CREDENTIALS_DIRECTORY/NAME`).
fn read_credential(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a credential name (a plain file name such as \"secret_key\")"
        ));
    }
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Err(format!(
            "CREDENTIALS_DIRECTORY is not set: secret_key_credential works under systemd with LoadCredential={name}:/path/to/file"
        ));
    };
    let path = Path::new(&dir).join(name);
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read credential `{name}` ({}): {e}", path.display()))
}

/// Whether others (not owner, not group) may read `path`.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cfg = parse(&text).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })?;
    let holder = match &cfg.secret_source {
        SecretSource::ConfigFile => Some(path.to_path_buf()),
        SecretSource::File(f) => Some(f.clone()),
        _ => None,
    };
    if let Some(h) = holder.filter(|h| readable_by_others(h)) {
        cfg.warnings.push(format!(
            "{} holds the Nexus secret key and every user of this machine can read it: chmod o-r {} (the .deb installs it as root:edgecap 0640)",
            h.display(),
            h.display()
        ));
    }
    Ok(cfg)
}

/// Validates config text; every problem found is returned, not only the first.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            let key = line.map(|l| syntax_key(text, l)).unwrap_or_default();
            let null = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .is_some_and(|(_, v)| {
                    matches!(v.trim(), "null" | "nil" | "None" | "NULL" | "none" | "~")
                });
            let message = if null {
                "TOML has no null value: leave the key out (custom metadata must be a string, integer, float or bool)".to_string()
            } else {
                format!("TOML syntax error: {}", e.message().trim())
            };
            return Err(vec![Problem { key, line, message }]);
        }
    };
    let loc = Locator::new(text, &doc);
    let mut v = Validator {
        loc: &loc,
        problems: Vec::new(),
        secret_source: SecretSource::None,
    };
    let cfg = v.config(doc.get_ref());
    match cfg {
        Some(cfg) if v.problems.is_empty() => Ok(cfg),
        _ => {
            let mut problems = v.problems;
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            problems.dedup();
            Err(problems)
        }
    }
}

/// The key a syntax error is about, read from its line and the table header above it:
/// `camera.metadata.tags` for `tags = [` under `[camera.metadata]`, `queue` for `[queue`.
fn syntax_key(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(this) = lines.get(line.saturating_sub(1)).map(|l| l.trim()) else {
        return String::new();
    };
    let header = |l: &str| {
        l.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    if this.starts_with('[') {
        return header(this);
    }
    let Some((k, _)) = this.split_once('=') else {
        return String::new();
    };
    let k = k.trim().trim_matches('"');
    let table = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(header);
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{k}"),
        _ => k.to_string(),
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

struct Validator<'a> {
    loc: &'a Locator<'a>,
    problems: Vec<Problem>,
    secret_source: SecretSource,
}

impl Validator<'_> {
    fn problem(&mut self, path: &[Seg], message: impl Into<String>) {
        self.problems.push(Problem {
            key: render_path(path),
            line: self.loc.line_of_path(path),
            message: message.into(),
        });
    }

    /// Deserializes one section on its own; a serde error becomes a problem at the key its
    /// span points to.
    fn section<'de, T: Deserialize<'de>>(
        &mut self,
        value: &toml::Spanned<DeValue<'de>>,
        fallback: &[Seg],
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                let (path, line) = match e.span() {
                    Some(s) => {
                        let p = self.loc.path_at(s.start);
                        let p = if p.len() >= fallback.len() {
                            p
                        } else {
                            fallback.to_vec()
                        };
                        (p, Some(self.loc.line_of(s.start)))
                    }
                    None => (fallback.to_vec(), self.loc.line_of_path(fallback)),
                };
                // Internally tagged tables (`[camera.source]`) are buffered by serde, so an
                // unknown key's span is the whole table: point at the key itself.
                let (path, line) = match e
                    .message()
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split_once('`'))
                {
                    Some((field, _)) => {
                        let mut deeper = path.clone();
                        deeper.push(key(field));
                        match self.loc.line_of_path(&deeper) {
                            Some(l) if path.last() != Some(&key(field)) => (deeper, Some(l)),
                            _ => (path, line),
                        }
                    }
                    None => (path, line),
                };
                self.problems.push(Problem {
                    key: render_path(&path),
                    line,
                    message: e.message().trim().to_string(),
                });
                None
            }
        }
    }

    fn config(&mut self, root: &DeTable<'_>) -> Option<Config> {
        let mut device = Some(RawDevice::default());
        let mut daemon = Some(RawDaemon::default());
        let mut queue = Some(RawQueue::default());
        let mut upload: Option<RawUpload> = None;
        let mut upload_seen = false;
        let mut cameras: Vec<Option<RawCamera>> = Vec::new();
        for (k, value) in root.iter() {
            let name: &str = k.get_ref().as_ref();
            let path = [key(name)];
            match name {
                "device" => device = self.section(value, &path),
                "daemon" => daemon = self.section(value, &path),
                "queue" => queue = self.section(value, &path),
                "upload" => {
                    upload_seen = true;
                    upload = self.section(value, &path);
                }
                "camera" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            cameras.push(self.section(item, &[key("camera"), Seg::Index(i)]));
                        }
                    }
                    _ => self.problem(
                        &path,
                        "must be an array of tables: write each camera as [[camera]]",
                    ),
                },
                other => self.problem(
                    &path,
                    format!(
                        "unknown key `{other}`, expected one of `device`, `daemon`, `camera`, `queue`, `upload`"
                    ),
                ),
            }
        }
        if !upload_seen {
            self.problem(
                &[],
                "missing [upload] section (sink = \"nexus\" or sink = \"directory\")",
            );
        }
        if cameras.is_empty() && !root.iter().any(|(k, _)| k.get_ref().as_ref() == "camera") {
            self.problem(&[], "no [[camera]] configured: add at least one");
        }

        let device_id = device.map(|d| self.device_id(d));
        let daemon = daemon.map(|d| self.daemon(d));
        let queue = queue.map(|q| self.queue(q));
        let upload = upload.and_then(|u| self.upload(u));
        let mut seen_names: Vec<String> = Vec::new();
        let mut checked_cameras = Vec::new();
        for (i, cam) in cameras.into_iter().enumerate() {
            let Some(cam) = cam else { continue };
            let base = [key("camera"), Seg::Index(i)];
            if seen_names.contains(&cam.name) {
                self.problem(
                    &[key("camera"), Seg::Index(i), key("name")],
                    format!(
                        "camera name `{}` is used twice; names must be unique",
                        cam.name
                    ),
                );
            }
            seen_names.push(cam.name.clone());
            let dev = device_id.clone().flatten().unwrap_or_default();
            if let Some(c) = self.camera(cam, &base, &dev) {
                checked_cameras.push(c);
            }
        }
        let config = Config {
            device_id: device_id??,
            daemon: daemon?,
            cameras: checked_cameras,
            queue: queue??,
            upload: upload?,
            secret_source: self.secret_source.clone(),
            warnings: Vec::new(),
        };
        self.problems.is_empty().then_some(config)
    }
}

/// Characters allowed in device ids, camera names and rendered filenames.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Makes a host name safe for filenames: every other character becomes `-`.
pub fn sanitize_name(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if is_name_char(c) { c } else { '-' })
        .collect();
    if out.is_empty() {
        "device".to_string()
    } else {
        out
    }
}

/// Whether this process could create and use `dir`: the nearest existing ancestor must be
/// a directory this user may write into (`access(2)`, so the service user's rights count).
/// Nothing is created.
fn check_dir_usable(dir: &Path) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    if at.is_relative() {
        at = std::env::current_dir()
            .map_err(|e| format!("cannot resolve a relative path: {e}"))?
            .join(at);
    }
    loop {
        match std::fs::metadata(&at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(format!("{} exists and is not a directory", at.display()));
            }
            Err(_) => match at.parent() {
                Some(p) => at = p.to_path_buf(),
                None => return Err(format!("no existing parent of {}", dir.display())),
            },
        }
    }
    if access_write(&at) {
        Ok(())
    } else {
        Err(format!(
            "{} is not writable by this user: {}",
            at.display(),
            std::io::Error::last_os_error()
        ))
    }
}

#[allow(unsafe_code, reason = "access(2) has no safe wrapper in libc or std")]
fn access_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Placeholders a filename template may use.
pub const FILENAME_PLACEHOLDERS: &[&str] = &["device", "camera", "time", "date", "run", "seq"];

/// Checks a filename template; returns what is wrong with it.
fn check_filename_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    let mut used = Vec::new();
    while let Some(open) = rest.find('{') {
        let literal = &rest[..open];
        if let Some(bad) = literal.chars().find(|c| !is_name_char(*c)) {
            return Err(format!(
                "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
            ));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("a '{' has no matching '}'".to_string());
        };
        let name = &rest[open + 1..open + close];
        if !FILENAME_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; known: {}",
                FILENAME_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        used.push(name);
        rest = &rest[open + close + 1..];
    }
    if let Some(bad) = rest.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    if !used.contains(&"run") || !used.contains(&"seq") {
        return Err(
            "must contain {run} and {seq}: together they keep names unique across restarts and clock jumps"
                .to_string(),
        );
    }
    Ok(())
}

impl Validator<'_> {
    fn device_id(&mut self, d: RawDevice) -> Option<String> {
        match d.id {
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                Some(sanitize_name(host.trim()))
            }
            Some(id) => {
                let path = [key("device"), key("id")];
                if id.is_empty() || id.len() > 64 {
                    self.problem(&path, "must be 1 to 64 characters long");
                    None
                } else if let Some(bad) = id.chars().find(|c| !is_name_char(*c)) {
                    self.problem(
                        &path,
                        format!("character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"),
                    );
                    None
                } else {
                    Some(id)
                }
            }
        }
    }

    fn daemon(&mut self, d: RawDaemon) -> DaemonConfig {
        let stall = self.range(
            &[key("daemon"), key("watchdog_stall_secs")],
            d.watchdog_stall_secs,
            10,
            86_400,
        );
        if d.status_file.trim().is_empty() {
            self.problem(
                &[key("daemon"), key("status_file")],
                "must be a file path, e.g. \"/run/edgecap/status.json\"",
            );
        }
        DaemonConfig {
            stop_after_frames: (d.stop_after_frames > 0).then_some(d.stop_after_frames),
            drain_on_stop: Duration::from_secs(d.drain_on_stop_secs),
            summary_interval: (d.summary_interval_secs > 0)
                .then(|| Duration::from_secs(d.summary_interval_secs)),
            status_file: PathBuf::from(d.status_file),
            watchdog_stall: Duration::from_secs(stall),
        }
    }

    fn range(&mut self, path: &[Seg], value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.problem(
                path,
                format!("must be between {min} and {max} (got {value})"),
            );
        }
        value.clamp(min, max)
    }

    fn queue(&mut self, q: RawQueue) -> Option<QueueConfig> {
        let p = |k: &str| [key("queue"), key(k)];
        if q.dir.trim().is_empty() {
            self.problem(&p("dir"), "must not be empty");
        } else if let Err(msg) = check_dir_usable(Path::new(&q.dir)) {
            self.problem(&p("dir"), msg);
        }
        let max_bytes = self.range(&p("max_bytes"), q.max_bytes, 1024 * 1024, u64::MAX);
        let max_frames = self.range(&p("max_frames"), q.max_frames, 1, 100_000_000);
        let window = self.range(&p("commit_window_ms"), q.commit_window_ms, 0, 10_000);
        let buffer = self.range(&p("buffer_frames"), q.buffer_frames, 1, 10_000);
        let cache = self.range(
            &p("index_cache_bytes"),
            q.index_cache_bytes,
            64 * 1024,
            1024 * 1024 * 1024,
        );
        Some(QueueConfig {
            dir: PathBuf::from(q.dir),
            max_bytes,
            max_frames,
            on_full: q.on_full,
            fsync: q.fsync,
            commit_window: Duration::from_millis(window),
            buffer_frames: usize::try_from(buffer).ok()?,
            index_cache_bytes: cache,
        })
    }

    fn upload(&mut self, u: RawUpload) -> Option<UploadConfig> {
        let p = |k: &str| [key("upload"), key(k)];
        let max_frames = self.range(&p("batch_max_frames"), u.batch_max_frames, 1, 5000);
        let max_bytes = self.range(&p("batch_max_bytes"), u.batch_max_bytes, 1, u64::MAX);
        let max_age = self.range(&p("batch_max_age_secs"), u.batch_max_age_secs, 0, 86_400);
        let initial = self.range(&p("retry_initial_ms"), u.retry_initial_ms, 10, 3_600_000);
        let max = self.range(&p("retry_max_secs"), u.retry_max_secs, 1, 86_400);
        if max * 1000 < initial {
            self.problem(
                &p("retry_max_secs"),
                format!("must be at least retry_initial_ms ({initial} ms)"),
            );
        }
        if u.max_attempts == 0 {
            self.problem(&p("max_attempts"), "must be at least 1 (got 0)");
        }
        let nexus_keys = [
            ("endpoint", u.endpoint.is_some()),
            ("project_id", u.project_id.is_some()),
            ("secret_key", u.secret_key.is_some()),
            ("secret_key_env", u.secret_key_env.is_some()),
            ("secret_key_file", u.secret_key_file.is_some()),
            ("secret_key_credential", u.secret_key_credential.is_some()),
            ("put_concurrency", u.put_concurrency.is_some()),
            ("session_rate_limit", u.session_rate_limit.is_some()),
            (
                "session_rate_window_secs",
                u.session_rate_window_secs.is_some(),
            ),
            ("connect_timeout_secs", u.connect_timeout_secs.is_some()),
            ("request_timeout_secs", u.request_timeout_secs.is_some()),
            ("stall_timeout_secs", u.stall_timeout_secs.is_some()),
            ("operation_poll_ms", u.operation_poll_ms.is_some()),
            ("operation_timeout_secs", u.operation_timeout_secs.is_some()),
        ];
        let sink = match u.sink {
            SinkKind::Directory => {
                for (k, set) in nexus_keys {
                    if set {
                        self.problem(&p(k), "only valid with sink = \"nexus\"");
                    }
                }
                match u.path {
                    Some(path) if !path.trim().is_empty() => {
                        if let Err(msg) = check_dir_usable(Path::new(&path)) {
                            self.problem(&p("path"), msg);
                        }
                        Some(SinkConfig::Directory {
                            path: PathBuf::from(path),
                        })
                    }
                    _ => {
                        self.problem(&p("path"), "is required with sink = \"directory\"");
                        None
                    }
                }
            }
            SinkKind::Nexus => {
                if u.path.is_some() {
                    self.problem(&p("path"), "only valid with sink = \"directory\"");
                }
                self.nexus(&u)
            }
        };
        Some(UploadConfig {
            batch: BatchLimits {
                max_frames: usize::try_from(max_frames).ok()?,
                max_bytes,
                max_age: Duration::from_secs(max_age),
            },
            retry: RetryPolicy {
                initial: Duration::from_millis(initial),
                max: Duration::from_secs(max),
            },
            max_attempts: u.max_attempts.max(1),
            sink: sink?,
        })
    }

    fn nexus(&mut self, u: &RawUpload) -> Option<SinkConfig> {
        let p = |k: &str| [key("upload"), key(k)];
        let endpoint = u.endpoint.clone().unwrap_or_else(defaults::endpoint);
        let endpoint_ok = match reqwest::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => true,
            Ok(_) => {
                self.problem(&p("endpoint"), "must be an http:// or https:// URL");
                false
            }
            Err(e) => {
                self.problem(&p("endpoint"), format!("is not a URL: {e}"));
                false
            }
        };
        let project_id = match &u.project_id {
            None => {
                self.problem(
                    &p("project_id"),
                    "is required with sink = \"nexus\" (the project's `proj_…` id)",
                );
                None
            }
            Some(id) => {
                let bare = id.strip_prefix("proj_").unwrap_or(id);
                if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric()) {
                    self.problem(
                        &p("project_id"),
                        "must look like `proj_` followed by letters and digits",
                    );
                    None
                } else {
                    // The SDK (≥ 1.10) adds the prefix to bare ids; the API wants it.
                    Some(format!("proj_{bare}"))
                }
            }
        };
        let secret = self.secret(u);
        let put = self.range(
            &p("put_concurrency"),
            u.put_concurrency.unwrap_or_else(defaults::put_concurrency),
            1,
            64,
        );
        let rate = self.range(
            &p("session_rate_limit"),
            u.session_rate_limit
                .unwrap_or_else(defaults::session_rate_limit),
            1,
            10_000,
        );
        let mut secs = |k: &str, v: Option<u64>, d: fn() -> u64, min: u64, max: u64| {
            Duration::from_secs(self.range(&p(k), v.unwrap_or_else(d), min, max))
        };
        let window = secs(
            "session_rate_window_secs",
            u.session_rate_window_secs,
            defaults::session_rate_window_secs,
            1,
            86_400,
        );
        let connect = secs(
            "connect_timeout_secs",
            u.connect_timeout_secs,
            defaults::connect_timeout_secs,
            1,
            3600,
        );
        let request = secs(
            "request_timeout_secs",
            u.request_timeout_secs,
            defaults::request_timeout_secs,
            1,
            3600,
        );
        let stall = secs(
            "stall_timeout_secs",
            u.stall_timeout_secs,
            defaults::stall_timeout_secs,
            1,
            3600,
        );
        let op_timeout = secs(
            "operation_timeout_secs",
            u.operation_timeout_secs,
            defaults::operation_timeout_secs,
            1,
            36_000,
        );
        let poll = self.range(
            &p("operation_poll_ms"),
            u.operation_poll_ms
                .unwrap_or_else(defaults::operation_poll_ms),
            100,
            600_000,
        );
        if !endpoint_ok {
            return None;
        }
        Some(SinkConfig::Nexus(NexusConfig {
            endpoint,
            project_id: project_id?,
            secret: secret?,
            put_concurrency: usize::try_from(put).ok()?,
            session_rate_limit: u32::try_from(rate).ok()?,
            session_rate_window: window,
            connect_timeout: connect,
            request_timeout: request,
            stall_timeout: stall,
            operation_poll: Duration::from_millis(poll),
            operation_timeout: op_timeout,
        }))
    }

    fn secret(&mut self, u: &RawUpload) -> Option<Secret> {
        let p = |k: &str| [key("upload"), key(k)];
        let given = [
            u.secret_key.is_some(),
            u.secret_key_env.is_some(),
            u.secret_key_file.is_some(),
            u.secret_key_credential.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            self.problem(
                &p("secret_key"),
                if given == 0 {
                    "the Nexus secret key is required: set one of secret_key, secret_key_env, secret_key_file or secret_key_credential"
                } else {
                    "set only one of secret_key, secret_key_env, secret_key_file and secret_key_credential"
                },
            );
            return None;
        }
        let (path, value) = if let Some(v) = &u.secret_key {
            self.secret_source = SecretSource::ConfigFile;
            (p("secret_key"), Ok(v.clone()))
        } else if let Some(var) = &u.secret_key_env {
            self.secret_source = SecretSource::Env;
            (
                p("secret_key_env"),
                std::env::var(var)
                    .map_err(|_| format!("environment variable `{var}` is not set or not UTF-8")),
            )
        } else if let Some(file) = &u.secret_key_file {
            self.secret_source = SecretSource::File(PathBuf::from(file));
            (
                p("secret_key_file"),
                std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read secret file `{file}`: {e}")),
            )
        } else if let Some(name) = &u.secret_key_credential {
            self.secret_source = SecretSource::Credential;
            (p("secret_key_credential"), read_credential(name))
        } else {
            return None;
        };
        match value {
            Err(msg) => {
                self.problem(&path, msg);
                None
            }
            Ok(v) => {
                let v = v.trim().to_string();
                if v.is_empty() {
                    self.problem(&path, "the secret key is empty");
                    None
                } else if v.chars().any(|c| c.is_control() || c == ' ') {
                    // Never echo the value itself.
                    self.problem(
                        &path,
                        "the secret key contains spaces or control characters",
                    );
                    None
                } else {
                    Some(Secret::new(v))
                }
            }
        }
    }

    fn camera(&mut self, c: RawCamera, base: &[Seg], device: &str) -> Option<CameraConfig> {
        let p = |k: &str| {
            let mut v = base.to_vec();
            v.push(key(k));
            v
        };
        let mut ok = true;
        if c.name.is_empty() || c.name.len() > 64 || !c.name.chars().all(is_name_char) {
            self.problem(
                &p("name"),
                "must be 1 to 64 characters of letters, digits, '.', '_' and '-'",
            );
            ok = false;
        }
        let interval = match (c.interval_ms, c.fps) {
            (Some(_), Some(_)) => {
                self.problem(&p("fps"), "set either interval_ms or fps, not both");
                None
            }
            (Some(ms), None) => Some(Duration::from_millis(self.range(
                &p("interval_ms"),
                ms,
                1,
                86_400_000,
            ))),
            (None, Some(fps)) => {
                if !(fps.is_finite() && fps > 0.0 && fps <= 120.0) {
                    self.problem(
                        &p("fps"),
                        format!("must be greater than 0 and at most 120 (got {fps})"),
                    );
                    None
                } else {
                    Some(Duration::from_secs_f64(1.0 / fps))
                }
            }
            (None, None) => Some(Duration::from_millis(defaults::interval_ms())),
        };
        let s = |k: &str| {
            let mut v = p("source");
            v.push(key(k));
            v
        };
        let source = match c.source {
            RawSource::TestPattern {
                width,
                height,
                jpeg_quality,
            } => {
                let w = self.range(&s("width"), u64::from(width), 16, 7680);
                let h = self.range(&s("height"), u64::from(height), 16, 4320);
                let q = self.range(&s("jpeg_quality"), u64::from(jpeg_quality), 1, 100);
                SourceConfig::TestPattern {
                    width: u32::try_from(w).ok()?,
                    height: u32::try_from(h).ok()?,
                    jpeg_quality: u8::try_from(q).ok()?,
                }
            }
            RawSource::V4l2 {
                device,
                width,
                height,
                device_fps,
                format,
                frame_timeout_secs,
            } => {
                let w = self.range(&s("width"), u64::from(width), 16, 7680);
                let h = self.range(&s("height"), u64::from(height), 16, 4320);
                let fps = device_fps.map(|f| self.range(&s("device_fps"), u64::from(f), 1, 240));
                let t = self.range(&s("frame_timeout_secs"), frame_timeout_secs, 1, 3600);
                let d = device.trim();
                let device = if d.is_empty() {
                    self.problem(
                        &s("device"),
                        "must be an index (\"0\"), a path (\"/dev/video0\") or part of the camera's name",
                    );
                    ok = false;
                    DeviceSelector::Index(0)
                } else if let Ok(i) = d.parse::<u32>() {
                    DeviceSelector::Index(i)
                } else if d.starts_with('/') {
                    DeviceSelector::Path(PathBuf::from(d))
                } else {
                    DeviceSelector::Name(d.to_string())
                };
                SourceConfig::V4l2 {
                    device,
                    width: u32::try_from(w).ok()?,
                    height: u32::try_from(h).ok()?,
                    device_fps: fps.and_then(|f| u32::try_from(f).ok()),
                    format,
                    frame_timeout: Duration::from_secs(t),
                }
            }
            RawSource::Command {
                argv,
                max_frame_bytes,
                frame_timeout_secs,
            } => {
                if argv.first().is_none_or(|a| a.trim().is_empty()) {
                    self.problem(
                        &s("argv"),
                        "must name a program, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"--nopreview\", \"-o\", \"-\"]",
                    );
                    ok = false;
                }
                let m = self.range(
                    &s("max_frame_bytes"),
                    max_frame_bytes,
                    1024,
                    256 * 1024 * 1024,
                );
                let t = self.range(&s("frame_timeout_secs"), frame_timeout_secs, 1, 3600);
                SourceConfig::Command {
                    argv,
                    max_frame_bytes: usize::try_from(m).ok()?,
                    frame_timeout: Duration::from_secs(t),
                }
            }
        };
        let mut windows = Vec::new();
        for w in &c.active_hours {
            match Window::parse(w) {
                Ok(w) => windows.push(w),
                Err(msg) => {
                    self.problem(&p("active_hours"), msg);
                    ok = false;
                }
            }
        }
        let tr = |k: &str| {
            let mut v = p("transform");
            v.push(key(k));
            v
        };
        let t = &c.transform;
        let rotate = match t.rotate_degrees {
            0 => Rotate::None,
            90 => Rotate::Cw90,
            180 => Rotate::Cw180,
            270 => Rotate::Cw270,
            other => {
                self.problem(
                    &tr("rotate_degrees"),
                    format!("must be 0, 90, 180 or 270 (got {other})"),
                );
                ok = false;
                Rotate::None
            }
        };
        let max_width = t
            .max_width
            .map(|v| self.range(&tr("max_width"), u64::from(v), 16, 7680))
            .and_then(|v| u32::try_from(v).ok());
        let max_height = t
            .max_height
            .map(|v| self.range(&tr("max_height"), u64::from(v), 16, 4320))
            .and_then(|v| u32::try_from(v).ok());
        let jpeg_quality = t
            .jpeg_quality
            .map(|v| self.range(&tr("jpeg_quality"), u64::from(v), 1, 100))
            .and_then(|v| u8::try_from(v).ok());
        let transform = Transform {
            max_width,
            max_height,
            rotate,
            flip: t.flip,
            jpeg_quality,
        };
        let cd = &c.change_detection;
        let cdp = |k: &str| {
            let mut v = p("change_detection");
            v.push(key(k));
            v
        };
        if !(cd.threshold_percent.is_finite() && (0.0..=100.0).contains(&cd.threshold_percent)) {
            self.problem(
                &cdp("threshold_percent"),
                format!("must be between 0 and 100 (got {})", cd.threshold_percent),
            );
            ok = false;
        }
        let gap = self.range(&cdp("max_gap_secs"), cd.max_gap_secs, 1, 86_400);
        let change_detection = cd.enabled.then(|| ChangeDetection {
            threshold_percent: cd.threshold_percent,
            max_gap: Duration::from_secs(gap),
        });
        if c.groups.is_empty() {
            self.problem(&p("groups"), "must name at least one group");
            ok = false;
        }
        for g in &c.groups {
            if g.trim().is_empty() {
                self.problem(&p("groups"), "group names must not be blank");
                ok = false;
            }
        }
        if let Err(msg) = check_filename_template(&c.filename_template) {
            self.problem(&p("filename_template"), msg);
            ok = false;
        }
        let mut metadata = BTreeMap::new();
        for (k, v) in &c.metadata {
            let mut path = p("metadata");
            path.push(key(k));
            if k.trim().is_empty() {
                self.problem(&path, "metadata keys must not be empty");
                ok = false;
                continue;
            }
            if BUILTIN_METADATA_KEYS.contains(&k.as_str()) {
                self.problem(
                    &path,
                    format!(
                        "`{k}` is set by edgecap itself; built-in keys are {}",
                        BUILTIN_METADATA_KEYS.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
            let value = match v {
                toml::Value::String(s) => Some(MetaValue::Str(
                    s.replace("{device}", device).replace("{camera}", &c.name),
                )),
                toml::Value::Integer(i) => Some(MetaValue::Int(*i)),
                toml::Value::Float(f) if f.is_finite() => Some(MetaValue::Float(*f)),
                toml::Value::Float(_) => {
                    self.problem(&path, "NaN and infinite floats are not allowed");
                    None
                }
                toml::Value::Boolean(b) => Some(MetaValue::Bool(*b)),
                toml::Value::Datetime(_) => {
                    self.problem(
                        &path,
                        "datetimes are not allowed; write it as a quoted string",
                    );
                    None
                }
                toml::Value::Array(_) => {
                    self.problem(
                        &path,
                        "arrays are not allowed: custom metadata must be flat (string, integer, float or bool)",
                    );
                    None
                }
                toml::Value::Table(_) => {
                    self.problem(
                        &path,
                        "nested tables are not allowed: custom metadata must be flat (string, integer, float or bool)",
                    );
                    None
                }
            };
            match value {
                Some(v) => {
                    metadata.insert(k.clone(), v);
                }
                None => ok = false,
            }
        }
        Some(CameraConfig {
            name: c.name,
            source,
            interval: interval?,
            groups: c.groups,
            filename_template: c.filename_template,
            metadata,
            active_hours: ActiveHours::new(windows),
            transform,
            change_detection,
        })
        .filter(|_| ok)
    }
}

#[cfg(test)]
mod tests {
    use super::raw::*;
    use super::*;
    use serde::de::DeserializeOwned;

    /// A deserializer that only records the field names serde asks for.
    struct Grab<'a>(&'a mut Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for Grab<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn fields_of<T: DeserializeOwned>() -> Vec<&'static str> {
        let mut v = Vec::new();
        let _ = T::deserialize(Grab(&mut v));
        v
    }

    #[test]
    fn every_config_key_is_documented_in_the_template() {
        let mut keys = Vec::new();
        keys.extend(fields_of::<RawDevice>());
        keys.extend(fields_of::<RawDaemon>());
        keys.extend(fields_of::<RawCamera>());
        keys.extend(fields_of::<RawQueue>());
        keys.extend(fields_of::<RawUpload>());
        keys.extend(fields_of::<RawTransform>());
        keys.extend(fields_of::<RawChangeDetection>());
        // The source enum is internally tagged; serde does not list its fields.
        keys.extend([
            "type",
            "width",
            "height",
            "jpeg_quality",
            "device",
            "device_fps",
            "format",
            "frame_timeout_secs",
            "argv",
            "max_frame_bytes",
        ]);
        assert!(keys.len() > 40, "introspection found {} keys", keys.len());
        for k in keys {
            let documented = DEFAULT_TEMPLATE.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{k} =")) || l == format!("[camera.{k}]")
            });
            assert!(documented, "`{k}` is not documented in config/edgecap.toml");
        }
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        // Every commented `key = value` in the template, uncommented on its own, must
        // produce the same checked value as leaving it out.
        let base = DEFAULT_TEMPLATE;
        let cfg = |text: &str| {
            parse(&text.replace(
                "secret_key_env = \"EDGECAP_SECRET_KEY\"",
                "secret_key = \"k\"",
            ))
        };
        let plain = cfg(base).expect("template validates");
        let mut checked = 0;
        for line in base.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, _)) = rest.split_once(" = ") else {
                continue;
            };
            if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            // Alternatives rather than defaults.
            if [
                "fps",
                "secret_key",
                "secret_key_file",
                "secret_key_credential",
                "path",
                "site",
                "label",
                "id",
            ]
            .contains(&key)
            {
                continue;
            }
            let text = base.replacen(line, rest, 1);
            let uncommented = cfg(&text).unwrap_or_else(|p| panic!("{rest}: {p:?}"));
            assert_eq!(
                format!("{:?}", uncommented),
                format!("{:?}", plain),
                "the template's `{rest}` is not the default"
            );
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} defaults checked");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let cfg = parse(&DEFAULT_TEMPLATE.replace(
            "secret_key_env = \"EDGECAP_SECRET_KEY\"",
            "secret_key = \"hunter2-very-secret\"",
        ))
        .expect("valid");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn filename_templates_need_run_and_seq_and_safe_characters() {
        assert!(check_filename_template("{device}_{camera}_{time}_{run}-{seq}").is_ok());
        assert!(check_filename_template("{run}{seq}").is_ok());
        assert!(check_filename_template("{time}_{seq}").is_err());
        assert!(check_filename_template("{run}-{seq}/x").is_err());
        assert!(check_filename_template("{run}-{seq}-{nope}").is_err());
        assert!(check_filename_template("{run-{seq}").is_err());
    }
}
