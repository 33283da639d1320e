//! Uploading: the [`Uploader`] drains the queue into a [`Sink`], batch by batch.
//!
//! Sinks share one contract (`sink.rs`): a batch of [`Frame`]s in, one [`Outcome`] per
//! frame out, plus a [`Verdict`] on the link that decides how the uploader paces itself.
//! This module is the only code that talks to a platform; a sink never touches the queue:
//! it gets each frame's metadata and a handle on its image.
//!
//! Batching: a batch is cut when `batch_max_frames` or `batch_max_bytes` are pending, or
//! when frames have waited `batch_max_age_secs` (measured on the monotonic clock, so a
//! clock jump cannot hold frames back) and their group set's last batch is at least that
//! old. Only frames with equal groups share a batch (a Nexus session has one group list).
//!
//! Failures: transient ones (network, 5xx, 429, garbage responses) put the frames back and
//! back off exponentially with jitter, honouring `Retry-After`. A 429 on creating a Nexus
//! session is the project's shared session limit speaking: it slows the device's session
//! pacer (`pacer/`, AIMD) instead of backing off, and the next session waits visibly. When the network itself is
//! down the uploader is *offline*: it probes the platform with backoff and resumes on its
//! own. A request the platform refuses for the batch as a whole (a 400 on session create)
//! halves the batch size until the frame at fault is alone, and that frame goes dead; so
//! one bad frame cannot block the others. Frame-specific failures count towards
//! `max_attempts`; permanent refusals mark the frame dead at once.
//!
//! | file | role |
//! |---|---|
//! | `sink.rs` | the contract: [`Sink`], [`Frame`], [`Report`], [`Outcome`], [`Verdict`] |
//! | `uploader/` | the [`Uploader`] state machine ([`Phase`]), start-up phases, settling outcomes, unit tests |
//! | `operations.rs` | platform operations followed in the background |
//! | `backoff.rs` | backoff with jitter, `Retry-After`, batch growth |
//! | `pacer/` | how often sessions may be created: the platform's window and the learnt share (AIMD, with a 429 to a device behind its share taken as bad luck) |
//! | `nexus/` | the Datature Nexus sink |
//! | `picsellia/` | the Picsellia datalake sink |
//! | `directory.rs` | the local-folder sink |
//! | `verify.rs` | `edgecap verify`: receipts checked against the platform |

mod backoff;
pub mod directory;
mod link_rate;
pub mod nexus;
mod operations;
pub mod pacer;
pub mod picsellia;
pub(crate) mod sink;
pub mod state;
pub mod stream;
pub mod throttle;
mod uploader;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use backoff::{Backoff, batch_size, parse_retry_after};
pub use directory::DirectorySink;
pub use nexus::{NexusSink, nexus_crc32c};
pub use picsellia::PicselliaSink;
pub use sink::{
    Decision, Frame, Image, ImageError, ImageStore, Outcome, Pending, Report, SessionJournal,
    SessionRef, Sink, Verdict,
};
pub use uploader::{Controls, Phase, UploadStats, Uploader};

use crate::config::{Secret, SinkConfig};

/// The sink the config names.
pub enum ConfiguredSink {
    /// Datature Nexus.
    Nexus(NexusSink),
    /// A local folder.
    Directory(DirectorySink),
    /// The Picsellia datalake.
    Picsellia(PicselliaSink),
}

impl ConfiguredSink {
    /// Builds the sink from its config (the platforms need the resolved secret, and a
    /// journal for the sessions or object names they record; `device` fills `{device}`).
    pub fn new(
        cfg: &SinkConfig,
        secret: Option<&Secret>,
        device: &str,
        journal: Arc<dyn SessionJournal>,
    ) -> Result<Self, String> {
        Ok(match cfg {
            SinkConfig::Nexus(n) => {
                let secret = secret.ok_or("the Nexus sink needs a secret key")?;
                Self::Nexus(NexusSink::new(n.clone(), secret.clone(), journal)?)
            }
            SinkConfig::Directory { path } => Self::Directory(DirectorySink::new(path.clone())),
            SinkConfig::Picsellia(p) => {
                let secret = secret.ok_or("the Picsellia sink needs an API token")?;
                Self::Picsellia(PicselliaSink::new(
                    p.clone(),
                    secret.clone(),
                    device,
                    journal,
                )?)
            }
        })
    }
}

