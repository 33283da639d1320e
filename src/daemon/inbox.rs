//! The inbox: how frames reach a running daemon from outside it — `edgecap enqueue` while
//! the daemon holds the queue, or any program on the device (a detector, a script).
//!
//! ```text
//! <queue>/inbox/             created by the daemon, mode 2770 (its group may write)
//!   <name>.jpg | .jpeg       an image to queue; it appears by rename(2), so it is whole
//!   <name>.jpg.json          optional sidecar (Sidecar), renamed into place BEFORE the image
//!   .<anything>              ignored: files still being written
//! ```
//!
//! The daemon's taker lists the folder every [`POLL`] (at once again after a round that
//! took something), reads each image and its sidecar, names the frame like a captured one
//! (camera from the sidecar, else the first camera; a run id of its own), commits up to
//! [`GROUP`] of them in one group (one fsync round), notes their digests, and only then
//! deletes them from the inbox. A crash between the commit and the delete leaves an item
//! that is already queued: its digest is then known and the item is deleted, not queued
//! again (an item sent with `allow_duplicates` is queued again: the one case that can
//! repeat a frame). An item that cannot be queued (not a JPEG, a sidecar that does not
//! parse, an unknown camera) is moved to `<queue>/quarantine/` with a warning; a full
//! queue leaves items where they are until there is room. Nothing is deleted unqueued.
//!
//! Why a folder and not a socket: a writer needs nothing but `rename(2)` (any language, a
//! shell's `mv`), items wait safely while the daemon restarts or is stopped (the next
//! start takes them), and the kernel's rename is the whole protocol — there is no
//! connection state to get wrong. The cost is latency of up to [`POLL`], which a data
//! collector does not notice. `edgecap enqueue` writes its items as hidden files, makes
//! them durable with one `syncfs(2)` per group, renames them in and syncs the folder, so
//! the command returns only when the hand-over survives a power cut.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::enqueue::read_jpeg_file;
use crate::capture::Stop;
use crate::config::MetaValue;
use crate::frame::{CameraTable, CapturedFrame, Namer, new_run_id};
use crate::queue::{AddError, Digest, Queue, digest};

/// The inbox folder's name inside the queue directory.
pub const INBOX: &str = "inbox";
/// How often the taker looks at an empty inbox.
pub const POLL: Duration = Duration::from_millis(200);
/// Items per commit group.
pub const GROUP: usize = 256;
/// How long a full queue (or a failing disk) holds the taker back.
const HOLD_BACK: Duration = Duration::from_secs(5);

/// The inbox folder of the queue in `queue_dir`.
pub fn inbox_dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join(INBOX)
}

/// What may come with an image (`<image>.json`); every field optional.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// The configured camera the frame counts as (default: the first camera).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// Custom metadata added to the camera's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, MetaValue>,
    /// Capture time, Unix milliseconds (default: the image file's modification time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_ms: Option<i64>,
    /// Where the image came from (kept as `source_file` in the metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    /// Queue the image even when the same content was enqueued before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_duplicates: bool,
}

fn is_image(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
}

fn sidecar_of(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".json");
    PathBuf::from(s)
}

// ------------------------------------------------------------------ writing (enqueue)

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

