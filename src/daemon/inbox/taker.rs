//! The daemon's side of the inbox: [`Taker`] takes images and prepared frames into the
//! queue (the parent module's docs), adopting prepared frames in place where it can.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::arrivals::Arrivals;
use super::{GROUP, HOLD_BACK, Item, POLL, Placeholder, Sidecar, inbox_dir, item, sidecar_of};
use crate::capture::Stop;
use crate::daemon::enqueue::{note_source, read_jpeg_file};
use crate::frame::{CameraTable, CapturedFrame, FrameMeta, Namer, new_run_id};
use crate::ops::health::Beat;
use crate::queue::adopt::{AdoptError, Prepared, read_prepared};
use crate::queue::spool::SpoolError;
use crate::queue::{AddError, Digest, Group, Queue, Seen, digest};

/// The daemon's side: takes items from the inbox into the queue.
pub struct Taker {
    queue: Arc<Queue>,
    inbox: PathBuf,
    cameras: Arc<CameraTable>,
    namer: Namer,
    /// The digests of enqueued files, read when the inbox has items, dropped when empty.
    seen: Option<Seen>,
    /// Frames taken since the start.
    pub taken: u64,
    /// Why the taker is held back, while it is (logged once, not at every try).
    held: Option<String>,
}

/// One item's fate in a round.
enum Took {
    /// Staged in the group as `seq`, with its digest (when known) and the files to
    /// delete once it is committed.
    Staged(u64, Option<Digest>, Vec<PathBuf>),
    /// Already queued (same content): delete it.
    Duplicate(Vec<PathBuf>),
    /// Cannot be queued: quarantine it.
    Bad(String, Vec<PathBuf>),
    /// Not now (the queue is full): leave it.
    Later(String),
}

