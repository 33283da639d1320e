//! The index store: opening the sled database, its trees, every change to them written in
//! a transaction together with the lifetime counters, and the *failed* state the store
//! enters when sled stops working at run time.
//!
//! # Changes land with their counters
//!
//! Every index change is an [`Op`] list applied by [`Store::apply`] in one sled
//! transaction that also stores the counters (long lists by [`Store::apply_chunked`], in
//! transactions of [`CHUNK`], each with the counters as they stand after it), so that
//! after a crash an event and its count are durable together or not at all (the counters
//! never disagree with the index they describe). Nothing is durable before a flush
//! ([`super::Queue::flush_index`]); what operators see of the counters is the value of
//! the last successful flush (`State::durable`), so a lifetime counter that was shown can
//! never go back.
//!
//! # When sled fails
//!
//! sled keeps the first I/O error of its writer (ENOSPC from a disk filled by another
//! program, an EIO) and refuses every later write of that database for good. The store
//! then *fails* ([`Failure`]): the error is logged once at ERROR, and every later change
//! is kept in memory instead (the overlay: per frame, where it stands now or that it is
//! gone), so counting and the budget go on exactly. Frames keep being committed (their
//! files are the truth) but no frame is leased until the index is repaired; files of
//! frames finished meanwhile are kept until the repair has recorded them.
//!
//! # Log segments of 128 KiB
//!
//! sled writes its log through buffers of one segment each (its default: 512 KiB), and
//! while a drain writes, up to three of them are alive at once (heaptrack: 1.5 MB at the
//! peak of a 100k drain). A new index is made with segments of [`SEGMENT_BYTES`]: 100k
//! drains peaked 1–2 MiB lower, for the same time and CPU (BENCHMARKS.md, reading by
//! hand, 2026-11-28). The largest thing sled writes inline is a quarter segment (32 KiB);
//! larger nodes go to blob files, which a leaf of ≤ 17 entries does not reach: an entry
//! holds no metadata (its filename, groups, last error and session only). sled refuses to
//! open a database with another segment size than it was made with, so an index an older
//! edgecap made is opened with its 512 KiB ([`segment_bytes_of`] reads sled's `conf`
//! file), then copied once into the smaller segments (`migrate.rs`).
//!
//! `repair.rs` rebuilds the index into a fresh directory once the cause is gone. A fresh
//! directory, not the same one: sled 0.34 finishes work for a dropped database in
//! background threads, and a new database in the same place could read a file while the
//! old one truncates it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tracing::error;

use super::files::is_storage_full;
use super::index::{Entry, FrameState, Trees, decode_entry, encode_entry, key};
use super::{Counters, QueueError};

/// Most changes in one transaction of [`Store::apply_chunked`].
pub(super) const CHUNK: usize = 64;

/// One change to the index.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// A frame enters the index in `to` (committed, re-indexed).
    Put {
        /// The frame.
        seq: u64,
        /// Its state.
        to: FrameState,
        /// Its entry.
        entry: Entry,
    },
    /// A frame moves from `from` to `to` (equal for an update in place).
    Move {
        /// The frame.
        seq: u64,
        /// Where it was.
        from: FrameState,
        /// Where it goes.
        to: FrameState,
        /// Its new entry.
        entry: Entry,
    },
    /// A frame is finished (delivered, dropped): removed, with a tombstone until its file
    /// is deleted.
    Finish {
        /// The frame.
        seq: u64,
        /// Where it was.
        from: FrameState,
    },
    /// A frame is forgotten (its file is already gone: quarantined, missing).
    Forget {
        /// The frame.
        seq: u64,
        /// Where it was.
        from: FrameState,
    },
    /// A finished frame's file is deleted: its tombstone goes.
    Bury {
        /// The frame.
        seq: u64,
    },
}

/// The index failed at run time: since when and why.
#[derive(Debug)]
pub(super) struct Failure {
    /// When it failed.
    pub(super) since: SystemTime,
    /// sled's error.
    pub(super) error: String,
    /// When a repair was last tried.
    pub(super) last_try: Option<Instant>,
    /// Repairs tried.
    pub(super) tries: u64,
    /// Repairs that failed although there was room (not waiting for space).
    pub(super) rebuild_errors: u64,
}

