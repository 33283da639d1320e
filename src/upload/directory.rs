//! The directory sink: delivers each frame as `<filename>` plus `<filename>.json` (its
//! metadata) into a local folder, atomically (temporary file, fsync, rename, then one
//! directory fsync per batch). It is the demo's sink and a simple way to hand frames to
//! another program on the same device.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::watch;

use super::sink::{Frame, ImageError, Outcome, Report, Sink, Verdict};
use crate::frame::FrameMeta;

/// Writes frames into a folder.
pub struct DirectorySink {
    dir: PathBuf,
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

impl DirectorySink {
    /// A sink writing into `dir` (created if missing).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

impl Sink for DirectorySink {
    /// Whether the folder can be created and written into.
    async fn probe(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .and_then(|_| write_atomic(&dir, ".edgecap-probe", b""))
                .and_then(|_| std::fs::remove_file(dir.join(".edgecap-probe")))
                .map_err(|e| format!("cannot write into {}: {e}", dir.display()))
        })
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
    }

    /// Delivers a batch (on a blocking thread: it fsyncs).
    async fn send(&self, batch: Vec<Frame>, _stop: &watch::Receiver<bool>) -> Report {
        let dir = self.dir.clone();
        let res = tokio::task::spawn_blocking(move || deliver(&dir, batch)).await;
        res.unwrap_or_else(|e| Report {
            pending: None,
            outcomes: Vec::new(),
            verdict: Verdict::Backoff {
                reason: format!("directory sink task failed: {e}"),
                retry_after: None,
            },
        })
    }
}

fn deliver(dir: &Path, batch: Vec<Frame>) -> Report {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Report {
            pending: None,
            outcomes: Vec::new(),
            verdict: Verdict::Offline(format!("cannot create {}: {e}", dir.display())),
        };
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut verdict = Verdict::Ok;
    for l in batch {
        let image = match l.image_blocking() {
            Ok(i) => i,
            Err(ImageError::Transient(why)) => {
                outcomes.push((l.seq, Outcome::Retry(why)));
                continue;
            }
            Err(ImageError::Gone(_)) => {
                outcomes.push((l.seq, Outcome::Gone));
                continue;
            }
        };
        if let Verdict::Offline(why) = &verdict {
            outcomes.push((l.seq, Outcome::Retry(why.clone())));
            continue;
        }
        match write_frame(dir, &l.meta, &image) {
            Ok(()) => outcomes.push((l.seq, Outcome::Accepted)),
            Err(e) => {
                let msg = format!("cannot write into {}: {e}", dir.display());
                outcomes.push((l.seq, Outcome::Retry(msg.clone())));
                // A folder that refuses writes (permissions, a read-only or full file
                // system) is like an unreachable server: the uploader probes it with
                // backoff and delivers once it works again; capture is not affected.
                verdict = Verdict::Offline(msg);
            }
        }
    }
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        // Without the directory fsync the renames may not survive a power cut: keep the
        // frames queued rather than risk losing them.
        for o in outcomes.iter_mut() {
            if o.1 == Outcome::Accepted {
                o.1 = Outcome::Retry(format!("cannot fsync {}: {e}", dir.display()));
            }
        }
        if verdict == Verdict::Ok {
            verdict = Verdict::Backoff {
                reason: format!("cannot fsync {}: {e}", dir.display()),
                retry_after: None,
            };
        }
    }
    Report {
        outcomes,
        verdict,
        pending: None,
    }
}

/// Writes one frame as `<filename>` plus `<filename>.json` (its metadata) into `dir`,
/// each atomically (the caller fsyncs the directory). Also used by `queue export`.
pub fn write_frame(dir: &Path, meta: &FrameMeta, image: &[u8]) -> std::io::Result<()> {
    let json = json!({
        "filename": meta.filename,
        "mime": meta.mime,
        "camera": meta.camera,
        "groups": meta.groups,
        "customMetadata": meta.custom,
    });
    let json = serde_json::to_vec_pretty(&json).unwrap_or_default();
    write_atomic(dir, &meta.filename, image)
        .and_then(|_| write_atomic(dir, &format!("{}.json", meta.filename), &json))
}