impl Taker {
    /// Creates the inbox (mode 2770) if needed.
    pub fn new(
        queue: Arc<Queue>,
        device: String,
        cameras: Arc<CameraTable>,
    ) -> std::io::Result<Self> {
        let inbox = inbox_dir(queue.dir());
        if !inbox.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o2770).create(&inbox)?;
            // The umask may have taken the group's bits away.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&inbox, std::fs::Permissions::from_mode(0o2770))?;
        }
        let namer = Namer::new(device, new_run_id(), Arc::clone(&cameras));
        Ok(Self {
            queue,
            inbox,
            cameras,
            namer,
            seen: None,
            taken: 0,
            held: None,
        })
    }

    /// Takes items until `stop` is set; returns how many frames it took.
    /// `beat` is busy around each sweep and round (their reads, writes and fsyncs), so a
    /// round stuck on a disk that stopped answering gets the service restarted by the
    /// watchdog like any other loop's.
    pub fn run(mut self, stop: &Stop, beat: &Beat) -> u64 {
        info!(inbox = %self.inbox.display(), "taking frames handed over through the inbox");
        let arrivals = Arrivals::new(&self.inbox);
        let mut swept: Option<std::time::Instant> = None;
        loop {
            if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                let _busy = beat.busy("looking for abandoned inbox files");
                self.sweep_abandoned();
                swept = Some(std::time::Instant::now());
            }
            #[cfg(feature = "fault-injection")]
            if std::env::var_os("EDGECAP_FAULT_STALL_INBOX").is_some() {
                warn!("fault injection: the inbox loop now hangs");
                let _busy = beat.busy("an injected stall (fault-injection build)");
                while !stop.wait_until(std::time::Instant::now() + Duration::from_millis(200)) {}
                break;
            }
            let round = {
                let _busy = beat.busy("taking frames from the inbox");
                self.round()
            };
            self.note_held(round.as_ref().err());
            let wait = match round {
                Ok(0) => POLL,
                Ok(_) => Duration::ZERO,
                Err(_) => HOLD_BACK,
            };
            let stopped = if wait == POLL {
                arrivals.wait(stop, wait)
            } else {
                !wait.is_zero() && stop.wait_until(std::time::Instant::now() + wait)
            };
            if stop.is_set() || stopped {
                break;
            }
        }
        self.taken
    }

    /// Moves hidden files nobody has written for [`ABANDONED_AFTER`] to quarantine: a
    /// hand-over that was killed or lost power mid-way leaves them, and the taker never
    /// takes a hidden name, so they would fill the disk for good. Quarantined rather than
    /// deleted: one may be someone's only copy.
    fn sweep_abandoned(&self) {
        for path in abandoned(&self.inbox, SystemTime::now(), ABANDONED_AFTER) {
            self.queue.quarantine_foreign(
                &path,
                "a hidden inbox file unchanged for a day (a hand-over interrupted before its rename?)",
            );
        }
    }

    /// Logs a hold-back when it begins or its reason changes (WARN: the items wait, none
    /// is lost), its repeats at DEBUG, and its end.
    fn note_held(&mut self, why: Option<&String>) {
        match (why, &self.held) {
            (Some(why), Some(was)) if why == was => {
                debug!(inbox = %self.inbox.display(), reason = why, "the inbox is still held back");
            }
            (Some(why), _) => {
                warn!(inbox = %self.inbox.display(), reason = why, retry_secs = HOLD_BACK.as_secs(),
                    "cannot take frames from the inbox now; they stay there and are tried again until they can be");
                self.held = Some(why.clone());
            }
            (None, Some(_)) => {
                info!(inbox = %self.inbox.display(), "taking frames from the inbox again");
                self.held = None;
            }
            (None, None) => {}
        }
    }

    /// One round: up to [`GROUP`] items committed; how many were taken.
    pub fn round(&mut self) -> Result<usize, String> {
        let mut names: Vec<(String, Item)> = std::fs::read_dir(&self.inbox)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter_map(|n| item(&n).map(|i| (n, i)))
            .collect();
        if names.is_empty() {
            self.seen = None;
            return Ok(0);
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names.truncate(GROUP);
        let queue_dir = self.queue.dir().to_path_buf();
        let seen = self
            .seen
            .get_or_insert_with(|| crate::queue::read_digest_log(&queue_dir));
        let mut taking = Taking {
            adopt: self.queue.can_adopt_from(&self.inbox),
            namer: &mut self.namer,
            cameras: &self.cameras,
            seen,
            seen_now: HashSet::new(),
            group: self.queue.group_from_files(),
        };
        let mut staged = Vec::new();
        let mut done: Vec<PathBuf> = Vec::new();
        let mut later = None;
        let mut adopted = false;
        for (name, kind) in names {
            let path = self.inbox.join(&name);
            let took = match kind {
                Item::Image => taking.image(&path),
                Item::Prepared { digest, again } => {
                    adopted = true;
                    taking.prepared(&path, digest, again)
                }
            };
            match took {
                Took::Staged(seq, d, files) => staged.push((seq, d, files)),
                Took::Duplicate(files) => {
                    debug!(file = %path.display(), "inbox item enqueued before (same content); removed");
                    done.extend(files);
                }
                Took::Bad(why, files) => {
                    for f in files {
                        self.queue.quarantine_foreign(&f, &why);
                    }
                }
                Took::Later(why) => {
                    later = Some(why);
                    break;
                }
            }
        }
        let committed = taking.group.commit();
        if adopted {
            // The adopted items left the inbox by rename: make that durable here too,
            // not only in the spool, so that no filesystem shows them in both after a
            // power cut (they would be queued twice).
            if let Err(e) = crate::queue::spool::sync_dir(&self.inbox) {
                warn!(inbox = %self.inbox.display(), error = %e, "cannot fsync the inbox folder");
            }
        }
        let durable: HashSet<u64> = committed.frames.iter().map(|(s, _)| *s).collect();
        let mut noted = Vec::new();
        let mut taken = 0;
        for (seq, d, files) in staged {
            if durable.contains(&seq) {
                taken += 1;
                noted.extend(d);
                done.extend(files);
            }
        }
        if let Err(e) = self.queue.note_enqueued(&noted) {
            // Without the digests a crash could queue these again: keep the items' deletion
            // anyway (they are committed), and say so.
            warn!(error = %e, "cannot note the inbox items' digests");
        }
        taking.seen.extend(noted);
        for f in &done {
            if let Err(e) = std::fs::remove_file(f) {
                warn!(file = %f.display(), error = %e, "cannot remove a taken inbox item");
            }
        }
        self.taken += taken as u64;
        if taken > 0 {
            debug!(frames = taken, "took frames from the inbox");
        }
        match later {
            Some(why) if taken == 0 => Err(why),
            _ => Ok(taken.max(done.len())),
        }
    }
}

/// How a prepared frame is taken.
enum Source {
    /// In place: opened for writing.
    Adopt(Prepared),
    /// By a copy of its image, read.
    Copy(Vec<u8>),
}