/// Where a frame changed since the last successful flush stands now (`None`: finished or
/// forgotten), with the number of the change.
type Change = (u64, Option<(FrameState, Entry)>);

/// The sled database, its trees, and its failure if it failed.
pub(super) struct Store {
    pub(super) db: sled::Db,
    pub(super) trees: Trees,
    /// The index directory in use (`index`, or `index.<n>` after the n-th repair).
    pub(super) path: PathBuf,
    /// Bumped by every repair (a flush of a replaced database must not fail this one).
    pub(super) generation: u64,
    pub(super) failed: Option<Failure>,
    /// Every frame changed since the last successful flush (all of them once failed):
    /// what a repair lays over the last durable state.
    pub(super) changes: BTreeMap<u64, Change>,
    /// Frames finished since the last successful flush (their files wait for it).
    pub(super) finished: Vec<(u64, u64)>,
    /// Numbers the changes.
    changed: u64,
    /// The entries of the frames in flight (few: a batch or a handful of batches). Kept in
    /// memory so that settling them never reads a failed sled, whose reads can spin
    /// forever trying to finish a write.
    pub(super) inflight: BTreeMap<u64, Entry>,
}

impl Store {
    /// A store over an open database.
    pub(super) fn new(db: sled::Db, trees: Trees, path: PathBuf, generation: u64) -> Self {
        Self {
            db,
            trees,
            path,
            generation,
            failed: None,
            changes: BTreeMap::new(),
            finished: Vec::new(),
            changed: 0,
            inflight: BTreeMap::new(),
        }
    }

    /// Whether the index failed and waits for a repair.
    pub(super) fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The number of the last change (a flush that began after it makes it durable).
    pub(super) fn last_change(&self) -> u64 {
        self.changed
    }

    /// The changes up to `upto` are durable: forget them.
    pub(super) fn durable_upto(&mut self, upto: u64) {
        if self.failed.is_none() {
            self.changes.retain(|_, (n, _)| *n > upto);
            self.finished.retain(|(n, _)| *n > upto);
        }
    }

    /// Enters the failed state (logged once at ERROR).
    pub(super) fn fail(&mut self, error: &str) {
        if self.failed.is_some() {
            return;
        }
        error!(index = %self.path.display(), error,
            "the queue index failed (a full disk or an I/O error); frames are still written and counted, uploads wait, and the index is rebuilt from the spool files as soon as it can be");
        self.failed = Some(Failure {
            since: SystemTime::now(),
            error: error.to_string(),
            last_try: None,
            tries: 0,
            rebuild_errors: 0,
        });
    }

    /// The entry of `seq` if it is in `state` now. Never reads a failed sled.
    pub(super) fn get(&self, state: FrameState, seq: u64) -> Option<Entry> {
        if let Some((_, now)) = self.changes.get(&seq) {
            return match now {
                Some((s, e)) if *s == state => Some(e.clone()),
                _ => None,
            };
        }
        if state == FrameState::InFlight {
            return self.inflight.get(&seq).cloned();
        }
        if self.failed.is_some() {
            return None;
        }
        let v = self.trees.of(state).get(key(seq)).ok()??;
        decode_entry(&v)
    }

    /// Applies `ops` and stores `counters`, atomically. Once failed (or when this write
    /// fails) they are only remembered, for the repair; returns whether they reached sled.
    pub(super) fn apply(&mut self, ops: &[Op], counters: &Counters) -> bool {
        self.apply_in(ops, usize::MAX, &|_| *counters)
    }

    /// Applies `ops` in transactions of at most [`CHUNK`] changes, each storing the
    /// counters as they stand after its last change (`counters_after(n)`: after the first
    /// `n` changes). Every durable prefix is consistent, and a lease or an ack of
    /// thousands of frames does not hold them all in one transaction (sled keeps a
    /// transaction's whole write set in memory: 2 MiB more at the peak of a drain).
    pub(super) fn apply_chunked(
        &mut self,
        ops: &[Op],
        counters_after: &dyn Fn(usize) -> Counters,
    ) -> bool {
        self.apply_in(ops, CHUNK, counters_after)
    }

