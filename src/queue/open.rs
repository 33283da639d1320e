//! Opening a queue: the directory lock, the index (rebuilt when sled cannot open it, the
//! reserve given back when the disk is full), and the reconcile of index and spool files
//! whose rules the parent module's docs list.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use sled::Transactional;
use tracing::{error, warn};

use super::files::{RESERVE_BYTES, ensure_reserve, is_storage_full, parse_frame_name};
use super::index::{Entry, FrameState, Trees, decode_entry, encode_entry, index_err, key, seq_of};
use super::{Counters, Queue, QueueError, State, Tally, io_err, spool};
use crate::config::QueueConfig;

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

/// What the reconcile keeps of a valid spool file.
struct OnDisk {
    file_len: u64,
    filename: String,
    groups: Vec<String>,
}

/// Missing spool files logged one by one at open; past this, one line gives the total.
const MISSING_LOGGED: u64 = 10;

/// Why sled could not open the index.
enum SledOpen {
    /// The file system is full: not a broken index.
    Full(String),
    /// Anything else (corruption, a panic inside sled, …).
    Broken(String),
}

impl SledOpen {
    fn message(self) -> String {
        match self {
            Self::Full(m) | Self::Broken(m) => m,
        }
    }
}

fn open_sled(path: &Path, cache: u64) -> Result<sled::Db, SledOpen> {
    let cfg = sled::Config::new()
        .path(path)
        .cache_capacity(cache)
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
            Err(SledOpen::Full(msg)) => {
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
                open_sled(&index, cfg.index_cache_bytes).map_err(|e| QueueError::Index {
                    path: index.clone(),
                    message: e.message(),
                })?
            }
            Err(SledOpen::Broken(msg)) => {
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
                open_sled(&index, cfg.index_cache_bytes).map_err(|e| QueueError::Index {
                    path: index.clone(),
                    message: e.message(),
                })?
            }
        };
        let trees = Trees::open(&db, &index)?;
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

    fn reconcile(&self, report: &mut OpenReport) -> Result<(), QueueError> {
        // Per spool file only what the index needs (its custom metadata is dropped at once:
        // with a 10,000-frame backlog holding whole metadata here cost ~30 MiB of heap).
        let mut files: BTreeMap<u64, OnDisk> = BTreeMap::new();
        // Seqs whose file was just quarantined (already counted and logged as such).
        let mut bad: BTreeSet<u64> = BTreeSet::new();
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
        let mut indexed: BTreeSet<u64> = BTreeSet::new();
        let mut st = self.state();
        // Index changes that must land atomically with the counters (see below).
        let mut interrupted: Vec<(u64, Entry)> = Vec::new();
        let mut reindexed: Vec<(u64, Entry)> = Vec::new();
        for state in FrameState::ALL {
            let tree = self.trees.of(state);
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
                    (Some(f), Some(mut e)) if !indexed.contains(&seq) => {
                        indexed.insert(seq);
                        e.bytes = f.file_len;
                        e.filename.clone_from(&f.filename);
                        match state {
                            FrameState::InFlight => to_pending.push((seq, e)),
                            FrameState::Dead => st.dead.add(f.file_len),
                            FrameState::Pending => st.pending.add(f.file_len),
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
            if indexed.contains(&seq) {
                continue;
            }
            let e = Entry {
                bytes: f.file_len,
                filename: f.filename,
                groups: f.groups,
                attempts: 0,
                last_error: None,
                image_delivered: false,
                session: None,
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
}