/// One round's work in progress: the namer, what is known to be queued, and the group.
struct Taking<'a, 'q> {
    /// Whether prepared frames can be adopted (the inbox is on the spool's filesystem:
    /// a rename between two fails); copied when not.
    adopt: bool,
    namer: &'a mut Namer,
    cameras: &'a CameraTable,
    seen: &'a mut Seen,
    seen_now: HashSet<Digest>,
    group: Group<'q>,
}

impl Taking<'_, '_> {
    /// Whether content `d` (with its `bytes` when read) was queued before (or earlier in
    /// this round): unless the item asks to be queued `again`, it is then a duplicate.
    fn duplicate(&mut self, d: &Digest, bytes: Option<&[u8]>, again: bool) -> bool {
        !again && (self.seen.known(d, bytes) || !self.seen_now.insert(*d))
    }

    /// A JPEG image (and its sidecar): read, named, copied into the group.
    fn image(&mut self, image: &Path) -> Took {
        let car_path = sidecar_of(image);
        let mut files = vec![image.to_path_buf()];
        let car = match std::fs::read(&car_path) {
            Ok(b) => {
                files.push(car_path.clone());
                match serde_json::from_slice::<Sidecar>(&b) {
                    Ok(c) => c,
                    Err(e) => {
                        return Took::Bad(format!("inbox sidecar does not parse: {e}"), files);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar::default(),
            Err(e) => return Took::Later(format!("{}: {e}", car_path.display())),
        };
        let f = match read_jpeg_file(image) {
            Ok(f) => f,
            Err(why) => return Took::Bad(format!("inbox item: {why}"), files),
        };
        let d = digest(&f.jpeg);
        if self.duplicate(&d, Some(&f.jpeg), car.allow_duplicates) {
            return Took::Duplicate(files);
        }
        let (meta, camera) = match self.name(car, f.width, f.height, f.mtime, image) {
            Ok(x) => x,
            Err(why) => return Took::Bad(why, files),
        };
        match self.group.add(&meta, &f.jpeg) {
            Ok(seq) => {
                self.namer.advance(camera);
                Took::Staged(seq, Some(d), files)
            }
            Err(e) => later(&e),
        }
    }

    /// A prepared frame: named, then adopted in place (nothing left to delete once it is
    /// committed), or copied when it cannot be.
    fn prepared(&mut self, path: &Path, d: Option<Digest>, again: bool) -> Took {
        let files = vec![path.to_path_buf()];
        if d.is_some_and(|d| self.duplicate(&d, None, again)) {
            return Took::Duplicate(files);
        }
        let (source, placeholder) = match self.adopt.then(|| Prepared::open(path)) {
            Some(Ok(item)) => {
                let meta = item.meta().to_vec();
                (Source::Adopt(item), meta)
            }
            Some(Err(e)) if !permission_denied(&e) => return unreadable(e, files),
            // Not on the spool's filesystem, or not writable for the daemon: copy it, its
            // image read (and its checksum verified) once, here.
            _ => match read_prepared(path) {
                Ok((meta, image)) => (Source::Copy(image), meta),
                Err(e) => return unreadable(e, files),
            },
        };
        let (meta, camera) = match serde_json::from_slice::<Placeholder>(&placeholder) {
            Ok(p) => {
                let mtime = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .unwrap_or_else(|_| SystemTime::now());
                match self.name(p.sidecar, p.width, p.height, mtime, path) {
                    Ok((meta, camera)) => (meta, Some(camera)),
                    Err(why) => return Took::Bad(why, files),
                }
            }
            // Stamped by a daemon that stopped before the rename: its metadata stands, once
            // it is seen to be what a daemon writes (any writer of the inbox could have
            // put it there, and a sink writes files by the frame's name).
            Err(_) => match serde_json::from_slice::<FrameMeta>(&placeholder) {
                Ok(meta) => match self.stamped_by_a_daemon(&meta) {
                    Ok(()) => (meta, None),
                    Err(why) => return Took::Bad(why, files),
                },
                Err(e) => {
                    return Took::Bad(format!("inbox frame's metadata does not parse: {e}"), files);
                }
            },
        };
        let added = match source {
            Source::Adopt(item) => match self.group.adopt(item, &meta) {
                Ok(seq) => Ok((seq, Vec::new())),
                Err(AdoptError::Add(e)) => Err(e),
                Err(e @ AdoptError::NoRoom { .. }) => {
                    debug!(file = %path.display(), reason = %e, "copying an inbox frame instead of adopting it");
                    read_prepared(path)
                        .map_err(AddError::from)
                        .and_then(|(_, image)| self.group.add(&meta, &image))
                        .map(|seq| (seq, files.clone()))
                }
            },
            Source::Copy(image) => self
                .group
                .add(&meta, &image)
                .map(|seq| (seq, files.clone())),
        };
        match added {
            Ok((seq, left)) => {
                if let Some(c) = camera {
                    self.namer.advance(c);
                }
                Took::Staged(seq, d, left)
            }
            Err(AddError::Write(e @ SpoolError::Corrupt { .. })) => {
                Took::Bad(format!("inbox frame: {e}"), files)
            }
            Err(e) => later(&e),
        }
    }

    /// Whether `meta`, found in a prepared frame instead of a placeholder, is what a
    /// daemon names: a plain file name (no folder, not hidden) of a configured camera.
    fn stamped_by_a_daemon(&self, meta: &FrameMeta) -> Result<(), String> {
        let name = &meta.filename;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && name.len() <= 255;
        if !plain {
            return Err(format!(
                "inbox frame's metadata names the file {name:?}, which is not a plain file name"
            ));
        }
        let known = (0..)
            .map_while(|i| self.cameras.get(i))
            .any(|c| c.name == meta.camera);
        if !known {
            return Err(format!(
                "inbox frame's metadata names camera {:?}, which is not in the config",
                meta.camera
            ));
        }
        Ok(())
    }

    /// The metadata of an item described by `car`, and its camera's slot.
    fn name(
        &mut self,
        car: Sidecar,
        width: u32,
        height: u32,
        mtime: SystemTime,
        path: &Path,
    ) -> Result<(FrameMeta, usize), String> {
        let camera = match &car.camera {
            None => 0,
            Some(name) => (0..)
                .map_while(|i| self.cameras.get(i))
                .position(|c| &c.name == name)
                .ok_or_else(|| {
                    format!("inbox item names camera {name:?}, which is not in the config")
                })?,
        };
        let captured_at = car
            .captured_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(mtime, |ms| UNIX_EPOCH + Duration::from_millis(ms));
        let frame = CapturedFrame {
            camera,
            captured_at,
            jpeg: Vec::new(),
            width,
            height,
        };
        let mut meta = self
            .namer
            .peek(&frame)
            .ok_or_else(|| "the configuration has no camera".to_string())?;
        meta.custom.extend(car.metadata);
        let source_file = car
            .source_file
            .unwrap_or_else(|| path.display().to_string());
        note_source(&mut meta, source_file, captured_at);
        Ok((meta, camera))
    }
}

/// How long a hidden inbox file may go unchanged before it counts as abandoned. A day:
/// far longer than any writer takes between writing a file and renaming it.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the inbox is looked through for abandoned files.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The hidden files in `inbox` last modified more than `after` before `now`.
fn abandoned(inbox: &Path, now: SystemTime, after: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age > after))
        })
        .map(|e| e.path())
        .collect()
}

