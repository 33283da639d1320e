//! `edgecap verify`: the receipts (`queue::receipts`) checked against the platform. For
//! each delivered frame (the newest receipt per filename), at a bounded request rate and
//! honouring 429:
//!
//! - Nexus: the asset exists by filename, its `fileSize` is the receipt's size, and it has
//!   custom metadata (the current API attaches it after the upload);
//! - Picsellia: the data exists (by its recorded object name, else by filename) and has
//!   custom metadata; the API reports neither size nor checksum;
//! - a folder: `<filename>` exists with the receipt's size and CRC-32C, and its `.json`.
//!
//! Each frame ends up `ok`, `missing`, `metadata_missing`, `mismatched` or `unknown` (the
//! platform could not be asked). A missing frame can be sent again (`--repair`) only while
//! the queue keeps delivered frames (`keep_delivered_bytes`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::nexus::admin::{NexusAdmin, NexusError};
use super::picsellia::admin::{Admin as PicselliaAdmin, AdminError};
use crate::config::{Secret, SinkConfig};
use crate::queue::Receipt;

/// What became of one delivered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// There, with its metadata.
    Ok,
    /// Not on the platform.
    Missing,
    /// There, without its custom metadata.
    MetadataMissing,
    /// There, but not what was sent (size or checksum).
    Mismatched,
    /// The platform could not be asked.
    Unknown,
}

impl Finding {
    /// Its name, as `--json` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::MetadataMissing => "metadata_missing",
            Self::Mismatched => "mismatched",
            Self::Unknown => "unknown",
        }
    }
}

/// One checked frame.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// Its filename.
    pub filename: String,
    /// Its queue sequence number when it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The finding.
    pub finding: Finding,
    /// What was found (for anything but `ok`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// When it was delivered, Unix ms.
    pub delivered_ms: i64,
}

/// The whole check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Receipts read (all, before `--since`/`--sample`).
    pub receipts: usize,
    /// Frames checked.
    pub checked: usize,
    /// Counts per finding.
    pub counts: BTreeMap<String, usize>,
    /// Every frame that is not `ok`.
    pub gaps: Vec<Checked>,
}

impl VerifyReport {
    /// Whether any frame is missing, lacks its metadata, differs, or could not be checked.
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }
}

/// Which receipts to check.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    /// Only those delivered at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// At most this many, spread evenly over the selection.
    pub sample: Option<usize>,
    /// Requests per second at most.
    pub rate: f64,
}

/// The newest receipt per filename, selected.
pub fn select(receipts: &[Receipt], sel: Selection) -> Vec<Receipt> {
    let mut newest: BTreeMap<&str, &Receipt> = BTreeMap::new();
    for r in receipts {
        newest.insert(&r.filename, r);
    }
    let mut out: Vec<Receipt> = newest
        .into_values()
        .filter(|r| sel.since_ms.is_none_or(|s| r.delivered_ms >= s))
        .cloned()
        .collect();
    out.sort_by_key(|r| r.delivered_ms);
    if let Some(n) = sel.sample
        && n < out.len()
    {
        let step = out.len() as f64 / n.max(1) as f64;
        out = (0..n)
            .filter_map(|i| out.get((i as f64 * step) as usize).cloned())
            .collect();
    }
    out
}

enum Platform {
    Nexus(NexusAdmin),
    Picsellia(PicselliaAdmin),
    Folder(std::path::PathBuf),
}

