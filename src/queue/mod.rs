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
//! [`Entry`] values: `b` size, `f` filename, `g` groups, `a` attempts, `e` last error,
//! `m` true once the platform has the image but not yet the metadata, `s` the platform
//! session (`i` id, `o` operation) the frame went into while its fate is unknown. Fields
//! added later default when absent, so an older index opens as it is. Tree `meta` holds
//! the counters.
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
//! [`Queue::lease`] moves pending frames to `inflight`; [`Queue::ack`] deletes them after
//! the platform accepted them; [`Queue::release`] puts them back after a transient
//! failure; [`Queue::fail`] counts a failure of the frame itself and marks it dead after
//! `max_attempts`; [`Queue::image_delivered`] puts back a frame whose image the platform
//! has, so that only its metadata is sent again. `lease` flushes the index before the
//! frames are sent, and `ack` flushes it before their files are deleted (one flush per
//! batch each), so after a crash `interrupted` counts exactly the frames that may have
//! reached the platform, and an entry without its file means a file lost outside edgecap.
//!
//! Exactly once where the platform can tell: [`Queue::record_session`] notes (and
//! flushes) the session a batch went into before any of its bytes are sent, and
//! [`Queue::release_for_recovery`] keeps it when the daemon stops while the platform
//! decides. At the next start [`Queue::lease_sessions`] hands those frames, grouped by
//! session, to the uploader, which asks the platform before sending any again; the ones
//! found there are counted in `recovered`. Only a crash between a session's creation and
//! its note leaves frames that may reach the platform twice without being asked about.
//!
//! # Where each part lives
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | this spec, [`Queue`] and its shared state, the errors |
//! | [`spool`] | the spool file codec |
//! | `index.rs` | sled trees, key encoding, [`Entry`] and [`FrameState`] |
//! | `files.rs` | frame file names, the disk-full reserve, free space, quarantine |
//! | `open.rs` | the lock, opening the index, the reconcile |
//! | `budget.rs` | the budget and the drops it makes |
//! | `group.rs` | group commit |
//! | `delivery.rs` | lease, read, ack/release/fail/kill |
//! | `admin.rs` | `scan_spool`, list, retry-dead, purge |
//! | `counters.rs` | [`Tally`], [`Counters`], [`Stats`] |

mod admin;
mod budget;
mod counters;
mod delivery;
mod files;
mod group;
mod index;
mod open;
pub mod spool;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::warn;

pub use admin::{Damaged, Listed, Spooled, scan_spool};
pub use counters::{Counters, Stats, Tally};
pub use delivery::Leased;
pub use files::{INDEX_MARGIN_BYTES, RESERVE_BYTES};
pub use group::{Committed, Group};
pub use index::{Entry, FrameState, SessionRef};
pub use open::OpenReport;

use crate::config::OnFull;
use files::frame_name;
use index::Trees;
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

/// The in-memory state behind the queue's lock.
pub(super) struct State {
    next_seq: u64,
    pending: Tally,
    inflight: Tally,
    dead: Tally,
    reserved: Tally,
    counters: Counters,
    /// Whether the last add found the budget full (to log the first drop at ERROR).
    full: bool,
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

impl State {
    /// The tally of frames in `state`.
    fn tally(&mut self, state: FrameState) -> &mut Tally {
        match state {
            FrameState::Pending => &mut self.pending,
            FrameState::InFlight => &mut self.inflight,
            FrameState::Dead => &mut self.dead,
        }
    }
}

pub(super) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Queue {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; they stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn path_of(&self, seq: u64) -> PathBuf {
        self.spool.join(frame_name(seq))
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn persist(&self, st: &State) {
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

    /// The groups of the oldest pending frame: the group set the next lease takes.
    pub fn oldest_pending_groups(&self) -> Option<Vec<String>> {
        let (_, v) = self.trees.pending.first().ok()??;
        index::decode_entry(&v).map(|e| e.groups)
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

    /// Flushes the index (a failure is logged; files stay the truth).
    pub(super) fn flush_index(&self) {
        if let Err(e) = self.db.flush() {
            warn!(error = %e, "cannot flush the queue index");
        }
    }

    /// Flushes the index (best effort; files stay the truth).
    pub fn flush(&self) {
        {
            let st = self.state();
            self.persist(&st);
        }
        self.flush_index();
    }
}

impl Drop for Queue {
    /// A clean close leaves the index (counters included) flushed; only a crash can roll
    /// it back.
    fn drop(&mut self) {
        self.flush();
    }
}
