//! The durable frame queue: spool files are the truth, a `sled` index keeps order and state.
//!
//! This module owns everything under `[queue] dir`; no other code touches it.
//!
//! # Layout
//!
//! ```text
//! <dir>/lock                     flock'd while a process has the queue open
//! <dir>/spool/<seq:020>.frame    one committed frame per file
//! <dir>/spool/<seq:020>.frame.tmp a frame being written (never counted, removed at open)
//! <dir>/index/                   sled database (the index)
//! <dir>/quarantine/              corrupt or unexpected files, moved aside, never deleted
//! <dir>/reserve                  4 MiB of zeros, given back when the disk fills up
//! ```
//!
//! # A full disk
//!
//! A frame that cannot be written is lost and counted (`dropped_write`); capture goes on.
//! A frame is not even tried when it would leave less than `INDEX_MARGIN_BYTES` free, so
//! sled itself never hits ENOSPC (it stays unusable after an I/O error). If another
//! program fills the disk anyway, the first ENOSPC deletes `reserve`, so that sled can
//! still record the uploads that free space. If the disk is full at start-up and sled cannot open, the reserve is given
//! back and the open retried: a full disk never keeps the daemon from starting and
//! draining (it is not mistaken for a broken index either). The reserve is set aside again
//! at the next start with room to spare.
//!
//! # Spool file format, version 1 (all integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8 | magic `EDGECAPF` |
//! | 8  | 2 | format version = 1 |
//! | 10 | 2 | flags, 0 (reserved) |
//! | 12 | 4 | `meta_len`: length of the metadata JSON |
//! | 16 | 4 | `image_len`: length of the image |
//! | 20 | 4 | CRC-32C of the image bytes (what Nexus gets, before its i32 cast) |
//! | 24 | 4 | CRC-32C of bytes 0..24 followed by the metadata JSON |
//! | 28 | `meta_len` | metadata: [`crate::frame::FrameMeta`] as JSON |
//! | 28 + `meta_len` | `image_len` | the encoded image, exactly as it will be uploaded |
//!
//! A file is valid when its length is exactly `28 + meta_len + image_len`, the magic and
//! version match and the header checksum holds. The image checksum is checked whenever the
//! image is read for upload. Two checksums keep start-up cheap: reconciling reads only
//! headers (an SD card reads ~20–40 MB/s; re-reading a 2 GB backlog at every boot would
//! take a minute), while no image is ever sent without its checksum verified.
//!
//! # Commit protocol (group commit)
//!
//! 1. each frame of a group is written to `<seq>.frame.tmp` as it arrives (no fsync);
//! 2. at the end of the group window every file is `fdatasync`'d, then renamed to
//!    `<seq>.frame`, then the spool directory is fsync'd once;
//! 3. only then are the frames inserted into the index and counted as committed.
//!
//! A crash before step 3 loses at most the frames of the open group, none of which was
//! counted as captured; their `.tmp` files are removed at the next open. Renames happen in
//! sequence order, so a crash leaves a prefix of a group, never a hole. The window
//! (`commit_window_ms`, default 200 ms) exists because an SD card takes 50–75 ms per fsync:
//! one fsync round per frame caps capture near 10 frames/s.
//!
//! # Index (sled)
//!
//! Trees `pending`, `inflight` and `dead`, keyed by the big-endian `seq`, hold small JSON
//! [`Entry`] values (size, groups, attempts, last error); tree `meta` holds the counters.
//! sled is not trusted for durability (it flushes with `sync_file_range`, and it keeps
//! values above ~128 KB in blob files it never fsyncs), so the index only ever holds small
//! values and is rebuilt from the spool files whenever the two disagree. Its page cache is
//! capped by `index_cache_bytes` (sled's default is 1 GiB).
//!
//! # Recovery rules, applied by [`Queue::open`]
//!
//! - `*.tmp` in the spool → removed (never committed);
//! - an index entry without a valid file → dropped from the index, counted;
//! - a valid file without an entry → re-indexed as pending (its index write was lost);
//! - a file that fails a check (truncated, bad magic, bad checksum, bad JSON) → moved to
//!   `quarantine/`, counted, logged; the same happens when an image checksum fails at read;
//! - entries left `inflight` by a crash → pending again, counted as `interrupted` (they may
//!   reach the platform twice; names are stable, so a re-upload replaces);
//! - an index that sled cannot open → moved to `quarantine/index-<ms>`, rebuilt from files;
//! - the next `seq` is above every seq seen in files, index and stored counter.
//!
//! One process opens a queue directory once. sled 0.34 finishes some work after a `Db` is
//! dropped in background threads (it truncates its log file when the last segment is
//! freed), so a second open of the same index *within one process* can read the file while
//! it is being truncated and recover an older state. A new process never sees this: the
//! daemon opens the queue once, `edgecap queue …` runs in its own process, and tests that
//! simulate a restart in-process reopen a copy of the directory. A clean close flushes the
//! index ([`Queue`]'s `Drop`); across processes that state is verified to survive.
//!
//! # Budget
//!
//! `max_frames` and `max_bytes` bound every frame on disk (pending, in flight, dead and the
//! open group). When a new frame does not fit, dead frames go first (the platform refused
//! them), then `on_full` decides: `drop_oldest` deletes the oldest pending frame,
//! `drop_newest` refuses the new one. Frames in flight are never dropped. Every drop is
//! counted and logged.
//!
//! # Delivery
//!
//! At least once. [`Queue::lease`] moves pending frames to `inflight`; [`Queue::ack`]
//! deletes them after the platform accepted them; [`Queue::release`] puts them back after a
//! transient failure; [`Queue::fail`] counts a failure of the frame itself and marks it dead
//! after `max_attempts`. `lease` flushes the index before the frames are sent, and `ack`
//! flushes it before their files are deleted (one flush per batch each), so after a crash
//! `interrupted` counts exactly the frames that may reach the platform twice, and an entry
//! without its file means a file lost outside edgecap.