/// Hands `files` to the daemon running on the queue in `queue_dir` as frames of `camera`:
/// written hidden, made durable with one `syncfs` per [`GROUP`], renamed in (sidecar
/// first), the inbox synced. Files whose content was enqueued before are left out unless
/// `allow_duplicates`.
pub fn hand_over(
    queue_dir: &Path,
    camera: &str,
    files: &[PathBuf],
    allow_duplicates: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<HandedOver, HandOverError> {
    let inbox = inbox_dir(queue_dir);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HandOverError::Inbox { path, source }
    };
    let dir = std::fs::File::open(&inbox).map_err(err(&inbox))?;
    let mut seen = crate::queue::read_digest_log(queue_dir);
    let prefix = format!("enqueue-{}", new_run_id());
    let mut out = HandedOver {
        inbox: inbox.clone(),
        ..HandedOver::default()
    };
    let mut n = 0u64;
    for chunk in files.chunks(GROUP) {
        // (hidden name, final name) of the sidecar and the image of each item.
        let mut staged: Vec<[(PathBuf, PathBuf); 2]> = Vec::new();
        for path in chunk {
            n += 1;
            if let Some(p) = progress {
                p(n);
            }
            let (jpeg, mtime) = match read_jpeg_file(path) {
                Ok(f) => (f.jpeg, f.mtime),
                Err(why) => {
                    out.skipped.push((path.clone(), why));
                    continue;
                }
            };
            if !allow_duplicates && !seen.insert(digest(&jpeg)) {
                out.duplicates.push(path.clone());
                continue;
            }
            let name = format!("{prefix}-{n:07}.jpg");
            let car = Sidecar {
                camera: Some(camera.to_string()),
                captured_ms: Some(crate::frame::unix_ms(mtime)),
                source_file: Some(path.display().to_string()),
                allow_duplicates,
                ..Sidecar::default()
            };
            let json = serde_json::to_vec(&car).unwrap_or_default();
            let image = inbox.join(&name);
            let items = [
                (inbox.join(format!(".{name}.json")), sidecar_of(&image)),
                (inbox.join(format!(".{name}")), image),
            ];
            for ((hidden, _), bytes) in items.iter().zip([&json[..], &jpeg[..]]) {
                std::fs::File::create(hidden)
                    .and_then(|mut f| f.write_all(bytes))
                    .map_err(err(hidden))?;
            }
            out.bytes += jpeg.len() as u64;
            staged.push(items);
        }
        // Everything written so far reaches the disk in one call, then appears at once.
        rustix::fs::syncfs(&dir).map_err(|e| HandOverError::Inbox {
            path: inbox.clone(),
            source: e.into(),
        })?;
        for (hidden, name) in staged.iter().flatten() {
            std::fs::rename(hidden, name).map_err(err(name))?;
        }
        dir.sync_all().map_err(err(&inbox))?;
        out.frames += staged.len() as u64;
    }
    Ok(out)
}

// ------------------------------------------------------------------ taking (the daemon)

/// The daemon's side: takes items from the inbox into the queue.
pub struct Taker {
    queue: Arc<Queue>,
    inbox: PathBuf,
    cameras: Arc<CameraTable>,
    namer: Namer,
    /// The digests of enqueued files, read when the inbox has items, dropped when empty.
    seen: Option<HashSet<Digest>>,
    /// Frames taken since the start.
    pub taken: u64,
}

