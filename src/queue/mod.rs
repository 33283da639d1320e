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
//! <dir>/index/                   sled database (the index); `index.<n>/` after the n-th
//!                                in-process repair or copy into smaller log segments
//!                                (the newest one is used, older removed)
//! <dir>/index-migrating          while an index is copied into smaller log segments: the
//!                                generation being written (`migrate.rs`)
//! <dir>/counters                 the lifetime counters as last made durable (JSON), a
//!                                floor for the index's, rewritten every 30 s and at close
//! <dir>/quarantine/              corrupt or unexpected files, moved aside, never deleted
//! <dir>/reserve                  4 MiB of zeros, given back when the disk fills up
//! <dir>/receipts/<n>.jsonl       proof of delivery, one JSON line per delivered frame
//!                                (`receipts.rs`), capped at `receipts_max_bytes`
//! <dir>/delivered/<seq>.frame    delivered frames kept for `verify --repair` (`kept.rs`,
//!                                only with `keep_delivered_bytes` > 0)
//! ```
//!
//! # A full disk
//!
//! A frame that cannot be written is lost and counted (`dropped_write`); capture goes on.
//! A frame is not even tried when it would leave less than `INDEX_MARGIN_BYTES` free, so
//! sled itself never hits ENOSPC (it stays unusable after an I/O error). If another
//! program fills the disk anyway, the first ENOSPC deletes `reserve`, so that sled can
//! still record the uploads that free space. If the disk is full at start-up and sled
//! cannot open, the reserve is given back and the open retried: a full disk never keeps
//! the daemon from starting and draining (it is not mistaken for a broken index either).
//! The reserve is set aside again at the next start with room to spare.
//!
//! When sled fails at run time all the same (another program took the last bytes, an
//! I/O error), the index *fails* (`store.rs`): ERROR once, `index_failed` in the status,
//! frames still committed and counted (within the budget, and leaving room for the
//! repair), nothing leased; `repair.rs` rebuilds it in-process once there is room, and
//! uploads resume without a restart.
//!
//! # Spool file format, version 2 (all integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8 | magic `EDGECAPF` |
//! | 8  | 2 | format version = 2 |
//! | 10 | 2 | flags, 0 (reserved) |
//! | 12 | 4 | `meta_len`: length of the metadata JSON |
//! | 16 | 4 | `image_len`: length of the image |
//! | 20 | 4 | CRC-32C of the image bytes (what Nexus gets, before its i32 cast) |
//! | 24 | 8 | `seq`: the frame's sequence number, its identity (the file's name repeats it) |
//! | 32 | 4 | CRC-32C of bytes 0..32 followed by the metadata JSON |
//! | 36 | `meta_len` | metadata: [`crate::frame::FrameMeta`] as JSON |
//! | 36 + `meta_len` | `image_len` | the encoded image, exactly as it will be uploaded |
//!
//! A file is valid when its length is exactly `36 + meta_len + image_len`, the magic and
//! version match, the header checksum holds and `seq` is the one its name says (a valid
//! file copied over another is quarantined, not sent under the other's name). Version 1
//! files (no `seq`, a 28-byte header with its checksum at offset 24) are still read. The image checksum is checked whenever the
//! image is read for upload. Two checksums keep start-up cheap: reconciling reads only
//! headers (an SD card reads ~20–40 MB/s; re-reading a 2 GB backlog at every boot would
//! take a minute), while no image is ever sent without its checksum verified.
//!
//! # Commit protocol (group commit)
//!
//! 1. each frame of a group is written to `<seq>.frame.tmp` as it arrives (no fsync), or,
//!    for a prepared frame handed over through the inbox, its header and metadata are
//!    written in place over its placeholder (`adopt.rs`);
//! 2. at the end of the group window every file is `fdatasync`'d (a group of 16 or more,
//!    the inbox's or `enqueue`'s, with one `syncfs` instead, `group.rs`), then renamed to
//!    `<seq>.frame` (an adopted frame: from the inbox), then the spool directory is
//!    fsync'd once;
//! 3. only then are the frames inserted into the index and counted as committed, in one
//!    transaction (with `committed_through`, the highest seq counted), flushed.
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
//! session (`i` id, `o` operation) the frame went into while its fate is unknown, `x` how
//! often it was handed to the platform, `c` true when a crash or stop left its fate
//! unknown. Fields added later default when absent, so an older index opens as it is.
//! Tree `meta` holds the counters; tree `gone` the tombstones of frames delivered or
//! dropped whose files may not be deleted yet. Every change lands in one transaction with
//! the counters that count it (`store.rs`), so after a crash an event and its count are
//! both there or both not; the counters operators see are those of the last flush, so a
//! counter once shown never goes back.
//! sled is not trusted for durability (it flushes with `sync_file_range`, and it keeps
//! values above ~128 KB in blob files it never fsyncs), so the index only ever holds small
//! values and is rebuilt from the spool files whenever the two disagree. Its page cache is
//! capped by `index_cache_bytes` (sled's default is 1 GiB; ours 1 MiB), and whole trees
//! are read key by key (`index::walk`) so that the cap holds.
//!
//! # Recovery rules, applied by [`Queue::open`]
//!
//! - `*.tmp` in the spool → removed (never committed);
//! - an index entry without a valid file → dropped from the index, counted;
//! - a file with a tombstone → deleted (a delivered or dropped frame whose unlink a crash
//!   interrupted; never sent again);
//! - a valid file without an entry → re-indexed as pending (its index write was lost), and
//!   counted as committed when its seq is above `committed_through`;
//! - a file that fails a check (truncated, bad magic, bad checksum, bad JSON) → moved to
//!   `quarantine/`, counted, logged; the same happens when an image checksum fails at read;
//! - entries left `inflight` by a crash → pending again, counted as `interrupted` (they may
//!   reach the platform twice; names are stable, so a re-upload replaces);
//! - an index that sled cannot open → moved to `quarantine/index-<ms>`, rebuilt from files;
//! - an index that recovered an older state than it had (its counters behind the floor in
//!   `<dir>/counters`, or a file at or below its `committed_through` it does not know) →
//!   logged at WARN with what differed, moved to `quarantine/index-older-<ms>`, rebuilt from
//!   the files with the floor's counters (dead frames are then tried again);
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
//! found there are counted in `recovered`. [`Queue::release_unconfirmed`] keeps the
//! session too when the platform could not be asked about a batch whose operation did
//! not end cleanly (an outage); such a frame is leased again carrying its session
//! (`Leased::previous`), and the sink asks about it before it sends it again. Only a
//! crash between a session's creation and its note leaves frames that may reach the
//! platform twice without being asked about.
//!
//! # Where each part lives
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | this spec, [`Queue`] and its shared state, the flush, the errors |
//! | [`spool`] | the spool file codec |
//! | `index.rs` | sled trees, key encoding, [`Entry`] and [`FrameState`], `walk` (whole trees read key by key) |
//! | [`calls`] | the one thread async code makes its queue calls on |
//! | `store.rs` | opening sled; changes applied with their counters (in transactions of a few dozen); the failed state |
//! | `repair.rs` | the in-process rebuild of a failed index |
//! | `files.rs` | frame file names, the disk-full reserve, the restart mark, free space, quarantine |
//! | `open.rs` | the lock, opening the index (older states detected), the reconcile, the floor |
//! | `budget.rs` | the budget and the drops it makes |
//! | `group.rs` | group commit |
//! | `delivery.rs` | lease, read, ack/release/fail/kill |
//! | `proof.rs` | receipts of delivered frames, the kept copies (freed, committed again) |
//! | `admin.rs` | `scan_spool`, list, retry-dead, purge |
//! | `counters.rs` | [`Tally`], [`Counters`], [`Stats`] |