pub mod spool;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use tracing::{error, info, warn};

use crate::config::{OnFull, QueueConfig};
use crate::frame::FrameMeta;
use spool::SpoolError;

/// Errors opening or using the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A filesystem operation failed.
    #[error("queue: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the queue.
    #[error("queue {path} is in use by another process (a running edgecap?); stop it first")]
    Locked {
        /// The queue directory.
        path: PathBuf,
    },
    /// The index failed.
    #[error("queue index {path}: {message}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// sled's message.
        message: String,
    },
}

/// Why a frame could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The budget is full and the policy refused the frame.
    #[error("queue full ({policy:?}): frame refused")]
    Full {
        /// The policy that refused it.
        policy: OnFull,
    },
    /// Writing failed (disk full, I/O error).
    #[error(transparent)]
    Write(#[from] SpoolError),
}

/// Why a leased frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file was corrupt and has been quarantined.
    #[error("frame {seq} was corrupt and moved to quarantine: {reason}")]
    Quarantined {
        /// The frame.
        seq: u64,
        /// What check failed.
        reason: String,
    },
    /// The file is gone; the entry was dropped.
    #[error("frame {seq}: spool file is missing; index entry dropped")]
    Missing {
        /// The frame.
        seq: u64,
    },
    /// A passing I/O error; the frame stays.
    #[error("frame {seq}: {source}")]
    Io {
        /// The frame.
        seq: u64,
        /// The error.
        source: SpoolError,
    },
}

/// An index value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// File size in bytes.
    #[serde(rename = "b")]
    pub bytes: u64,
    /// Platform filename.
    #[serde(rename = "f")]
    pub filename: String,
    /// Asset groups (frames are batched by equal groups).
    #[serde(rename = "g")]
    pub groups: Vec<String>,
    /// Failures of this frame itself.
    #[serde(rename = "a", default)]
    pub attempts: u32,
    /// Last error, if any.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Frames and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.frames += 1;
        self.bytes += bytes;
    }
    fn sub(&mut self, bytes: u64) {
        self.frames = self.frames.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Lifetime counters, persisted in the index (best effort: the index may roll back).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Frames committed (fsync'd and indexed).
    pub committed: u64,
    /// Frames the platform accepted (deleted from the queue).
    pub uploaded: u64,
    /// Frames dropped by the budget policy.
    pub dropped_budget: u64,
    /// Frames lost because writing them failed (disk full, I/O error).
    pub dropped_write: u64,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Frames marked dead.
    pub dead: u64,
    /// Frames found in flight after a crash (possible duplicates on the platform).
    pub interrupted: u64,
    /// Index entries dropped because their file was missing.
    pub index_dropped: u64,
    /// Files re-indexed because their entry was missing.
    pub reindexed: u64,
    /// Next sequence number (kept so numbers are not reused after a clean restart).
    pub next_seq: u64,
}

/// A snapshot of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Waiting for upload.
    pub pending: Tally,
    /// Being uploaded.
    pub inflight: Tally,
    /// Refused by the platform, kept for inspection.
    pub dead: Tally,
    /// Lifetime counters.
    pub counters: Counters,
}

/// One frame of [`Queue::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// Queue sequence number.
    pub seq: u64,
    /// `pending`, `in flight` or `dead`.
    pub state: &'static str,
    /// Its index entry.
    pub entry: Entry,
}

/// A spool file [`scan_spool`] could not read, and why.
pub type Damaged = (PathBuf, String);

/// A frame found by [`scan_spool`].
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Queue sequence number.
    pub seq: u64,
    /// Its spool file.
    pub path: PathBuf,
    /// Its metadata (from the file header).
    pub meta: FrameMeta,
    /// The file's size.
    pub bytes: u64,
}

/// The frames on disk, read from the spool files' headers alone: no index, no lock, no
/// write, so it is safe beside a running daemon (files uploaded during the scan are
/// skipped, damaged ones reported in the second list). Oldest first.
pub fn scan_spool(dir: &Path) -> std::io::Result<(Vec<Spooled>, Vec<Damaged>)> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir.join("spool"))? {
        let Ok(e) = e else { continue };
        let path = e.path();
        let Some(seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_frame_name)
        else {
            continue;
        };
        match spool::read_meta(&path) {
            Ok((h, meta)) => ok.push(Spooled {
                seq,
                bytes: h.file_len(),
                path,
                meta,
            }),
            Err(spool::SpoolError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => bad.push((path, err.to_string())),
        }
    }
    ok.sort_by_key(|s| s.seq);
    Ok((ok, bad))
}

/// What [`Queue::open`] found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// `.tmp` files removed.
    pub tmp_removed: u64,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Index entries whose file is missing (not quarantined), dropped.
    pub index_dropped: u64,
    /// Files without an entry, re-indexed.
    pub reindexed: u64,
    /// In-flight entries put back to pending.
    pub interrupted: u64,
    /// The index could not be opened and was rebuilt.
    pub index_rebuilt: bool,
    /// The disk was full and the reserve was given back to open the index.
    pub reserve_released: bool,
}

