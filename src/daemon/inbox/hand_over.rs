//! The writing side of the inbox: [`hand_over`] puts files into a running daemon's inbox
//! as prepared frames (the parent module's docs), durably, for `edgecap enqueue`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{GROUP, Placeholder, Sidecar, inbox_dir, prepared_name};
use crate::config::Config;
use crate::daemon::enqueue::{note_source, read_jpeg_file};
use crate::frame::{CameraTable, CapturedFrame, Namer, new_run_id};
use crate::queue::adopt::write_prepared_unsynced;
use crate::queue::digest;

/// Why a hand-over failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// The inbox cannot be written.
    #[error(
        "cannot write to the running daemon's inbox {path}: {source} (the inbox belongs to the queue's user and group: run as that user, or join its group)"
    )]
    Inbox {
        /// The inbox or the file in it.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a hand-over did.
#[derive(Debug, Default)]
pub struct HandedOver {
    /// Images now in the inbox (durably).
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files left out (unreadable, not a JPEG): (path, why).
    pub skipped: Vec<(PathBuf, String)>,
    /// Files left out because the same content was enqueued before.
    pub duplicates: Vec<PathBuf>,
    /// The inbox they went to.
    pub inbox: PathBuf,
}

/// Hands `files` to the daemon running on the queue of `config` as frames of camera
/// number `camera`: each written hidden as a prepared frame, made durable with one
/// `syncfs` per [`GROUP`], renamed in, the inbox synced. Files whose content was enqueued
/// before are left out unless `allow_duplicates`.
pub fn hand_over(
    config: &Config,
    camera: usize,
    files: &[PathBuf],
    allow_duplicates: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<HandedOver, HandOverError> {
    let queue_dir = &config.queue.dir;
    let inbox = inbox_dir(queue_dir);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HandOverError::Inbox { path, source }
    };
    let dir = std::fs::File::open(&inbox).map_err(err(&inbox))?;
    let camera_name = config
        .cameras
        .get(camera)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let base_room = MetaRoom::new(config, camera);
    let mut seen = crate::queue::read_digest_log(queue_dir);
    let prefix = format!("enqueue-{}", new_run_id());
    let mut out = HandedOver {
        inbox: inbox.clone(),
        ..HandedOver::default()
    };
    let mut n = 0u64;
    for chunk in files.chunks(GROUP) {
        // (hidden name, final name) of each item.
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        for path in chunk {
            n += 1;
            if let Some(p) = progress {
                p(n);
            }
            let f = match read_jpeg_file(path) {
                Ok(f) => f,
                Err(why) => {
                    out.skipped.push((path.clone(), why));
                    continue;
                }
            };
            let d = digest(&f.jpeg);
            if !allow_duplicates && !seen.insert(d, Some(&f.jpeg)) {
                out.duplicates.push(path.clone());
                continue;
            }
            let source_file = path.display().to_string();
            let placeholder = Placeholder {
                sidecar: Sidecar {
                    camera: Some(camera_name.clone()),
                    captured_ms: Some(crate::frame::unix_ms(f.mtime)),
                    source_file: Some(source_file.clone()),
                    ..Sidecar::default()
                },
                width: f.width,
                height: f.height,
            };
            let json = serde_json::to_vec(&placeholder).unwrap_or_default();
            let room = base_room.for_item(&source_file).max(json.len());
            let name = prepared_name(&format!("{prefix}-{n:07}"), &d, allow_duplicates);
            let hidden = inbox.join(format!(".{name}"));
            write_prepared_unsynced(&hidden, &json, room, &f.jpeg).map_err(|e| {
                HandOverError::Inbox {
                    path: hidden.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            out.bytes += f.jpeg.len() as u64;
            staged.push((hidden, inbox.join(name)));
        }
        // Everything written so far reaches the disk in one call, then appears at once.
        rustix::fs::syncfs(&dir).map_err(|e| HandOverError::Inbox {
            path: inbox.clone(),
            source: e.into(),
        })?;
        for (hidden, name) in &staged {
            std::fs::rename(hidden, name).map_err(err(name))?;
        }
        dir.sync_all().map_err(err(&inbox))?;
        out.frames += staged.len() as u64;
    }
    Ok(out)
}

/// How much room a prepared frame leaves for the metadata the daemon will write.
///
/// The daemon's metadata is the camera's (its config's metadata, groups, tags and
/// filename) plus the built-ins and the source file, so it is estimated from this
/// process's view of the same config with the longest device name a host can have, and
/// doubled: a daemon whose config has grown since still fits, and one that outgrew even
/// that copies the frame instead. Rounded up so that header and metadata fill whole
/// 4 KiB blocks (the image then starts on a block).
struct MetaRoom {
    /// The estimated metadata of a frame of this camera, source file left out.
    base: usize,
}

/// The longest host name Linux allows, standing in for the device name.
const DEVICE_STANDIN: usize = 64;
/// The unit the room is rounded up to (with the 36-byte header).
const BLOCK: usize = 4096;

impl MetaRoom {
    fn new(config: &Config, camera: usize) -> Self {
        let device = "x".repeat(DEVICE_STANDIN);
        let table = CameraTable::new(&device, &config.cameras);
        let mut namer = Namer::new(device, new_run_id(), table);
        let frame = CapturedFrame {
            camera,
            captured_at: SystemTime::now(),
            jpeg: Vec::new(),
            width: u32::MAX,
            height: u32::MAX,
        };
        let base = namer.peek(&frame).map_or(0, |mut meta| {
            // The keys the daemon adds, the source file left out (counted per item).
            note_source(&mut meta, String::new(), frame.captured_at);
            serde_json::to_vec(&meta).map_or(0, |j| j.len())
        });
        Self { base }
    }

    /// The room for an item whose source file is `source_file`.
    fn for_item(&self, source_file: &str) -> usize {
        // JSON escaping can double a path's length at most (a few characters take six
        // bytes; paths of those are rare enough to be copied instead).
        let estimate = (self.base + 2 * source_file.len()) * 2;
        let head = crate::queue::spool::HEADER_LEN;
        (head + estimate).div_ceil(BLOCK) * BLOCK - head
    }
}