    fn apply_in(
        &mut self,
        ops: &[Op],
        chunk: usize,
        counters_after: &dyn Fn(usize) -> Counters,
    ) -> bool {
        for op in ops {
            self.changed += 1;
            let n = self.changed;
            match op {
                Op::Put { seq, to, entry } | Op::Move { seq, to, entry, .. } => {
                    if *to == FrameState::InFlight {
                        self.inflight.insert(*seq, entry.clone());
                    } else {
                        self.inflight.remove(seq);
                    }
                    self.changes.insert(*seq, (n, Some((*to, entry.clone()))));
                }
                Op::Finish { seq, .. } => {
                    self.inflight.remove(seq);
                    self.changes.insert(*seq, (n, None));
                    self.finished.push((n, *seq));
                }
                Op::Forget { seq, .. } => {
                    self.inflight.remove(seq);
                    self.changes.insert(*seq, (n, None));
                }
                Op::Bury { .. } => {}
            }
        }
        #[cfg(feature = "fault-injection")]
        if self.failed.is_none() && injected_failure(self.changed) {
            self.fail("an injected index failure (fault-injection build)");
        }
        if self.failed.is_none() {
            let mut done = 0;
            loop {
                let end = (done + chunk.max(1)).min(ops.len());
                if let Err(e) = self.transaction(&ops[done..end], &counters_after(end)) {
                    self.fail(&e.to_string());
                    return false;
                }
                done = end;
                if done >= ops.len() {
                    return true;
                }
            }
        }
        false
    }
    fn transaction(&self, ops: &[Op], counters: &Counters) -> Result<(), QueueError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let t = &self.trees;
        let all = [&t.pending, &t.inflight, &t.dead, &t.meta, &t.gone];
        let idx = |s: FrameState| match s {
            FrameState::Pending => 0,
            FrameState::InFlight => 1,
            FrameState::Dead => 2,
        };
        let counters = serde_json::to_vec(counters).unwrap_or_default();
        let res = all[..].transaction(|tx| {
            for op in ops {
                match op {
                    Op::Put { seq, to, entry } => {
                        tx[idx(*to)].insert(&key(*seq)[..], encode_entry(entry))?;
                    }
                    Op::Move {
                        seq,
                        from,
                        to,
                        entry,
                    } => {
                        if from != to {
                            tx[idx(*from)].remove(&key(*seq)[..])?;
                        }
                        tx[idx(*to)].insert(&key(*seq)[..], encode_entry(entry))?;
                    }
                    Op::Finish { seq, from } => {
                        tx[idx(*from)].remove(&key(*seq)[..])?;
                        tx[4].insert(&key(*seq)[..], &[1u8][..])?;
                    }
                    Op::Forget { seq, from } => {
                        tx[idx(*from)].remove(&key(*seq)[..])?;
                    }
                    Op::Bury { seq } => {
                        tx[4].remove(&key(*seq)[..])?;
                    }
                }
            }
            if !counters.is_empty() {
                tx[3].insert("counters", counters.as_slice())?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        res.map_err(|e| QueueError::Index {
            path: self.path.clone(),
            message: match e {
                TransactionError::Storage(e) => e.to_string(),
                TransactionError::Abort(()) => "transaction aborted".to_string(),
            },
        })
    }
}

/// Fault injection for the tests: `EDGECAP_FAULT_INDEX_FAIL_AFTER=N` fails the first
/// database past `N` changes, as a full disk would (once per process).
#[cfg(feature = "fault-injection")]
fn injected_failure(changed: u64) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    let after = std::env::var("EDGECAP_FAULT_INDEX_FAIL_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match after {
        Some(n) if changed > n => !DONE.swap(true, Ordering::Relaxed),
        _ => false,
    }
}

/// Why sled could not open the index.
pub(super) enum SledOpen {
    /// The file system is full: not a broken index.
    Full(String),
    /// Anything else (corruption, a panic inside sled, …).
    Broken(String),
}

impl SledOpen {
    pub(super) fn message(self) -> String {
        match self {
            Self::Full(m) | Self::Broken(m) => m,
        }
    }
}

/// The path of index generation `n` in `dir`.
pub(super) fn index_path(dir: &Path, generation: u64) -> PathBuf {
    if generation == 0 {
        dir.join("index")
    } else {
        dir.join(format!("index.{generation}"))
    }
}

/// The log segment size of a new index (module doc).
pub(super) const SEGMENT_BYTES: usize = 128 * 1024;

/// The segment size to open the index at `path` with: the one its `conf` file records
/// (sled opens a database with no other), [`SEGMENT_BYTES`] for a new index or when the
/// file does not say (sled then judges the index itself).
pub(super) fn segment_bytes_of(path: &Path) -> usize {
    std::fs::read(path.join("conf"))
        .ok()
        .and_then(|conf| recorded_segment_bytes(&conf))
        .unwrap_or(SEGMENT_BYTES)
}

/// `segment_size: N` of sled's `conf` file (lines of `key: value`, then a checksum).
fn recorded_segment_bytes(conf: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Opens sled at `path` (its page cache capped at `cache` bytes), telling a full disk
/// from a broken index.
pub(super) fn open_sled(path: &Path, cache: u64) -> Result<sled::Db, SledOpen> {
    let cfg = sled::Config::new()
        .path(path)
        .cache_capacity(cache)
        .segment_size(segment_bytes_of(path))
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(Some(1000));
    // sled panics on some kinds of corruption instead of returning an error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e))) if is_storage_full(&e) => Err(SledOpen::Full(e.to_string())),
        Ok(Err(e)) => Err(SledOpen::Broken(e.to_string())),
        Err(_) => Err(SledOpen::Broken(
            "sled panicked while opening the index".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(dir: &Path) -> Option<usize> {
        recorded_segment_bytes(&std::fs::read(dir.join("conf")).expect("sled's conf file"))
    }

    #[test]
    fn a_new_index_gets_small_segments_and_an_older_one_keeps_its_own() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let new = tmp.path().join("index");
        let db = open_sled(&new, 1 << 20).ok().expect("a new index opens");
        db.insert(b"k", b"v").expect("insert");
        db.flush().expect("flush");
        drop(db);
        assert_eq!(recorded(&new), Some(SEGMENT_BYTES));
        assert_eq!(segment_bytes_of(&new), SEGMENT_BYTES);

        // As edgecap made its index before: sled's default segments (512 KiB).
        let old = tmp.path().join("index.1");
        let db = sled::Config::new()
            .path(&old)
            .open()
            .expect("sled's defaults");
        db.insert(b"k", b"old").expect("insert");
        db.flush().expect("flush");
        drop(db);
        assert_eq!(recorded(&old), Some(512 * 1024));
        assert_eq!(segment_bytes_of(&old), 512 * 1024);
        let db = open_sled(&old, 1 << 20)
            .ok()
            .expect("an index with 512 KiB segments opens");
        assert_eq!(db.get(b"k").expect("read").as_deref(), Some(&b"old"[..]));
        drop(db);
        assert_eq!(recorded(&old), Some(512 * 1024));
    }

    #[test]
    fn a_conf_file_without_a_readable_segment_size_leaves_the_new_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(segment_bytes_of(tmp.path()), SEGMENT_BYTES);
        std::fs::write(tmp.path().join("conf"), b"use_compression: false\n").expect("write");
        assert_eq!(segment_bytes_of(tmp.path()), SEGMENT_BYTES);
        std::fs::write(tmp.path().join("conf"), b"segment_size: lots\n").expect("write");
        assert_eq!(segment_bytes_of(tmp.path()), SEGMENT_BYTES);
        assert_eq!(
            recorded_segment_bytes(
                b"segment_size: 131072\nuse_compression: false\nversion: 0.34\n\x01\xff"
            ),
            Some(131072)
        );
    }
}