/// A frame leased for upload.
#[derive(Debug, Clone)]
pub struct Leased {
    /// Queue sequence number.
    pub seq: u64,
    /// Its metadata.
    pub meta: FrameMeta,
    /// Image size.
    pub image_len: u32,
    /// CRC-32C of the image.
    pub image_crc: u32,
}

struct State {
    next_seq: u64,
    pending: Tally,
    inflight: Tally,
    dead: Tally,
    reserved: Tally,
    counters: Counters,
    /// Whether the last add found the budget full (to log the first drop at ERROR).
    full: bool,
}

struct Trees {
    pending: sled::Tree,
    inflight: sled::Tree,
    dead: sled::Tree,
    meta: sled::Tree,
}

/// The queue. Thread-safe; all methods block on disk I/O (call them from blocking threads).
pub struct Queue {
    dir: PathBuf,
    spool: PathBuf,
    index: PathBuf,
    quarantine: PathBuf,
    max_frames: u64,
    max_bytes: u64,
    on_full: OnFull,
    db: sled::Db,
    trees: Trees,
    state: Mutex<State>,
    notify: tokio::sync::Notify,
    _lock: File,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

fn frame_name(seq: u64) -> String {
    format!("{seq:020}.frame")
}

fn parse_frame_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".frame")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn index_err(path: &Path) -> impl Fn(sled::Error) -> QueueError + '_ {
    move |e| QueueError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn decode_entry(v: &[u8]) -> Option<Entry> {
    serde_json::from_slice(v).ok()
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    serde_json::to_vec(e).unwrap_or_default()
}

/// Space set aside in `<dir>/reserve` while there is room. When the disk fills up, it is
/// given back so that the index can still be written (and the queue opened at the next
/// start): a full disk must never keep the daemon from starting and draining.
pub const RESERVE_BYTES: u64 = 4 * 1024 * 1024;

/// Free space a frame write must leave on the queue's file system, for the index's own
/// writes (acks that free space need them).
pub const INDEX_MARGIN_BYTES: u64 = 1024 * 1024;

/// Bytes available to this user on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn is_no_space(msg: &str) -> bool {
    msg.contains("os error 28") || msg.contains("No space left on device")
}

/// Creates the reserve file if it is missing (best effort: a full disk gets a warning).
fn ensure_reserve(path: &Path) {
    if path.exists() {
        return;
    }
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = RESERVE_BYTES;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n])?;
            left -= n as u64;
        }
        f.sync_data()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        warn!(file = %path.display(), error = %e,
            "cannot set aside the disk-full reserve; a full disk may keep the queue from opening");
    }
}

/// What the reconcile keeps of a valid spool file.
struct OnDisk {
    file_len: u64,
    filename: String,
    groups: Vec<String>,
}

/// Missing spool files logged one by one at open; past this, one line gives the total.
const MISSING_LOGGED: u64 = 10;

fn open_sled(path: &Path, cache: u64) -> Result<sled::Db, String> {
    let cfg = sled::Config::new()
        .path(path)
        .cache_capacity(cache)
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(Some(1000));
    // sled panics on some kinds of corruption instead of returning an error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("sled panicked while opening the index".to_string()),
    }
}

