//! `edgecap enqueue`: existing JPEG files into the queue, as frames of a configured camera
//! (the `add_path` of the platform SDKs). The files are copied into spool files, committed
//! in groups like captured frames, named by the camera's template with a run of their own,
//! and carry the camera's metadata and groups plus `source_file` (the path) and
//! `source_mtime`; the daemon uploads them like any frame. The capture time is the file's
//! modification time. A file whose content (its BLAKE3 digest) was enqueued before, queued or
//! delivered, is skipped and counted unless duplicates are allowed
//! ([`crate::queue::Queue::enqueued_digests`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::warn;

use crate::config::{MetaValue, Resolved};
use crate::frame::{CapturedFrame, FrameMeta, Namer, new_run_id};
use crate::queue::{AddError, Digest, Queue, QueueError, digest};

/// Frames per commit group (one fsync round each).
const GROUP: usize = 256;

/// What `enqueue` did.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Frames committed.
    pub frames: u64,
    /// Their image bytes.
    pub bytes: u64,
    /// Files skipped (not a JPEG, empty, unreadable, refused by the budget): (path, why).
    pub skipped: Vec<(PathBuf, String)>,
    /// Files skipped because the same content was enqueued before.
    pub duplicates: Vec<PathBuf>,
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

/// The files `paths` name, and the ones left out.
#[derive(Debug, Default)]
pub struct Collected {
    /// Files to enqueue: files as given, folders' `*.jpg`/`*.jpeg` sorted by path.
    pub files: Vec<PathBuf>,
    /// Files in the folders left out because of their extension.
    pub other: Vec<PathBuf>,
}

/// The JPEG files `paths` name: files as given; in folders, `*.jpg`/`*.jpeg` (any case),
/// sorted by path, descending into subfolders when `recursive`.
pub fn collect(paths: &[PathBuf], recursive: bool) -> Result<Collected, EnqueueError> {
    let mut out = Collected::default();
    for p in paths {
        let err = |source| EnqueueError::Path {
            path: p.clone(),
            source,
        };
        if !p.metadata().map_err(err)?.is_dir() {
            out.files.push(p.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut todo = vec![p.clone()];
        while let Some(dir) = todo.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| EnqueueError::Path {
                path: dir.clone(),
                source,
            })?;
            for e in entries.filter_map(Result::ok) {
                let f = e.path();
                if f.is_dir() {
                    if recursive {
                        todo.push(f);
                    }
                    continue;
                }
                let jpeg = f.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")
                });
                if jpeg {
                    found.push(f);
                } else {
                    out.other.push(f);
                }
            }
        }
        found.sort();
        out.files.extend(found);
    }
    out.other.sort();
    Ok(out)
}

/// How `enqueue` works.
#[derive(Default)]
pub struct Options<'a> {
    /// Enqueue a file even when the same content was enqueued before.
    pub allow_duplicates: bool,
    /// Called after each file with the number of files done.
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// Commits `files` to the queue of `config` as frames of camera number `camera`, each with
/// `source_file` and `source_mtime` in its metadata. A file whose content was enqueued
/// before is skipped (counted in `duplicates`) unless `allow_duplicates`.
pub fn enqueue(
    resolved: &Resolved,
    camera: usize,
    files: &[PathBuf],
    opts: &Options<'_>,
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
    let mut seen = queue.enqueued_digests();
    let mut n = 0u64;
    for chunk in files.chunks(GROUP) {
        let mut group = queue.group_from_files();
        let mut digests: Vec<(u64, Digest, &PathBuf)> = Vec::new();
        for path in chunk {
            n += 1;
            if let Some(p) = opts.progress {
                p(n);
            }
            let (frame, d) = match read_jpeg(path, camera) {
                Ok(x) => x,
                Err(why) => {
                    done.skipped.push((path.clone(), why));
                    continue;
                }
            };
            if !opts.allow_duplicates && !seen.insert(d, Some(&frame.jpeg)) {
                done.duplicates.push(path.clone());
                continue;
            }
            let Some(mut meta) = namer.peek(&frame) else {
                done.skipped
                    .push((path.clone(), "camera not in the config".into()));
                continue;
            };
            note_source(&mut meta, path.display().to_string(), frame.captured_at);
            match group.add(&meta, &frame.jpeg) {
                Ok(seq) => {
                    namer.advance(camera);
                    done.bytes += frame.jpeg.len() as u64;
                    digests.push((seq, d, path));
                }
                Err(AddError::Full { .. }) => done
                    .skipped
                    .push((path.clone(), "the queue's budget is full".into())),
                Err(AddError::Write(e)) => done.skipped.push((path.clone(), e.to_string())),
            }
        }
        let committed = group.commit();
        done.frames += committed.frames.len() as u64;
        let durable: std::collections::HashSet<u64> =
            committed.frames.iter().map(|(seq, _)| *seq).collect();
        let mut noted: Vec<Digest> = Vec::with_capacity(digests.len());
        for (seq, d, path) in digests {
            if durable.contains(&seq) {
                noted.push(d);
            } else {
                // Its spool file could not be synced or renamed: not queued, and the file
                // is where it was.
                done.skipped
                    .push((path.clone(), "syncing it to the queue's disk failed".into()));
            }
        }
        if let Err(e) = queue.note_enqueued(&noted) {
            warn!(error = %e, "cannot note the enqueued files' digests; enqueueing them again would not be recognised");
        }
    }
    Ok(done)
}

/// Adds what every enqueued frame carries to its metadata: `source_file` (where it came
/// from) and `source_mtime` (its capture time, the file's modification time by default).
pub(crate) fn note_source(meta: &mut FrameMeta, source_file: String, captured_at: SystemTime) {
    meta.custom
        .insert("source_file".into(), MetaValue::Str(source_file));
    meta.custom.insert(
        "source_mtime".into(),
        MetaValue::Str(crate::frame::rfc3339_utc(captured_at)),
    );
}

fn read_jpeg(path: &Path, camera: usize) -> Result<(CapturedFrame, Digest), String> {
    let f = read_jpeg_file(path)?;
    let d = digest(&f.jpeg);
    Ok((
        CapturedFrame {
            camera,
            captured_at: f.mtime,
            jpeg: f.jpeg,
            width: f.width,
            height: f.height,
        },
        d,
    ))
}

/// A JPEG file as read by [`read_jpeg_file`].
pub(crate) struct JpegFile {
    pub(crate) jpeg: Vec<u8>,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Its modification time (now when the filesystem has none).
    pub(crate) mtime: SystemTime,
}

/// Reads a JPEG file, its size (from the SOF marker) and modification time; an empty or
/// non-JPEG file is refused with the reason.
pub(crate) fn read_jpeg_file(path: &Path) -> Result<JpegFile, String> {
    let jpeg = std::fs::read(path).map_err(|e| e.to_string())?;
    if jpeg.is_empty() {
        return Err("empty file".to_string());
    }
    let (width, height) = crate::encode::jpeg_dimensions(&jpeg)
        .ok_or_else(|| "not a JPEG (no SOF marker)".to_string())?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    Ok(JpegFile {
        jpeg,
        width,
        height,
        mtime,
    })
}
