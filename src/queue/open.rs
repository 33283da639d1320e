//! Opening a queue: the directory lock, the index (the newest index directory; rebuilt
//! when sled cannot open it or it recovered an older state, the reserve given back when
//! the disk is full), and the reconcile of index and spool files whose rules the parent
//! module's docs list.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{error, info, warn};

use super::files::{RESERVE_BYTES, RESTART_MARK, ensure_reserve, parse_frame_name};
use super::index::{Entry, FrameState, Trees, decode_entry, index_err, seq_of, walk};
use super::store::{Op, SledOpen, Store, index_path, open_sled};
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
    /// The index was rebuilt from the spool files: it could not be opened, it was
    /// missing, or it had recovered an older state.
    pub index_rebuilt: bool,
    /// Spool files of finished frames (delivered, dropped) whose deletion a crash
    /// interrupted, deleted now.
    pub finished_removed: u64,
    /// The disk was full and the reserve was given back to open the index.
    pub reserve_released: bool,
    /// The last run exited for a restart because its failed index could not be rebuilt.
    pub restarted_for_repair: bool,
    /// The index an older version made was copied into smaller log segments.
    pub index_copied: bool,
}

/// The spool's frame files by number, sorted, each with whether an index entry claimed it.
/// Eight bytes and a flag per file: the reconcile of a 100,000-frame backlog holds no
/// file's metadata (it once held them all: memory that grew with the backlog and stayed
/// in the allocator after the start).
struct OnDisk {
    seqs: Vec<u64>,
    claimed: Vec<bool>,
}

impl OnDisk {
    /// `seqs` in ascending order, each once, as [`list_spool`] gives them.
    fn new(seqs: Vec<u64>) -> Self {
        let claimed = vec![false; seqs.len()];
        Self { seqs, claimed }
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.seqs.binary_search(&seq).ok()
    }
}

/// Missing spool files logged one by one at open; past this, one line gives the total.
const MISSING_LOGGED: u64 = 10;