impl Queue {
    /// Whether another process holds the queue in `dir` (a running daemon). Read-only:
    /// creates nothing; a queue that does not exist yet is not held.
    pub fn held_elsewhere(dir: &Path) -> Result<bool, QueueError> {
        let lock_path = dir.join("lock");
        let lock = match File::open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("cannot open lock file", &lock_path)(e)),
        };
        match lock.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err("cannot lock", &lock_path)(e)),
        }
    }

    /// Opens (creating if needed) and reconciles the queue in `cfg.dir`.
    pub fn open(cfg: &QueueConfig) -> Result<(Self, OpenReport), QueueError> {
        let dir = cfg.dir.clone();
        let spool = dir.join("spool");
        let quarantine = dir.join("quarantine");
        let index = dir.join("index");
        for d in [&dir, &spool, &quarantine] {
            std::fs::create_dir_all(d).map_err(io_err("cannot create directory", d))?;
        }
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked { path: dir });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("cannot lock", &lock_path)(e));
            }
        }
        let mut report = OpenReport::default();
        let reserve = dir.join("reserve");
        let db = match open_sled(&index, cfg.index_cache_bytes) {
            Ok(db) => db,
            // A full disk is not a broken index: give back the reserve and try again.
            Err(msg) if is_no_space(&msg) => {
                if std::fs::remove_file(&reserve).is_err() {
                    return Err(QueueError::Index {
                        path: index.clone(),
                        message: format!(
                            "{msg}; the disk is full and edgecap's reserve is already used: free some space"
                        ),
                    });
                }
                report.reserve_released = true;
                error!(dir = %dir.display(), reserve_bytes = RESERVE_BYTES,
                    "the disk is full: released edgecap's reserve so that the queue can open; free space, or let the uploader drain the queue");
                open_sled(&index, cfg.index_cache_bytes).map_err(|message| QueueError::Index {
                    path: index.clone(),
                    message,
                })?
            }
            Err(msg) => {
                let aside = quarantine.join(format!(
                    "index-{}",
                    crate::frame::unix_ms(std::time::SystemTime::now())
                ));
                warn!(index = %index.display(), moved_to = %aside.display(), error = %msg,
                    "queue index cannot be opened; moving it aside and rebuilding it from the spool files");
                if index.exists() {
                    std::fs::rename(&index, &aside)
                        .map_err(io_err("cannot move broken index aside", &index))?;
                }
                report.index_rebuilt = true;
                open_sled(&index, cfg.index_cache_bytes).map_err(|message| QueueError::Index {
                    path: index.clone(),
                    message,
                })?
            }
        };
        let ie = index_err(&index);
        let trees = Trees {
            pending: db.open_tree("pending").map_err(&ie)?,
            inflight: db.open_tree("inflight").map_err(&ie)?,
            dead: db.open_tree("dead").map_err(&ie)?,
            meta: db.open_tree("meta").map_err(&ie)?,
        };
        let counters: Counters = trees
            .meta
            .get("counters")
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let q = Queue {
            dir,
            spool,
            index: index.clone(),
            quarantine,
            max_frames: cfg.max_frames,
            max_bytes: cfg.max_bytes,
            on_full: cfg.on_full,
            db,
            trees,
            state: Mutex::new(State {
                next_seq: 1,
                pending: Tally::default(),
                inflight: Tally::default(),
                dead: Tally::default(),
                reserved: Tally::default(),
                counters,
                full: false,
            }),
            notify: tokio::sync::Notify::new(),
            _lock: lock,
        };
        q.reconcile(&mut report)?;
        // Set the reserve aside again once there is room (not right after giving it back:
        // the frames that filled the disk must drain first).
        if !report.reserve_released {
            ensure_reserve(&reserve);
        }
        Ok((q, report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; they stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.spool.join(frame_name(seq))
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves a file into quarantine (never deletes it).
    fn quarantine_file(&self, path: &Path, reason: &str) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".to_string());
        let mut target = self.quarantine.join(&name);
        let mut n = 1;
        while target.exists() {
            target = self.quarantine.join(format!("{name}.{n}"));
            n += 1;
        }
        match std::fs::rename(path, &target) {
            Ok(()) => {
                warn!(file = %path.display(), moved_to = %target.display(), reason,
                    "quarantined a spool file");
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, reason,
                    "cannot move a bad spool file to quarantine; leaving it in place");
            }
        }
    }

    fn reconcile(&self, report: &mut OpenReport) -> Result<(), QueueError> {
        // Per spool file only what the index needs (its custom metadata is dropped at once:
        // with a 10,000-frame backlog holding whole metadata here cost ~30 MiB of heap).
        let mut files: BTreeMap<u64, OnDisk> = BTreeMap::new();
        // Seqs whose file was just quarantined (already counted and logged as such).
        let mut bad: std::collections::BTreeSet<u64> = Default::default();
        let rd = std::fs::read_dir(&self.spool).map_err(io_err("cannot list", &self.spool))?;
        for ent in rd {
            let ent = ent.map_err(io_err("cannot list", &self.spool))?;
            let path = ent.path();
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                match std::fs::remove_file(&path) {
                    Ok(()) => report.tmp_removed += 1,
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot remove temporary file")
                    }
                }
                continue;
            }
            let Some(seq) = parse_frame_name(&name) else {
                self.quarantine_file(&path, "unexpected file in the spool directory");
                report.quarantined += 1;
                continue;
            };
            match spool::read_meta(&path) {
                Ok((h, m)) => {
                    files.insert(
                        seq,
                        OnDisk {
                            file_len: h.file_len(),
                            filename: m.filename,
                            groups: m.groups,
                        },
                    );
                }
                Err(e) => {
                    self.quarantine_file(&path, &e.to_string());
                    report.quarantined += 1;
                    bad.insert(seq);
                }
            }
        }
        let ie = index_err(&self.index);
        let mut max_seq = 0u64;
        let mut indexed: BTreeMap<u64, ()> = BTreeMap::new();
        let mut st = self.state();
        // Index changes that must land atomically with the counters (see below).
        let mut interrupted: Vec<(u64, Entry)> = Vec::new();
        let mut reindexed: Vec<(u64, Entry)> = Vec::new();
        for (tree, is_inflight, is_dead) in [
            (&self.trees.pending, false, false),
            (&self.trees.inflight, true, false),
            (&self.trees.dead, false, true),
        ] {
            let mut to_drop = Vec::new();
            let mut to_pending = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv.map_err(&ie)?;
                let Some(seq) = seq_of(&k) else {
                    to_drop.push(k.to_vec());
                    continue;
                };
                max_seq = max_seq.max(seq);
                let entry = decode_entry(&v);
                match (files.get(&seq), entry) {
                    (Some(f), Some(mut e)) if !indexed.contains_key(&seq) => {
                        indexed.insert(seq, ());
                        e.bytes = f.file_len;
                        e.filename.clone_from(&f.filename);
                        if is_inflight {
                            to_pending.push((seq, e));
                        } else if is_dead {
                            st.dead.add(f.file_len);
                        } else {
                            st.pending.add(f.file_len);
                        }
                    }
                    (found, entry) => {
                        to_drop.push(k.to_vec());
                        if found.is_none() && !bad.contains(&seq) {
                            report.index_dropped += 1;
                            if report.index_dropped <= MISSING_LOGGED {
                                let filename = entry.map(|e| e.filename).unwrap_or_default();
                                error!(seq, filename, spool = %self.spool.display(),
                                    "a queued frame's spool file is missing (deleted outside edgecap, or dropped by the disk budget just before a crash); the frame is lost and dropped from the index");
                            }
                        }
                    }
                }
            }
            for k in to_drop {
                tree.remove(k).map_err(&ie)?;
            }
            for (seq, e) in to_pending {
                st.pending.add(e.bytes);
                report.interrupted += 1;
                interrupted.push((seq, e));
            }
        }
        for (seq, f) in files {
            max_seq = max_seq.max(seq);
            if indexed.contains_key(&seq) {
                continue;
            }
            let e = Entry {
                bytes: f.file_len,
                filename: f.filename,
                groups: f.groups,
                attempts: 0,
                last_error: None,
            };
            st.pending.add(e.bytes);
            report.reindexed += 1;
            reindexed.push((seq, e));
        }
        if report.index_dropped > MISSING_LOGGED {
            error!(missing = report.index_dropped, spool = %self.spool.display(),
                "queued frames whose spool files are missing were dropped from the index (the first {MISSING_LOGGED} are logged one by one)");
        }
        st.next_seq = max_seq.max(st.counters.next_seq.saturating_sub(1)) + 1;
        st.counters.quarantined += report.quarantined;
        st.counters.index_dropped += report.index_dropped;
        st.counters.reindexed += report.reindexed;
        st.counters.interrupted += report.interrupted;
        st.counters.next_seq = st.next_seq;
        // The moves and the counters that report them land together: a crash (or sled's
        // background flush) can never leave frames moved out of `inflight` without their
        // `interrupted` count, so the lifetime counter bounds the duplicates exactly.
        let counters = serde_json::to_vec(&st.counters).unwrap_or_default();
        drop(st);
        let trees = (&self.trees.pending, &self.trees.inflight, &self.trees.meta);
        trees
            .transaction(|(pending, inflight, meta)| {
                for (seq, e) in &interrupted {
                    inflight.remove(&key(*seq)[..])?;
                    pending.insert(&key(*seq)[..], encode_entry(e))?;
                }
                for (seq, e) in &reindexed {
                    pending.insert(&key(*seq)[..], encode_entry(e))?;
                }
                if !counters.is_empty() {
                    meta.insert("counters", counters.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => ie(e),
                sled::transaction::TransactionError::Abort(()) => {
                    ie(sled::Error::Unsupported("reconcile aborted".into()))
                }
            })?;
        self.db.flush().map_err(&ie)?;
        Ok(())
    }

    fn persist(&self, st: &State) {
        if let Ok(v) = serde_json::to_vec(&st.counters)
            && let Err(e) = self.trees.meta.insert("counters", v)
        {
            warn!(error = %e, "cannot store queue counters in the index");
        }
    }

    /// A snapshot of sizes and counters.
    pub fn stats(&self) -> Stats {
        let st = self.state();
        Stats {
            pending: st.pending,
            inflight: st.inflight,
            dead: st.dead,
            counters: st.counters,
        }
    }

    /// How long ago the oldest frame still waiting for upload (pending or in flight) was
    /// committed, from its spool file's modification time. `None` when nothing waits.
    pub fn oldest_waiting_age(&self) -> Option<Duration> {
        let first = |t: &sled::Tree| {
            t.first()
                .ok()
                .flatten()
                .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
                .map(u64::from_be_bytes)
        };
        let seq = match (first(&self.trees.pending), first(&self.trees.inflight)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let modified = std::fs::metadata(self.path_of(seq)).ok()?.modified().ok()?;
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default(),
        )
    }

    /// Woken whenever frames become pending.
    pub fn pending_notify(&self) -> &tokio::sync::Notify {
        &self.notify
    }

    /// Starts a commit group.
    pub fn group(&self) -> Group<'_> {
        Group {
            q: self,
            staged: Vec::new(),
        }
    }

    /// Deletes one frame to make room; returns false when nothing may be dropped.
    fn drop_one(&self, st: &mut State) -> bool {
        let victim = match self.trees.dead.first() {
            Ok(Some(kv)) => Some((&self.trees.dead, kv, true)),
            _ => match self.on_full {
                OnFull::DropOldest => match self.trees.pending.first() {
                    Ok(Some(kv)) => Some((&self.trees.pending, kv, false)),
                    _ => None,
                },
                OnFull::DropNewest => None,
            },
        };
        let Some((tree, (k, v), was_dead)) = victim else {
            return false;
        };
        let Some(seq) = seq_of(&k) else {
            let _ = tree.remove(k);
            return true;
        };
        let entry = decode_entry(&v);
        let bytes = entry.as_ref().map_or(0, |e| e.bytes);
        if let Err(e) = tree.remove(k) {
            error!(seq, error = %e, "cannot drop a frame from the index; refusing the new frame");
            return false;
        }
        let path = self.path_of(seq);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            error!(file = %path.display(), error = %e, "cannot delete a dropped frame's file");
        }
        if was_dead {
            st.dead.sub(bytes);
        } else {
            st.pending.sub(bytes);
        }
        st.counters.dropped_budget += 1;
        let filename = entry.map(|e| e.filename).unwrap_or_default();
        if !st.full {
            st.full = true;
            error!(seq, filename, policy = ?self.on_full, was_dead,
                max_frames = self.max_frames, max_bytes = self.max_bytes,
                "queue budget full: frames are being dropped; raise max_bytes/max_frames or restore the uplink");
        } else {
            warn!(seq, filename, policy = ?self.on_full, was_dead, "dropped a frame to stay within the queue budget");
        }
        true
    }

    /// Reserves room and a sequence number for a frame of `bytes`.
    fn reserve(&self, bytes: u64) -> Result<u64, AddError> {
        let mut st = self.state();
        loop {
            let frames =
                st.pending.frames + st.inflight.frames + st.dead.frames + st.reserved.frames;
            let used = st.pending.bytes + st.inflight.bytes + st.dead.bytes + st.reserved.bytes;
            if frames < self.max_frames && used.saturating_add(bytes) <= self.max_bytes {
                break;
            }
            if bytes > self.max_bytes || !self.drop_one(&mut st) {
                st.counters.dropped_budget += 1;
                if !st.full {
                    st.full = true;
                    error!(policy = ?self.on_full, max_frames = self.max_frames, max_bytes = self.max_bytes,
                        "queue budget full: new frames are being refused; raise max_bytes/max_frames or restore the uplink");
                } else {
                    warn!(policy = ?self.on_full, bytes, "refused a new frame: queue budget full");
                }
                self.persist(&st);
                return Err(AddError::Full {
                    policy: self.on_full,
                });
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.counters.next_seq = st.next_seq;
        st.reserved.add(bytes);
        Ok(seq)
    }

    fn unreserve(&self, bytes: u64, lost: bool) {
        let mut st = self.state();
        st.reserved.sub(bytes);
        if lost {
            st.counters.dropped_write += 1;
        }
    }

    /// Leases up to `max_frames` pending frames (at least one, at most `max_bytes` unless a
    /// single frame is larger) that share the oldest pending frame's groups.
    pub fn lease(&self, max_frames: usize, max_bytes: u64) -> Result<Vec<Leased>, QueueError> {
        let ie = index_err(&self.index);
        let mut chosen: Vec<(u64, Entry)> = Vec::new();
        {
            let mut st = self.state();
            let mut groups: Option<Vec<String>> = None;
            let mut bytes = 0u64;
            for kv in self.trees.pending.iter() {
                if chosen.len() >= max_frames {
                    break;
                }
                let (k, v) = kv.map_err(&ie)?;
                let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) else {
                    continue;
                };
                let g = groups.get_or_insert_with(|| e.groups.clone());
                if *g != e.groups {
                    continue;
                }
                if !chosen.is_empty() && bytes + e.bytes > max_bytes {
                    break;
                }
                bytes += e.bytes;
                chosen.push((seq, e));
            }
            for (seq, e) in &chosen {
                self.trees.pending.remove(key(*seq)).map_err(&ie)?;
                self.trees
                    .inflight
                    .insert(key(*seq), encode_entry(e))
                    .map_err(&ie)?;
                st.pending.sub(e.bytes);
                st.inflight.add(e.bytes);
            }
        }
        // Durable before anything is sent: after a crash, the frames that may have reached
        // the platform are exactly the ones found in flight (counted as `interrupted`).
        if !chosen.is_empty()
            && let Err(e) = self.db.flush()
        {
            warn!(error = %e, "cannot flush the queue index");
        }
        let mut out = Vec::with_capacity(chosen.len());
        for (seq, _) in chosen {
            match spool::read_meta(&self.path_of(seq)) {
                Ok((h, meta)) => out.push(Leased {
                    seq,
                    meta,
                    image_len: h.image_len,
                    image_crc: h.image_crc,
                }),
                Err(e) => {
                    let err = self.handle_read_error(seq, e);
                    warn!(seq, error = %err, "a leased frame cannot be read; skipping it");
                    if let ReadError::Io { .. } = err {
                        self.release(&[seq], Some(&err.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }

    fn handle_read_error(&self, seq: u64, e: SpoolError) -> ReadError {
        match e {
            SpoolError::Corrupt { reason, path } => {
                self.quarantine_file(&path, &reason);
                self.forget(seq, |c| c.quarantined += 1);
                ReadError::Quarantined { seq, reason }
            }
            SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                error!(
                    seq,
                    "spool file of a queued frame is missing; dropping its index entry"
                );
                self.forget(seq, |c| c.index_dropped += 1);
                ReadError::Missing { seq }
            }
            other => ReadError::Io { seq, source: other },
        }
    }

    /// Removes an entry (any state) without touching files; counts via `count`.
    fn forget(&self, seq: u64, count: impl FnOnce(&mut Counters)) {
        let mut st = self.state();
        for (tree, which) in [
            (&self.trees.inflight, 0),
            (&self.trees.pending, 1),
            (&self.trees.dead, 2),
        ] {
            if let Ok(Some(v)) = tree.remove(key(seq)) {
                let bytes = decode_entry(&v).map_or(0, |e| e.bytes);
                match which {
                    0 => st.inflight.sub(bytes),
                    1 => st.pending.sub(bytes),
                    _ => st.dead.sub(bytes),
                }
            }
        }
        count(&mut st.counters);
        self.persist(&st);
    }

    /// Reads a leased frame's image, verifying its checksum. A corrupt file is quarantined.
    pub fn read_image(&self, seq: u64) -> Result<Vec<u8>, ReadError> {
        match spool::read_frame(&self.path_of(seq)) {
            Ok((_, _, image)) => Ok(image),
            Err(e) => Err(self.handle_read_error(seq, e)),
        }
    }

    /// The platform accepted these frames: delete them.
    pub fn ack(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut st = self.state();
        let mut delivered = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            match self.trees.inflight.remove(key(seq)) {
                Ok(Some(v)) => {
                    let bytes = decode_entry(&v).map_or(0, |e| e.bytes);
                    st.inflight.sub(bytes);
                    st.counters.uploaded += 1;
                    delivered.push(seq);
                }
                Ok(None) => {}
                Err(e) => error!(seq, error = %e, "cannot remove an uploaded frame from the index"),
            }
        }
        if st.pending.frames + st.inflight.frames + st.dead.frames < self.max_frames {
            st.full = false;
        }
        self.persist(&st);
        drop(st);
        // The index forgets the frames before their files go: after a crash, an entry
        // without a file then always means a file lost outside edgecap, never an upload.
        if let Err(e) = self.db.flush() {
            warn!(error = %e, "cannot flush the queue index");
        }
        for seq in delivered {
            let path = self.path_of(seq);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(file = %path.display(), error = %e, "cannot delete an uploaded frame's file");
            }
        }
    }

    /// Moves in-flight frames back to pending (a transient failure, or shutdown).
    pub fn release(&self, seqs: &[u64], error: Option<&str>) {
        self.settle(seqs, error, |_| false);
    }

    /// A failure of these frames themselves: count an attempt; after `max_attempts` they
    /// are marked dead. Returns how many went dead.
    pub fn fail(&self, seqs: &[u64], error: &str, max_attempts: u32) -> usize {
        self.settle(seqs, Some(error), |e| {
            e.attempts += 1;
            e.attempts >= max_attempts
        })
    }

    /// Marks frames dead at once (a permanent refusal).
    pub fn kill(&self, seqs: &[u64], error: &str) -> usize {
        self.settle(seqs, Some(error), |e| {
            e.attempts += 1;
            true
        })
    }

    fn settle(
        &self,
        seqs: &[u64],
        error: Option<&str>,
        dead: impl Fn(&mut Entry) -> bool,
    ) -> usize {
        if seqs.is_empty() {
            return 0;
        }
        let mut st = self.state();
        let mut n_dead = 0;
        let mut n_back = 0;
        for &seq in seqs {
            let Ok(Some(v)) = self.trees.inflight.remove(key(seq)) else {
                continue;
            };
            let Some(mut e) = decode_entry(&v) else {
                continue;
            };
            st.inflight.sub(e.bytes);
            if let Some(msg) = error {
                e.last_error = Some(msg.chars().take(500).collect());
            }
            let to_dead = dead(&mut e);
            let tree = if to_dead {
                &self.trees.dead
            } else {
                &self.trees.pending
            };
            if let Err(err) = tree.insert(key(seq), encode_entry(&e)) {
                error!(seq, error = %err, "cannot update a frame's index entry; it will be re-indexed at the next start");
                continue;
            }
            if to_dead {
                st.dead.add(e.bytes);
                st.counters.dead += 1;
                n_dead += 1;
                error!(seq, filename = %e.filename, attempts = e.attempts, error = error.unwrap_or(""),
                    "frame marked dead: the platform refused it; it stays in the queue for inspection");
            } else {
                st.pending.add(e.bytes);
                n_back += 1;
            }
        }
        self.persist(&st);
        drop(st);
        if n_dead > 0
            && let Err(e) = self.db.flush()
        {
            warn!(error = %e, "cannot flush the queue index");
        }
        if n_back > 0 {
            self.notify.notify_one();
        }
        n_dead
    }

    /// Gives back the disk-full reserve (once), so the index can still record uploads
    /// that free space.
    fn release_reserve(&self) {
        let path = self.dir.join("reserve");
        if std::fs::remove_file(&path).is_ok() {
            error!(dir = %self.dir.display(), reserve_bytes = RESERVE_BYTES,
                "the disk is full: released edgecap's reserve so that the queue index keeps working");
        }
    }

    /// Every frame in the index with its state, oldest first.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        for (tree, state) in [
            (&self.trees.pending, "pending"),
            (&self.trees.inflight, "in flight"),
            (&self.trees.dead, "dead"),
        ] {
            for (k, v) in tree.iter().flatten() {
                if let (Some(seq), Some(entry)) = (seq_of(&k), decode_entry(&v)) {
                    out.push(Listed { seq, state, entry });
                }
            }
        }
        out.sort_by_key(|l| l.seq);
        out
    }

    /// Puts every dead frame back in the upload queue with its attempts reset (after the
    /// cause was fixed: a group created, a permission granted). Returns how many.
    pub fn retry_dead(&self) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for (k, v) in self.trees.dead.iter().flatten() {
            let Some(mut e) = decode_entry(&v) else {
                continue;
            };
            e.attempts = 0;
            if self.trees.pending.insert(&k, encode_entry(&e)).is_ok()
                && self.trees.dead.remove(&k).is_ok()
            {
                st.dead.sub(e.bytes);
                st.pending.add(e.bytes);
                n += 1;
            }
        }
        self.persist(&st);
        drop(st);
        if n > 0 {
            if let Err(e) = self.db.flush() {
                warn!(error = %e, "cannot flush the queue index");
            }
            info!(frames = n, "dead frames put back in the upload queue");
            self.notify.notify_one();
        }
        n
    }

    /// Deletes every dead frame (file and index entry); returns the frames and bytes freed.
    /// Each deletion is logged: this is a deliberate, operator-made loss.
    pub fn purge_dead(&self) -> Tally {
        let mut st = self.state();
        let mut freed = Tally::default();
        for (k, v) in self.trees.dead.iter().flatten() {
            let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) else {
                continue;
            };
            let path = self.path_of(seq);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    warn!(file = %path.display(), error = %err, "cannot delete a dead frame's file; kept");
                    continue;
                }
            }
            if self.trees.dead.remove(&k).is_ok() {
                st.dead.sub(e.bytes);
                freed.add(e.bytes);
                warn!(seq, filename = %e.filename, "dead frame purged by the operator");
            }
        }
        self.persist(&st);
        drop(st);
        if let Err(e) = self.db.flush() {
            warn!(error = %e, "cannot flush the queue index");
        }
        freed
    }

    /// Flushes the index (best effort; files stay the truth).
    pub fn flush(&self) {
        {
            let st = self.state();
            self.persist(&st);
        }
        if let Err(e) = self.db.flush() {
            warn!(error = %e, "cannot flush the queue index");
        }
    }
}