impl ConfiguredSink {
    /// The platform's uploads draw their bytes through `throttle` (the bandwidth cap; a
    /// local folder is not capped).
    pub fn with_throttle(self, throttle: Arc<throttle::Throttle>) -> Self {
        match self {
            Self::Nexus(s) => Self::Nexus(s.with_throttle(throttle)),
            Self::Picsellia(s) => Self::Picsellia(s.with_throttle(throttle)),
            d @ Self::Directory(_) => d,
        }
    }

    /// The session pacer keeps what it learnt in `path` and goes on from it (Nexus).
    pub fn with_pace_file(self, path: std::path::PathBuf) -> Self {
        match self {
            Self::Nexus(s) => Self::Nexus(s.with_pace_file(path)),
            other => other,
        }
    }
}

impl Sink for ConfiguredSink {
    async fn send(&self, batch: Vec<Frame>, stop: &watch::Receiver<bool>) -> Report {
        match self {
            Self::Nexus(s) => s.send(batch, stop).await,
            Self::Directory(s) => s.send(batch, stop).await,
            Self::Picsellia(s) => s.send(batch, stop).await,
        }
    }

    async fn probe(&self) -> Result<(), String> {
        match self {
            Self::Nexus(s) => s.probe().await,
            Self::Directory(s) => s.probe().await,
            Self::Picsellia(s) => s.probe().await,
        }
    }

    async fn check(&self) -> Verdict {
        match self {
            Self::Nexus(s) => s.check().await,
            Self::Directory(s) => s.check().await,
            Self::Picsellia(s) => s.check().await,
        }
    }

    fn next_session_in(&self) -> Duration {
        match self {
            Self::Nexus(s) => s.next_session_in(),
            Self::Directory(s) => s.next_session_in(),
            Self::Picsellia(s) => s.next_session_in(),
        }
    }

    fn sessions_left(&self) -> Option<usize> {
        match self {
            Self::Nexus(s) => s.sessions_left(),
            Self::Directory(s) => s.sessions_left(),
            Self::Picsellia(s) => s.sessions_left(),
        }
    }

    fn session_pace(&self) -> Option<(f64, u64)> {
        match self {
            Self::Nexus(s) => s.session_pace(),
            Self::Directory(s) => s.session_pace(),
            Self::Picsellia(s) => s.session_pace(),
        }
    }

    async fn recover(&self, session: SessionRef, frames: Vec<Frame>) -> Report {
        match self {
            Self::Nexus(s) => s.recover(session, frames).await,
            Self::Directory(s) => s.recover(session, frames).await,
            Self::Picsellia(s) => s.recover(session, frames).await,
        }
    }
}

/// `s` for a log line: control characters dropped, at most `max` characters, and every
/// occurrence of `secret` masked.
pub(crate) fn masked(s: &str, secret: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if secret.is_empty() {
        s
    } else {
        s.replace(secret, "***")
    }
}

/// A storage answer of 400 or more, read.
pub(crate) struct StorageRefusal {
    /// Its status.
    pub(crate) status: reqwest::StatusCode,
    /// Its body, control characters dropped, at most 200 characters.
    pub(crate) text: String,
    /// "storage answered <status>: <text>", for the log and the frame's last error.
    pub(crate) reason: String,
    /// A 5xx, 408 or 429: worth trying again.
    pub(crate) passing: bool,
}

/// Reads a storage answer of 400 or more (both sinks' uploads).
pub(crate) async fn storage_refusal(r: reqwest::Response) -> StorageRefusal {
    use reqwest::StatusCode;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    StorageRefusal {
        reason: format!("storage answered {status}: {text}"),
        passing: status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT,
        status,
        text,
    }
}

/// Resolves when `stop` becomes true (or its sender is gone).
pub async fn stopped(stop: &watch::Receiver<bool>) {
    let mut rx = stop.clone();
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleeps for `d` unless `stop` fires first; true if stopped.
pub async fn sleep_or_stop(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stopped(stop) => true,
    }
}
