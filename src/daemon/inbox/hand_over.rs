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
/// `syncfs` per [`GROUP`], renamed in, the inbox synced; a group is synced while the next
/// is written (end to end, 1000 × 108 KB on a journaled ext4: `enqueue` returned after
/// 0.17–0.19 s instead of 0.23–0.36 s). Files whose content was enqueued
/// before are left out unless `allow_duplicates`. When it fails, the files it wrote but
/// did not rename in are removed again (what was renamed in stands).
pub fn hand_over(
    config: &Config,
    camera: usize,
    files: &[PathBuf],
    allow_duplicates: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<HandedOver, HandOverError> {
    let prefix = format!("enqueue-{}", new_run_id());
    hand_over_named(&prefix, config, camera, files, allow_duplicates, progress)
}

/// Removes the hidden files of the hand-over named `prefix` left in `inbox`: written but
/// never renamed in, of no use to anyone, and never taken by the daemon (it ignores
/// hidden names). Best effort: what cannot be removed is left.
fn remove_unpublished(inbox: &Path, prefix: &str) {
    let hidden = format!(".{prefix}-");
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&hidden) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// [`hand_over`] with its items named after `prefix`.
fn hand_over_named(
    prefix: &str,
    config: &Config,
    camera: usize,
    files: &[PathBuf],
    allow_duplicates: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<HandedOver, HandOverError> {
    let queue_dir = &config.queue.dir;
    let inbox = inbox_dir(queue_dir);
    let dir = std::fs::File::open(&inbox).map_err(inbox_error(&inbox))?;
    let camera_name = config
        .cameras
        .get(camera)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let base_room = MetaRoom::new(config, camera);
    let mut seen = crate::queue::read_digest_log(queue_dir);
    let mut out = HandedOver {
        inbox: inbox.clone(),
        ..HandedOver::default()
    };
    let mut n = 0u64;
    // Each group is made durable and renamed in by a second thread while this one writes
    // the next: the disk works while files are read, hashed and written (the group's
    // `syncfs` also starts the writeback of what the next one wrote so far).
    let written = std::thread::scope(|scope| {
        let (to_sync, staged_groups) = std::sync::mpsc::sync_channel::<Vec<Staged>>(1);
        let syncer = scope.spawn(|| publish_groups(&dir, &inbox, staged_groups));
        for chunk in files.chunks(GROUP) {
            let mut staged: Vec<Staged> = Vec::new();
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
                if let Err(e) = write_prepared_unsynced(&hidden, &json, room, &f.jpeg) {
                    drop(to_sync);
                    // What was handed over before this file stands; the error is this one.
                    let _ = syncer.join();
                    return Err(HandOverError::Inbox {
                        path: hidden,
                        source: std::io::Error::other(e.to_string()),
                    });
                }
                staged.push(Staged {
                    hidden,
                    name: inbox.join(name),
                    bytes: f.jpeg.len() as u64,
                });
            }
            if to_sync.send(staged).is_err() {
                // The syncing thread stopped on an error: it says which.
                break;
            }
        }
        drop(to_sync);
        let (frames, bytes) = match syncer.join() {
            Ok(r) => r?,
            Err(_) => {
                return Err(HandOverError::Inbox {
                    path: inbox.clone(),
                    source: std::io::Error::other("the thread syncing the inbox panicked"),
                });
            }
        };
        out.frames = frames;
        out.bytes = bytes;
        Ok(())
    });
    if written.is_err() {
        // Every file is written inside the scope: what it wrote but did not rename in
        // goes (what was renamed in stands).
        remove_unpublished(&inbox, prefix);
    }
    written.map(|()| out)
}

/// The error of an I/O call on `path` (the inbox or a file in it).
fn inbox_error(path: &Path) -> impl FnOnce(std::io::Error) -> HandOverError {
    let path = path.to_path_buf();
    move |source| HandOverError::Inbox { path, source }
}

/// A prepared frame written under its hidden name, waiting for its group's sync.
struct Staged {
    hidden: PathBuf,
    name: PathBuf,
    bytes: u64,
}

/// Makes each group from `groups` durable (one `syncfs` of the inbox's filesystem), then
/// renames its items in and syncs the folder: the items appear only once they are safe.
/// The frames and image bytes handed over, or the first error (the groups after it stay
/// hidden, and are not counted).
fn publish_groups(
    dir: &std::fs::File,
    inbox: &Path,
    groups: std::sync::mpsc::Receiver<Vec<Staged>>,
) -> Result<(u64, u64), HandOverError> {
    let (mut frames, mut bytes) = (0u64, 0u64);
    for staged in groups {
        // Everything written so far reaches the disk in one call, then appears at once.
        rustix::fs::syncfs(dir).map_err(|e| inbox_error(inbox)(e.into()))?;
        for s in &staged {
            std::fs::rename(&s.hidden, &s.name).map_err(inbox_error(&s.name))?;
        }
        dir.sync_all().map_err(inbox_error(inbox))?;
        frames += staged.len() as u64;
        bytes += staged.iter().map(|s| s.bytes).sum::<u64>();
    }
    Ok((frames, bytes))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn staged(inbox: &Path, name: &str, write: bool) -> Staged {
        let hidden = inbox.join(format!(".{name}"));
        if write {
            std::fs::write(&hidden, name).unwrap();
        }
        Staged {
            hidden,
            name: inbox.join(name),
            bytes: name.len() as u64,
        }
    }

    #[test]
    fn groups_appear_in_order_and_the_first_failure_stops_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path();
        let dir = std::fs::File::open(inbox).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(vec![staged(inbox, "a", true), staged(inbox, "bb", true)])
            .unwrap();
        // A group whose file vanished: its rename fails.
        tx.send(vec![staged(inbox, "gone", false)]).unwrap();
        tx.send(vec![staged(inbox, "c", true)]).unwrap();
        drop(tx);
        let err = publish_groups(&dir, inbox, rx).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
        assert!(inbox.join("a").exists() && inbox.join("bb").exists());
        // The group after the failure stays hidden (never seen by the daemon).
        assert!(!inbox.join("c").exists() && inbox.join(".c").exists());

        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send(vec![staged(inbox, "d", true)]).unwrap();
        drop(tx);
        assert_eq!(publish_groups(&dir, inbox, rx).unwrap(), (1, 1));
        assert!(inbox.join("d").exists());
    }

    #[test]
    fn a_failed_hand_over_takes_its_hidden_files_away_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path();
        for name in [
            ".enqueue-abc-0000001.x.frame", // ours, never renamed in
            ".enqueue-abc-0000002.x.frame", // ours
            "enqueue-abc-0000000.x.frame",  // ours, renamed in: it stands
            ".enqueue-abd-0000001.x.frame", // another hand-over's, still being written
            ".det-0001.jpg",                // another program's
        ] {
            std::fs::write(inbox.join(name), b"x").unwrap();
        }
        remove_unpublished(inbox, "enqueue-abc");
        let mut left: Vec<String> = std::fs::read_dir(inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".det-0001.jpg",
                ".enqueue-abd-0000001.x.frame",
                "enqueue-abc-0000000.x.frame"
            ]
        );
    }

    /// A hand-over whose second group cannot be renamed in (a folder is in the way of
    /// one of its names): the first group stands, and the files written after it are
    /// taken away, not left hidden in the inbox for good.
    #[test]
    fn a_hand_over_that_fails_leaves_no_hidden_files_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = tmp.path().join("queue");
        let inbox = inbox_dir(&queue);
        std::fs::create_dir_all(&inbox).unwrap();
        let toml = format!(
            "[[camera]]\nname = \"cam0\"\nfps = 1.0\n[camera.source]\ntype = \"test_pattern\"\n\
             [queue]\ndir = \"{}\"\n[upload]\nsink = \"directory\"\npath = \"{}\"\n",
            queue.display(),
            tmp.path().join("out").display()
        );
        let config_path = tmp.path().join("edgecap.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = crate::config::load(&config_path).unwrap();
        let mut files = Vec::new();
        let mut blocked = None;
        for i in 0..GROUP + 10 {
            // Distinct content: the number's bits as black or white 8x8 blocks.
            let img = image::RgbImage::from_fn(80, 8, |x, _| {
                let v = if (i >> (x / 8)) & 1 == 1 { 255 } else { 0 };
                image::Rgb([v, v, v])
            });
            let mut jpeg = std::io::Cursor::new(Vec::new());
            img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
            let path = tmp.path().join(format!("f{i:04}.jpg"));
            std::fs::write(&path, jpeg.get_ref()).unwrap();
            files.push(path);
            if i == GROUP + 3 {
                // The name this file will have in the inbox, taken by a folder with a
                // file in it: its rename fails.
                let name = prepared_name(
                    &format!("enqueue-test-{:07}", i + 1),
                    &crate::queue::digest(jpeg.get_ref()),
                    false,
                );
                std::fs::create_dir(inbox.join(&name)).unwrap();
                std::fs::write(inbox.join(&name).join("x"), b"x").unwrap();
                blocked = Some(name);
            }
        }
        let err = hand_over_named("enqueue-test", &config, 0, &files, false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(blocked.as_deref().unwrap()), "{err}");
        let names: Vec<String> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let hidden: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
        assert!(hidden.is_empty(), "{hidden:?}");
        // What was renamed in before the failure stands: the first group, and the three
        // files of the second renamed before the one in the way (synced with their group).
        let published = names.iter().filter(|n| n.ends_with(".frame")).count();
        assert_eq!(published, GROUP + 3 + 1, "and the folder in the way");
    }
}