impl Drop for Queue {
    /// A clean close leaves the index (counters included) flushed; only a crash can roll
    /// it back.
    fn drop(&mut self) {
        self.flush();
    }
}

struct Staged {
    seq: u64,
    file: File,
    tmp: PathBuf,
    entry: Entry,
}

/// An open commit group; see the module docs for the protocol. Dropping it without
/// [`Group::commit`] discards its frames.
pub struct Group<'q> {
    q: &'q Queue,
    staged: Vec<Staged>,
}

/// What a commit made durable.
#[derive(Debug, Default)]
pub struct Committed {
    /// (seq, filename) of every frame now committed, in order.
    pub frames: Vec<(u64, String)>,
    /// Frames of the group that were lost (fsync or rename failed).
    pub lost: usize,
}

impl Group<'_> {
    /// Frames in the group.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Writes a frame into the group (not yet durable). Applies the budget first.
    pub fn add(&mut self, meta: &FrameMeta, image: &[u8]) -> Result<u64, AddError> {
        let meta_json = serde_json::to_vec(meta).map_err(|e| {
            AddError::Write(SpoolError::Corrupt {
                path: self.q.spool.clone(),
                reason: format!("cannot encode metadata: {e}"),
            })
        })?;
        let bytes = (spool::HEADER_LEN + meta_json.len() + image.len()) as u64;
        let seq = self.q.reserve(bytes)?;
        // A frame that would leave the index no room is refused before it touches the
        // disk (counted like any failed write): sled must never hit ENOSPC itself.
        if free_bytes(&self.q.spool).is_some_and(|free| free < bytes + INDEX_MARGIN_BYTES) {
            self.q.unreserve(bytes, true);
            return Err(AddError::Write(SpoolError::Io {
                path: self.q.spool.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the disk is nearly full (less than {} MiB would be left for the index)",
                        INDEX_MARGIN_BYTES / (1024 * 1024)
                    ),
                ),
            }));
        }
        let tmp = self.q.spool.join(format!("{}.tmp", frame_name(seq)));
        match spool::write_unsynced(&tmp, &meta_json, image) {
            Ok((file, _)) => {
                self.staged.push(Staged {
                    seq,
                    file,
                    tmp,
                    entry: Entry {
                        bytes,
                        filename: meta.filename.clone(),
                        groups: meta.groups.clone(),
                        attempts: 0,
                        last_error: None,
                    },
                });
                Ok(seq)
            }
            Err(e) => {
                self.q.unreserve(bytes, true);
                if is_no_space(&e.to_string()) {
                    self.q.release_reserve();
                }
                Err(AddError::Write(e))
            }
        }
    }

    /// Makes the group durable and visible to the uploader.
    pub fn commit(mut self) -> Committed {
        let q = self.q;
        let staged = std::mem::take(&mut self.staged);
        let mut out = Committed::default();
        let mut durable = Vec::with_capacity(staged.len());
        for s in staged {
            let fin = q.path_of(s.seq);
            let res = s
                .file
                .sync_data()
                .and_then(|_| std::fs::rename(&s.tmp, &fin));
            drop(s.file);
            match res {
                Ok(()) => durable.push((s.seq, s.entry)),
                Err(e) => {
                    error!(seq = s.seq, filename = %s.entry.filename, error = %e,
                        "frame lost: cannot fsync or rename its spool file");
                    let _ = std::fs::remove_file(&s.tmp);
                    q.unreserve(s.entry.bytes, true);
                    out.lost += 1;
                }
            }
        }
        if durable.is_empty() {
            return out;
        }
        if let Err(e) = spool::sync_dir(&q.spool) {
            error!(dir = %q.spool.display(), error = %e,
                "cannot fsync the spool directory; the last frames may not survive a power cut");
        }
        let mut st = q.state();
        for (seq, entry) in durable {
            st.reserved.sub(entry.bytes);
            if let Err(e) = q.trees.pending.insert(key(seq), encode_entry(&entry)) {
                error!(seq, error = %e, "cannot index a committed frame; it will be re-indexed at the next start");
                continue;
            }
            st.pending.add(entry.bytes);
            st.counters.committed += 1;
            out.frames.push((seq, entry.filename));
        }
        q.persist(&st);
        drop(st);
        q.notify.notify_one();
        out
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        for s in self.staged.drain(..) {
            let _ = std::fs::remove_file(&s.tmp);
            self.q.unreserve(s.entry.bytes, false);
        }
    }
}