/// A prepared frame that cannot be read: quarantined when it is not one, left for later
/// when reading failed.
fn unreadable(e: SpoolError, files: Vec<PathBuf>) -> Took {
    match e {
        SpoolError::Corrupt { .. } => Took::Bad(format!("inbox frame: {e}"), files),
        SpoolError::Io { .. } => Took::Later(e.to_string()),
    }
}

/// Whether opening a prepared frame failed for want of the right to write it.
fn permission_denied(e: &SpoolError) -> bool {
    matches!(e, SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

/// An item the queue did not take now.
fn later(e: &AddError) -> Took {
    match e {
        AddError::Full { .. } => Took::Later("the queue's budget is full".to_string()),
        AddError::Write(e) => Took::Later(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn only_hidden_files_unchanged_for_longer_than_the_limit_are_abandoned() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let file = |name: &str, age: Duration| {
            let f = std::fs::File::create(inbox.join(name)).unwrap();
            f.set_modified(now - age).unwrap();
        };
        file(".enqueue-old.frame", day + Duration::from_secs(60));
        file(".det-0001.jpg", day * 3);
        file(".enqueue-new.frame", Duration::from_secs(600)); // being written
        file("item.jpg", day * 3); // not hidden: the taker's
        std::fs::create_dir(inbox.join(".hidden-dir")).unwrap();
        let mut found: Vec<String> = abandoned(inbox, now, day)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, [".det-0001.jpg", ".enqueue-old.frame"]);
    }
}
