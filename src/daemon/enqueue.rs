//! `edgecap enqueue`: existing JPEG files into the queue, as frames of a configured camera
//! (the `add_path` of the platform SDKs). The files are copied into spool files, committed
//! in groups like captured frames, named by the camera's template with a run of their own,
//! and carry the camera's metadata and groups; the daemon uploads them like any frame.
//! The capture time is the file's modification time.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::config::Resolved;
use crate::frame::{CapturedFrame, Namer, new_run_id};
use crate::queue::{AddError, Queue, QueueError};

/// Frames per commit group (one fsync round each).
const GROUP: usize = 256;

/// What `enqueue` did.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Frames committed.
    pub frames: u64,
    /// Their image bytes.
    pub bytes: u64,
    /// Files skipped (not a JPEG, unreadable, refused by the budget): (path, why).
    pub skipped: Vec<(PathBuf, String)>,
    /// The run id the frames were named with.
    pub run_id: String,
}

/// Why `enqueue` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The queue could not be opened (a running daemon holds it, or it is broken).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A path given on the command line cannot be read.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The JPEG files `paths` name: files as given, folders' `*.jpg`/`*.jpeg` sorted by name.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, EnqueueError> {
    let mut out = Vec::new();
    for p in paths {
        let err = |source| EnqueueError::Path {
            path: p.clone(),
            source,
        };
        if p.metadata().map_err(err)?.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(err)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    f.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")
                    })
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Commits `files` to the queue of `config` as frames of camera number `camera`.
pub fn enqueue(
    resolved: &Resolved,
    camera: usize,
    files: &[PathBuf],
) -> Result<Enqueued, EnqueueError> {
    let config = &resolved.config;
    let (queue, _) = Queue::open(&config.queue)?;
    let run_id = new_run_id();
    let mut namer = Namer::new(
        resolved.device_id.clone(),
        run_id.clone(),
        crate::frame::CameraTable::new(&resolved.device_id, &config.cameras),
    );
    let mut done = Enqueued {
        run_id,
        ..Enqueued::default()
    };
    for chunk in files.chunks(GROUP) {
        let mut group = queue.group();
        for path in chunk {
            match read_jpeg(path, camera) {
                Ok(frame) => {
                    let Some(meta) = namer.peek(&frame) else {
                        done.skipped
                            .push((path.clone(), "camera not in the config".into()));
                        continue;
                    };
                    match group.add(&meta, &frame.jpeg) {
                        Ok(_) => {
                            namer.advance(camera);
                            done.bytes += frame.jpeg.len() as u64;
                        }
                        Err(AddError::Full { .. }) => done
                            .skipped
                            .push((path.clone(), "the queue's budget is full".into())),
                        Err(AddError::Write(e)) => done.skipped.push((path.clone(), e.to_string())),
                    }
                }
                Err(why) => done.skipped.push((path.clone(), why)),
            }
        }
        let committed = group.commit();
        done.frames += committed.frames.len() as u64;
        if committed.lost > 0 {
            warn!(lost = committed.lost, "frames lost while syncing a group");
        }
    }
    Ok(done)
}

fn read_jpeg(path: &Path, camera: usize) -> Result<CapturedFrame, String> {
    let jpeg = std::fs::read(path).map_err(|e| e.to_string())?;
    let (width, height) = crate::encode::jpeg_dimensions(&jpeg)
        .ok_or_else(|| "not a JPEG (no SOF marker)".to_string())?;
    let captured_at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    Ok(CapturedFrame {
        camera,
        captured_at,
        jpeg,
        width,
        height,
    })
}