/// One item's fate in a round.
enum Took {
    /// Staged in the group as `seq`, with its digest.
    Staged(u64, Digest, Vec<PathBuf>),
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
        })
    }

    /// Takes items until `stop` is set; returns how many frames it took.
    pub fn run(mut self, stop: &Stop) -> u64 {
        info!(inbox = %self.inbox.display(), "taking frames handed over through the inbox");
        loop {
            let wait = match self.round() {
                Ok(0) => POLL,
                Ok(_) => Duration::ZERO,
                Err(why) => {
                    warn!(inbox = %self.inbox.display(), reason = why,
                        "cannot take frames from the inbox now; trying again shortly (they stay there)");
                    HOLD_BACK
                }
            };
            if stop.is_set()
                || (!wait.is_zero() && stop.wait_until(std::time::Instant::now() + wait))
            {
                break;
            }
        }
        self.taken
    }

    /// One round: up to [`GROUP`] items committed; how many were taken.
    pub fn round(&mut self) -> Result<usize, String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.inbox)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| is_image(n))
            .collect();
        if names.is_empty() {
            self.seen = None;
            return Ok(0);
        }
        names.sort();
        names.truncate(GROUP);
        let queue_dir = self.queue.dir().to_path_buf();
        let seen = self
            .seen
            .get_or_insert_with(|| crate::queue::read_digest_log(&queue_dir));
        let mut seen_now: HashSet<Digest> = HashSet::new();
        let mut group = self.queue.group();
        let mut staged = Vec::new();
        let mut done: Vec<PathBuf> = Vec::new();
        let mut later = None;
        for name in names {
            let image = self.inbox.join(&name);
            match take_one(
                &mut self.namer,
                &self.cameras,
                seen,
                &mut seen_now,
                &image,
                |meta, jpeg| group.add(meta, jpeg),
            ) {
                Took::Staged(seq, d, files) => staged.push((seq, d, files)),
                Took::Duplicate(files) => {
                    debug!(file = %image.display(), "inbox item enqueued before (same content); removed");
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
        let committed = group.commit();
        let durable: HashSet<u64> = committed.frames.iter().map(|(s, _)| *s).collect();
        let mut noted = Vec::new();
        for (seq, d, files) in staged {
            if durable.contains(&seq) {
                noted.push(d);
                done.extend(files);
            }
        }
        let taken = noted.len();
        if let Err(e) = self.queue.note_enqueued(&noted) {
            // Without the digests a crash could queue these again: keep the items' deletion
            // anyway (they are committed), and say so.
            warn!(error = %e, "cannot note the inbox items' digests");
        }
        seen.extend(noted);
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

fn take_one(
    namer: &mut Namer,
    cameras: &CameraTable,
    seen: &HashSet<Digest>,
    seen_now: &mut HashSet<Digest>,
    image: &Path,
    mut add: impl FnMut(&crate::frame::FrameMeta, &[u8]) -> Result<u64, AddError>,
) -> Took {
    let car_path = sidecar_of(image);
    let mut files = vec![image.to_path_buf()];
    let car = match std::fs::read(&car_path) {
        Ok(b) => {
            files.push(car_path.clone());
            match serde_json::from_slice::<Sidecar>(&b) {
                Ok(c) => c,
                Err(e) => return Took::Bad(format!("inbox sidecar does not parse: {e}"), files),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar::default(),
        Err(e) => return Took::Later(format!("{}: {e}", car_path.display())),
    };
    let (jpeg, width, height, mtime) = match read_jpeg_file(image) {
        Ok(f) => (f.jpeg, f.width, f.height, f.mtime),
        Err(why) => return Took::Bad(format!("inbox item: {why}"), files),
    };
    let d = digest(&jpeg);
    if !car.allow_duplicates && (seen.contains(&d) || !seen_now.insert(d)) {
        return Took::Duplicate(files);
    }
    let camera = match &car.camera {
        None => 0,
        Some(name) => match (0..)
            .map_while(|i| cameras.get(i))
            .position(|c| &c.name == name)
        {
            Some(i) => i,
            None => {
                return Took::Bad(
                    format!("inbox item names camera {name:?}, which is not in the config"),
                    files,
                );
            }
        },
    };
    let captured_at = car
        .captured_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(mtime, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    let frame = CapturedFrame {
        camera,
        captured_at,
        jpeg,
        width,
        height,
    };
    let Some(mut meta) = namer.peek(&frame) else {
        return Took::Bad("the configuration has no camera".to_string(), files);
    };
    meta.custom.extend(car.metadata);
    meta.custom.insert(
        "source_file".into(),
        MetaValue::Str(
            car.source_file
                .unwrap_or_else(|| image.display().to_string()),
        ),
    );
    meta.custom.insert(
        "source_mtime".into(),
        MetaValue::Str(crate::frame::rfc3339_utc(captured_at)),
    );
    match add(&meta, &frame.jpeg) {
        Ok(seq) => {
            namer.advance(camera);
            Took::Staged(seq, d, files)
        }
        Err(AddError::Full { .. }) => Took::Later("the queue's budget is full".to_string()),
        Err(AddError::Write(e)) => Took::Later(e.to_string()),
    }
}