/// Checks `receipts` (already selected) against the platform of `sink`.
pub async fn verify(
    sink: &SinkConfig,
    secret: Option<Secret>,
    device: &str,
    receipts: Vec<Receipt>,
    all: usize,
    rate: f64,
) -> Result<VerifyReport, String> {
    let platform = match sink {
        SinkConfig::Nexus(n) => Platform::Nexus(
            NexusAdmin::new(n, secret.ok_or("no secret key")?).map_err(|e| e.to_string())?,
        ),
        SinkConfig::Picsellia(p) => Platform::Picsellia(
            PicselliaAdmin::new(p, secret.ok_or("no API token")?, device)
                .map_err(|e| e.to_string())?,
        ),
        SinkConfig::Directory { path } => Platform::Folder(path.clone()),
    };
    let pause = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut report = VerifyReport {
        receipts: all,
        ..VerifyReport::default()
    };
    for r in receipts {
        let (finding, detail) = check(&platform, &r).await;
        *report.counts.entry(finding.name().to_string()).or_default() += 1;
        report.checked += 1;
        if finding != Finding::Ok {
            report.gaps.push(Checked {
                filename: r.filename.clone(),
                seq: r.seq,
                finding,
                detail,
                delivered_ms: r.delivered_ms,
            });
        }
        if !matches!(platform, Platform::Folder(_)) {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(report)
}

/// Tries a platform call up to five times while it answers 429 (waiting as it asks, 5 s
/// when it does not say).
async fn patiently<T, E, F, Fut>(
    busy: impl Fn(&E) -> Option<Option<Duration>>,
    f: F,
) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if tries < 4 => match busy(&e) {
                Some(wait) => {
                    tries += 1;
                    tokio::time::sleep(wait.unwrap_or(Duration::from_secs(5))).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

fn has_metadata(v: Option<&Value>) -> bool {
    v.is_some_and(|m| m.as_object().is_some_and(|o| !o.is_empty()))
}

async fn check(platform: &Platform, r: &Receipt) -> (Finding, String) {
    match platform {
        Platform::Nexus(n) => {
            let got = patiently(
                |e: &NexusError| match e {
                    NexusError::Busy(w) => Some(*w),
                    _ => None,
                },
                || n.get(&r.filename),
            )
            .await;
            match got {
                Ok(a) if a.metadata.file_size != r.bytes => (
                    Finding::Mismatched,
                    format!(
                        "{} bytes on the platform, {} sent",
                        a.metadata.file_size, r.bytes
                    ),
                ),
                Ok(a) if !has_metadata(a.metadata.custom_metadata.as_ref()) => (
                    Finding::MetadataMissing,
                    format!("asset {} has no custom metadata", a.id),
                ),
                Ok(_) => (Finding::Ok, String::new()),
                Err(NexusError::NotFound(_)) => {
                    (Finding::Missing, "no asset with this filename".to_string())
                }
                Err(e) => (Finding::Unknown, n.clean(&e.to_string())),
            }
        }
        Platform::Picsellia(p) => {
            let (by, value) = match &r.session {
                Some(object) => ("object_name", object.as_str()),
                None => ("filename", r.filename.as_str()),
            };
            let got = patiently(
                |e: &AdminError| match e {
                    AdminError::Busy(w) => Some(*w),
                    _ => None,
                },
                || p.find(by, value),
            )
            .await;
            match got {
                Ok(d) if !has_metadata(Some(&d.custom_metadata)) => (
                    Finding::MetadataMissing,
                    format!("data {} has no custom metadata", d.id),
                ),
                Ok(_) => (Finding::Ok, String::new()),
                Err(AdminError::NotFound(_)) => {
                    (Finding::Missing, "no data with this object name".into())
                }
                Err(e) => (Finding::Unknown, p.clean(&e.to_string())),
            }
        }
        Platform::Folder(dir) => check_file(dir, r),
    }
}

fn check_file(dir: &Path, r: &Receipt) -> (Finding, String) {
    let path = dir.join(&r.filename);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                Finding::Missing,
                format!("{} does not exist", path.display()),
            );
        }
        Err(e) => return (Finding::Unknown, format!("{}: {e}", path.display())),
    };
    if bytes.len() as u64 != r.bytes || crc32c::crc32c(&bytes) != r.crc32c {
        return (
            Finding::Mismatched,
            format!(
                "{} bytes (CRC-32C {:08x}) on disk, {} ({:08x}) delivered",
                bytes.len(),
                crc32c::crc32c(&bytes),
                r.bytes,
                r.crc32c
            ),
        );
    }
    if !dir.join(format!("{}.json", r.filename)).exists() {
        return (Finding::MetadataMissing, "its .json is missing".into());
    }
    (Finding::Ok, String::new())
}