/// The index directories in `dir` (`index` is generation 0, `index.<n>` generation n),
/// newest last.
fn index_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let generation = if name == "index" {
                0
            } else {
                name.strip_prefix("index.")?.parse().ok()?
            };
            Some((generation, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The spool directory's entries: committed frames' files by their numbers (a name is
/// `frame_name(seq)`), in sequence order, and anything else by its name.
///
/// Opening a 100k backlog peaked at 25.6 MiB of own memory when the names were strings in
/// the directory's (hash) order, and at 8 MiB since. The names were 5.7 MB of that peak
/// (heaptrack); as numbers they are 0.8 MB. The rest was the index: looked up in hash
/// order (`unknown_counted`), sled held 16 MB of the nodes it had read; in key order its
/// cache keeps to its size.
#[derive(Debug, Default)]
struct Listing {
    frames: Vec<u64>,
    others: Vec<String>,
}

fn list_spool(spool: &Path) -> Result<Listing, QueueError> {
    let mut listing = Listing::default();
    for ent in std::fs::read_dir(spool).map_err(io_err("cannot list", spool))? {
        let ent = ent.map_err(io_err("cannot list", spool))?;
        let name = ent.file_name();
        match name.to_str().and_then(parse_frame_name) {
            Some(seq) => listing.frames.push(seq),
            None => listing.others.push(name.to_string_lossy().into_owned()),
        }
    }
    listing.frames.sort_unstable();
    Ok(listing)
}

/// The counters kept outside the index (`<dir>/counters`), a floor should the index roll
/// back.
pub(super) fn read_floor(dir: &Path) -> Option<Counters> {
    serde_json::from_slice(&std::fs::read(dir.join("counters")).ok()?).ok()
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
        let receipts = super::receipts::Receipts::open(&dir, cfg.receipts_max_bytes);
        let kept = super::kept::Kept::open(&dir, cfg.keep_delivered_bytes);
        // A copy into smaller log segments that did not finish goes first.
        super::migrate::clean_unfinished(&dir);
        // The newest index directory is the index; older ones are left-overs of a repair
        // or of a copy into smaller log segments.
        let mut dirs = index_dirs(&dir);
        let (mut generation, mut index) = dirs.pop().unwrap_or((0, dir.join("index")));
        for (_, old) in dirs {
            match std::fs::remove_dir_all(&old) {
                Ok(()) => {
                    info!(index = %old.display(), "removed an index replaced by a repair or a copy")
                }
                Err(e) => warn!(index = %old.display(), error = %e, "cannot remove an old index"),
            }
        }
        let existed = index.exists();
        let mut db = Self::open_index(&dir, &index, cfg.index_cache_bytes, &mut report)?;
        let mut trees = Trees::open(&db, &index)?;
        let stored: Counters = trees
            .meta
            .get("counters")
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let floor = read_floor(&dir).unwrap_or_default();
        // An index that recovered an older state than one it once made durable: its
        // counters are behind the floor, or it does not know a frame it had counted.
        let mut older = stored.behind(&floor);
        // The spool is listed once, for this check and for the reconcile.
        let listing = list_spool(&spool)?;
        let unknown = Self::unknown_counted(&listing, &trees, stored.committed_through);
        if unknown > 0 {
            older.push(format!(
                "{unknown} committed frame(s) on disk unknown to the index"
            ));
        }
        if existed && !older.is_empty() {
            let aside = quarantine.join(format!(
                "index-older-{}",
                crate::frame::unix_ms(std::time::SystemTime::now())
            ));
            warn!(index = %index.display(), differences = older.join(", "), moved_to = %aside.display(),
                "the queue index recovered an older state than it had (damaged, or rolled back); rebuilding it from the spool files");
            drop(trees);
            drop(db);
            if let Err(e) = std::fs::rename(&index, &aside) {
                warn!(index = %index.display(), error = %e, "cannot move the older index aside");
            }
            generation += 1;
            index = index_path(&dir, generation);
            db = Self::open_index(&dir, &index, cfg.index_cache_bytes, &mut report)?;
            trees = Trees::open(&db, &index)?;
            report.index_rebuilt = true;
        }
        // An index an older version made, healthy: copied once into smaller segments.
        if existed
            && !report.index_rebuilt
            && super::migrate::needs_copy(&index)
            && let Some((new_db, new_index, new_generation)) =
                super::migrate::copy_to_small_segments(&dir, &db, generation, cfg.index_cache_bytes)
        {
            trees = Trees::open(&new_db, &new_index)?;
            db = new_db;
            index = new_index;
            generation = new_generation;
            report.index_copied = true;
        }
        let counters = stored.max(floor);
        let store = Store::new(db, trees, index.clone(), generation);
        let q = Queue {
            dir,
            spool,
            quarantine,
            max_frames: cfg.max_frames,
            max_bytes: cfg.max_bytes,
            on_full: cfg.on_full,
            index_cache_bytes: cfg.index_cache_bytes,
            receipts: Mutex::new(receipts),
            ledger_lock: Mutex::new(()),
            kept: Mutex::new(kept),
            state: Mutex::new(State {
                next_seq: 1,
                pending: Tally::default(),
                inflight: Tally::default(),
                dead: Tally::default(),
                reserved: Tally::default(),
                counters,
                durable: counters,
                dirty: false,
                flushed_at: std::time::Instant::now(),
                store,
                acked: Default::default(),
                full: false,
                thinner: Default::default(),
            }),
            notify: tokio::sync::Notify::new(),
            _lock: lock,
        };
        q.reconcile(&mut report, listing)?;
        if !existed && q.stats().pending.frames > 0 {
            report.index_rebuilt = true;
        }
        q.write_floor();
        // Set the reserve aside again once there is room (not right after giving it back:
        // the frames that filled the disk must drain first).
        if !report.reserve_released {
            ensure_reserve(&q.dir.join("reserve"));
        }
        Ok((q, report))
    }

    /// Opens the index at `index`: a full disk gives back the reserve and tries again; an
    /// index sled cannot open is moved to quarantine and started afresh.
    fn open_index(
        dir: &Path,
        index: &Path,
        cache: u64,
        report: &mut OpenReport,
    ) -> Result<sled::Db, QueueError> {
        let reserve = dir.join("reserve");
        match open_sled(index, cache) {
            Ok(db) => Ok(db),
            // A full disk is not a broken index: give back the reserve and try again.
            Err(SledOpen::Full(msg)) => {
                if std::fs::remove_file(&reserve).is_err() {
                    return Err(QueueError::Index {
                        path: index.to_path_buf(),
                        message: format!(
                            "{msg}; the disk is full and edgecap's reserve is already used: free some space"
                        ),
                    });
                }
                report.reserve_released = true;
                error!(dir = %dir.display(), reserve_bytes = RESERVE_BYTES,
                    "the disk is full: released edgecap's reserve so that the queue can open; free space, or let the uploader drain the queue");
                open_sled(index, cache).map_err(|e| QueueError::Index {
                    path: index.to_path_buf(),
                    message: e.message(),
                })
            }
            Err(SledOpen::Broken(msg)) => {
                let aside = dir.join("quarantine").join(format!(
                    "index-{}",
                    crate::frame::unix_ms(std::time::SystemTime::now())
                ));
                warn!(index = %index.display(), moved_to = %aside.display(), error = %msg,
                    "queue index cannot be opened; moving it aside and rebuilding it from the spool files");
                if index.exists() {
                    std::fs::rename(index, &aside)
                        .map_err(io_err("cannot move broken index aside", index))?;
                }
                report.index_rebuilt = true;
                open_sled(index, cache).map_err(|e| QueueError::Index {
                    path: index.to_path_buf(),
                    message: e.message(),
                })
            }
        }
    }

    /// Spool files at or below `through` (so counted as committed in the index's state)
    /// that the index has neither an entry nor a tombstone for. A consistent index has
    /// none: every commit lands with its count.
    fn unknown_counted(listing: &Listing, trees: &Trees, through: u64) -> u64 {
        let known = |seq: u64| {
            let k = super::index::key(seq);
            FrameState::ALL
                .iter()
                .any(|s| trees.of(*s).contains_key(k).unwrap_or(true))
                || trees.gone.contains_key(k).unwrap_or(true)
        };
        listing
            .frames
            .iter()
            .filter(|&&seq| seq <= through && !known(seq))
            .count() as u64
    }

    /// `listing`: the spool directory's entries ([`list_spool`]).
    fn reconcile(&self, report: &mut OpenReport, listing: Listing) -> Result<(), QueueError> {
        let mut st = self.state();
        let index_path = st.store.path.clone();
        let ie = index_err(&index_path);
        // Finished frames whose file deletion a crash interrupted: delete them now.
        let mut finished: BTreeSet<u64> = BTreeSet::new();
        let mut bury = Vec::new();
        for kv in walk(&st.store.trees.gone) {
            let (k, _) = kv.map_err(&ie)?;
            if let Some(seq) = seq_of(&k) {
                finished.insert(seq);
                bury.push(Op::Bury { seq });
            }
        }
        // Seqs whose file was just quarantined (already counted and logged as such).
        let mut bad: BTreeSet<u64> = BTreeSet::new();
        for name in listing.others {
            let path = self.spool.join(&name);
            if name.ends_with(".tmp") {
                match std::fs::remove_file(&path) {
                    Ok(()) => report.tmp_removed += 1,
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot remove temporary file")
                    }
                }
            } else {
                self.quarantine_file(&path, "unexpected file in the spool directory");
                report.quarantined += 1;
            }
        }
        let mut seqs = listing.frames;
        seqs.retain(|&seq| {
            if !finished.contains(&seq) {
                return true;
            }
            let path = self.path_of(seq);
            match std::fs::remove_file(&path) {
                Ok(()) => report.finished_removed += 1,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot delete a finished frame's file")
                }
            }
            false
        });
        let mut files = OnDisk::new(seqs);
        // A file's header is read when its entry (or its absence) is reconciled, one file
        // at a time; a damaged one is quarantined then.
        let check = |seq: u64, report: &mut OpenReport, bad: &mut BTreeSet<u64>| {
            let path = self.path_of(seq);
            match spool::read_meta_of(&path, seq) {
                Ok((h, m)) => Some((h.file_len(), m.filename, m.groups)),
                Err(e) => {
                    self.quarantine_file(&path, &e.to_string());
                    report.quarantined += 1;
                    bad.insert(seq);
                    None
                }
            }
        };
        let mut max_seq = 0u64;
        // Index changes that land atomically with the counters (see below).
        let mut ops: Vec<Op> = bury;
        for state in FrameState::ALL {
            let mut moved = Vec::new();
            for kv in walk(st.store.trees.of(state)) {
                let (k, v) = kv.map_err(&ie)?;
                let Some(seq) = seq_of(&k) else {
                    let _ = st.store.trees.of(state).remove(k);
                    continue;
                };
                max_seq = max_seq.max(seq);
                let entry = decode_entry(&v);
                let at = files.position(seq).filter(|&i| !files.claimed[i]);
                let on_disk = match (at, &entry) {
                    (Some(i), Some(_)) => {
                        files.claimed[i] = true;
                        check(seq, report, &mut bad)
                    }
                    _ => None,
                };
                match (on_disk, entry) {
                    (Some((file_len, filename, _)), Some(mut e)) => {
                        e.bytes = file_len;
                        if e.filename != filename {
                            e.filename = filename;
                        }
                        match state {
                            FrameState::InFlight => moved.push((seq, e)),
                            FrameState::Dead => st.dead.add(file_len),
                            FrameState::Pending => st.pending.add(file_len),
                        }
                    }
                    (_, entry) => {
                        ops.push(Op::Forget { seq, from: state });
                        let found = files.position(seq).is_some();
                        if !found && !bad.contains(&seq) && !finished.contains(&seq) {
                            report.index_dropped += 1;
                            if report.index_dropped <= MISSING_LOGGED {
                                let filename = entry.map(|e| e.filename).unwrap_or_default();
                                error!(seq, filename, spool = %self.spool.display(),
                                    "a queued frame's spool file is missing (deleted outside edgecap); the frame is lost and dropped from the index");
                            }
                        }
                    }
                }
            }
            for (seq, mut e) in moved {
                st.pending.add(e.bytes);
                report.interrupted += 1;
                e.interrupted = true;
                ops.push(Op::Move {
                    seq,
                    from: FrameState::InFlight,
                    to: FrameState::Pending,
                    entry: e,
                });
            }
        }
        let through = st.counters.committed_through;
        for i in 0..files.seqs.len() {
            let seq = files.seqs[i];
            max_seq = max_seq.max(seq);
            if files.claimed[i] {
                continue;
            }
            let Some((file_len, filename, groups)) = check(seq, report, &mut bad) else {
                continue;
            };
            let e = Entry::new(file_len, filename, groups);
            st.pending.add(e.bytes);
            report.reindexed += 1;
            // Committed after the index's last durable state: not counted yet.
            if seq > through {
                st.counters.committed += 1;
                st.counters.committed_through = st.counters.committed_through.max(seq);
            }
            ops.push(Op::Put {
                seq,
                to: FrameState::Pending,
                entry: e,
            });
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
        let mark = self.dir.join(RESTART_MARK);
        if mark.exists() {
            report.restarted_for_repair = true;
            st.counters.index_restarts += 1;
        }
        // The moves and the counters that report them land together: a crash (or sled's
        // background flush) can never leave frames moved out of `inflight` without their
        // `interrupted` count, so the lifetime counter bounds the duplicates exactly.
        if !st.apply(&ops) {
            return Err(QueueError::Index {
                path: index_path.clone(),
                message: "cannot write the reconciled index".to_string(),
            });
        }
        st.store.db.flush().map_err(&ie)?;
        if report.restarted_for_repair {
            let _ = std::fs::remove_file(&mark);
            warn!(
                "started again because the last run could not rebuild its failed queue index in-process (counted in index_restarts)"
            );
        }
        let upto = st.store.last_change();
        st.store.durable_upto(upto);
        st.durable = st.counters;
        Ok(())
    }

    /// Writes the durable counters to `<dir>/counters` (temporary file, fsync, rename): a
    /// floor for the next open should the index roll back. Best effort.
    pub fn write_floor(&self) {
        let c = self.state().durable;
        let path = self.dir.join("counters");
        let tmp = self.dir.join("counters.tmp");
        let res = (|| -> std::io::Result<()> {
            let v = serde_json::to_vec(&c).map_err(std::io::Error::other)?;
            let mut f = File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &v)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            spool::sync_dir(&self.dir)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(file = %path.display(), error = %e, "cannot write the counters floor");
        }
    }
}