mod admin;
pub mod adopt;
mod budget;
pub mod calls;
mod counters;
mod delivery;
mod digests;
mod files;
mod group;
mod index;
mod kept;
mod ledger;
mod migrate;
mod open;
mod proof;
mod receipts;
mod repair;
pub mod spool;
mod store;
mod thin;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::warn;

pub use admin::{Damaged, Inspection, Listed, Spooled, inspect, may_open, scan_spool};
pub use counters::{Counters, IndexFailure, Stats, Tally};
pub use delivery::Leased;
pub use digests::{Digest, Seen, digest, digest_from_hex, digest_hex, read_digest_log};
pub use files::{INDEX_MARGIN_BYTES, RESERVE_BYTES};
pub use group::{Committed, Group, SYNC_TOGETHER_FROM};
pub use index::{Entry, FrameState, SessionRef};
pub use ledger::Sent;
pub use open::OpenReport;
pub use proof::Delivered;
pub use receipts::{Receipt, ReceiptStats, read_all as read_receipts};
pub use repair::RETRY_EVERY as REPAIR_EVERY;
pub use spool::STREAM_CHUNK;

use crate::config::OnFull;
use files::frame_name;
use spool::SpoolError;
use store::{Op, Store};

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
    /// The index failed at run time and cannot be repaired yet (nothing is leased).
    #[error("the queue index has failed and waits for its repair: {error}")]
    IndexFailed {
        /// What failed.
        error: String,
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

/// The in-memory state behind the queue's lock (the index included: every index access
/// holds it, so a repair can swap the index under it).
pub(super) struct State {
    next_seq: u64,
    pending: Tally,
    inflight: Tally,
    dead: Tally,
    reserved: Tally,
    /// The lifetime counters, as changed; written with every index change.
    counters: Counters,
    /// The counters as of the last successful flush: what operators see.
    durable: Counters,
    /// Counters changed without an index change since the last write of them.
    dirty: bool,
    /// When the index was last flushed.
    flushed_at: std::time::Instant,
    store: Store,
    /// Frames acknowledged (delivered) whose files are to be kept, not deleted, once the
    /// index flush makes their delivery durable (`kept.rs`).
    acked: std::collections::HashSet<u64>,
    /// Whether the last add found the budget full (to log the first drop at ERROR).
    full: bool,
    /// Where `on_full = "thin"` stands.
    thinner: thin::Thinner,
}

/// The queue. Thread-safe; all methods block on disk I/O (call them from blocking threads).
pub struct Queue {
    dir: PathBuf,
    spool: PathBuf,
    quarantine: PathBuf,
    max_frames: u64,
    max_bytes: u64,
    on_full: OnFull,
    index_cache_bytes: u64,
    state: Mutex<State>,
    receipts: Mutex<receipts::Receipts>,
    kept: Mutex<kept::Kept>,
    /// Serialises the sent-bytes ledger's read-modify-write.
    ledger_lock: Mutex<()>,
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

    /// Applies index changes with the counters, in one transaction (see [`Store::apply`]).
    fn apply(&mut self, ops: &[Op]) -> bool {
        self.dirty = false;
        let c = self.counters;
        self.store.apply(ops, &c)
    }

    /// Applies index changes in transactions of a few dozen, `count` adding each change's
    /// part to the counters, so that every transaction stores the counters as they stand
    /// after it (see [`Store::apply_chunked`]).
    fn apply_counted(&mut self, ops: &[Op], count: impl Fn(&mut Counters, &Op)) -> bool {
        self.dirty = false;
        let mut c = self.counters;
        let mut after = Vec::with_capacity(ops.len() + 1);
        after.push(c);
        for op in ops {
            count(&mut c, op);
            after.push(c);
        }
        self.counters = c;
        self.store.apply_chunked(ops, &|n| after[n])
    }
}

/// Fault injection for the tests: `EDGECAP_FAULT_SLOW_UNLINK_MS=N` makes each deletion
/// of a finished frame's file take N ms more, as on an SD card that stalls.
#[cfg(feature = "fault-injection")]
fn injected_slow_unlink() {
    if let Some(ms) = std::env::var("EDGECAP_FAULT_SLOW_UNLINK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
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

    /// A snapshot of sizes and counters. The counters are the durable ones (as of the
    /// last flush of the index), so none shown here can go back after a crash.
    pub fn stats(&self) -> Stats {
        let st = self.state();
        Stats {
            pending: st.pending,
            inflight: st.inflight,
            dead: st.dead,
            counters: st.durable,
            index_failed: st.store.failed.as_ref().map(|f| IndexFailure {
                since: crate::frame::rfc3339_utc(f.since),
                error: f.error.clone(),
            }),
        }
    }

    /// The groups of the oldest pending frame: the group set the next lease takes.
    pub fn oldest_pending_groups(&self) -> Option<Vec<String>> {
        let st = self.state();
        if st.store.is_failed() {
            return None;
        }
        let (_, v) = st.store.trees.pending.first().ok()??;
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
        let seq = {
            let st = self.state();
            if st.store.is_failed() {
                return None;
            }
            match (
                first(&st.store.trees.pending),
                first(&st.store.trees.inflight),
            ) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            }
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

    /// Makes every index change and counter so far durable, then deletes the files of
    /// the frames finished meanwhile and updates the counters operators see. Returns
    /// false when the index has failed (the failure is recorded, logged once).
    pub(super) fn flush_index(&self) -> bool {
        let (db, generation, snap, upto) = {
            let mut st = self.state();
            if st.store.is_failed() {
                return false;
            }
            if st.dirty && !st.apply(&[]) {
                return false;
            }
            (
                st.store.db.clone(),
                st.store.generation,
                st.counters,
                st.store.last_change(),
            )
        };
        let res = db.flush();
        let mut st = self.state();
        if st.store.generation != generation {
            // A repair replaced the index meanwhile; it dealt with everything.
            return false;
        }
        match res {
            Ok(_) => {
                st.durable = snap;
                st.flushed_at = std::time::Instant::now();
                let unlink: Vec<u64> = st
                    .store
                    .finished
                    .iter()
                    .filter(|(n, _)| *n <= upto)
                    .map(|(_, seq)| *seq)
                    .collect();
                st.store.durable_upto(upto);
                let keep: Vec<bool> = unlink.iter().map(|s| st.acked.remove(s)).collect();
                drop(st);
                if unlink.is_empty() {
                    return true;
                }
                for (&seq, keep) in unlink.iter().zip(keep) {
                    let path = self.path_of(seq);
                    if keep {
                        self.kept
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .keep(seq, &path);
                        continue;
                    }
                    #[cfg(feature = "fault-injection")]
                    injected_slow_unlink();
                    if let Err(e) = std::fs::remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        warn!(file = %path.display(), error = %e, "cannot delete a finished frame's file");
                    }
                }
                let bury: Vec<Op> = unlink.into_iter().map(|seq| Op::Bury { seq }).collect();
                self.state().apply(&bury);
                true
            }
            Err(e) => {
                st.store.fail(&e.to_string());
                false
            }
        }
    }

    /// Makes counters changed without an index change (refused and lost frames) durable,
    /// at most once a second.
    pub fn flush_counters(&self) {
        let due = {
            let st = self.state();
            st.dirty && st.flushed_at.elapsed() >= Duration::from_secs(1)
        };
        if due {
            self.flush_index();
        }
    }

    /// Flushes the index (best effort; files stay the truth).
    pub fn flush(&self) {
        self.state().dirty = true;
        self.flush_index();
    }

    /// Whether the index has failed and waits for a repair.
    pub fn index_failed(&self) -> bool {
        self.state().store.is_failed()
    }
}

impl Drop for Queue {
    /// A clean close leaves the index (counters included) flushed; only a crash can roll
    /// it back.
    fn drop(&mut self) {
        self.flush();
        self.write_floor();
    }
}
