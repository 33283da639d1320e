//! Repairing a failed index in-process, without a restart.
//!
//! When sled fails at run time (see `store.rs`), the queue keeps counting in memory and
//! leases nothing. [`Queue::repair_if_failed`], called before every lease and from the
//! daemon's status tick, rebuilds the index once there is room again (at least
//! [`RESERVE_BYTES`] free), at most every [`RETRY_EVERY`]:
//!
//! 1. what the failed index still answers (sled keeps serving reads after its writer
//!    failed), with the changes made since it failed laid over it;
//! 2. the spool directory, the truth: a frame whose file is there and that the index does
//!    not know is pending (it was committed while the index failed); a finished frame's
//!    file is deleted; an entry without a file is dropped and counted;
//! 3. a fresh sled database in the next index directory (`index.<n>`), written in one
//!    transaction with the counters and flushed; only then does it replace the failed one,
//!    whose directory is removed.
//!
//! Frames in flight stay in flight (the uploader may be waiting for the platform's word
//! on them). The capture side waits for the repair (it holds the queue's lock): it reads
//! headers only, so it takes about as long as the reconcile at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::warn;

use super::files::{RESERVE_BYTES, RESTART_MARK, dir_size, free_bytes, parse_frame_name};
use super::index::{Entry, FrameState, Trees, decode_entry, seq_of};
use super::store::{Op, Store, index_path, open_sled};
use super::{Queue, QueueError, State, Tally, spool};

/// Frames by sequence number, with their state and entry.
type View = BTreeMap<u64, (FrameState, Entry)>;

/// Failed rebuilds (with room on the disk) after which the daemon restarts instead.
pub const HOPELESS_AFTER: u64 = 5;

/// Least time between two repair attempts.
pub const RETRY_EVERY: Duration = Duration::from_secs(3);

impl Queue {
    /// If the index has failed, tries to repair it (at most every [`RETRY_EVERY`]).
    /// `Ok` when the index works; [`QueueError::IndexFailed`] while it cannot be repaired
    /// yet.
    pub fn repair_if_failed(&self) -> Result<(), QueueError> {
        let mut st = self.state();
        let Some(f) = &mut st.store.failed else {
            return Ok(());
        };
        let error = f.error.clone();
        if f.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Err(QueueError::IndexFailed { error });
        }
        f.last_try = Some(Instant::now());
        f.tries += 1;
        let tries = f.tries;
        let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
        let needed = RESERVE_BYTES + dir_size(&st.store.path);
        if free < needed {
            if tries == 1 || tries.is_multiple_of(20) {
                warn!(dir = %self.dir.display(), free_bytes = free, needed_bytes = needed,
                    "the queue index waits for free space to be rebuilt");
            }
            return Err(QueueError::IndexFailed { error });
        }
        #[cfg(feature = "fault-injection")]
        let res = if std::env::var_os("EDGECAP_FAULT_REPAIR_FAILS").is_some() {
            Err(QueueError::IndexFailed {
                error: "an injected repair failure (fault-injection build)".into(),
            })
        } else {
            self.rebuild(&mut st)
        };
        #[cfg(not(feature = "fault-injection"))]
        let res = self.rebuild(&mut st);
        match res {
            Ok(()) => {
                drop(st);
                self.write_floor();
                Ok(())
            }
            Err(e) => {
                if let Some(f) = &mut st.store.failed {
                    f.rebuild_errors += 1;
                }
                warn!(error = %e, "cannot rebuild the failed queue index yet; trying again");
                Err(QueueError::IndexFailed {
                    error: e.to_string(),
                })
            }
        }
    }

    /// Whether the failed index cannot be rebuilt in this process: [`HOPELESS_AFTER`]
    /// rebuilds failed although there was room. The daemon then exits with its own code
    /// for systemd to restart it (counted at the next open in `index_restarts`).
    pub fn repair_hopeless(&self) -> bool {
        self.state()
            .store
            .failed
            .as_ref()
            .is_some_and(|f| f.rebuild_errors >= HOPELESS_AFTER)
    }

    /// Notes in the queue directory that the daemon exits for a restart because the index
    /// cannot be repaired in-process (the next open counts it).
    pub fn mark_restart_for_repair(&self) {
        let path = self.dir.join(RESTART_MARK);
        if let Err(e) = std::fs::write(&path, b"the index could not be repaired in-process\n")
            .and_then(|_| spool::sync_dir(&self.dir))
        {
            warn!(file = %path.display(), error = %e, "cannot note the restart for the index repair");
        }
    }

    /// What the failed index had made durable, read from a copy of its files (sled's
    /// reads of the failed database itself can spin trying to finish a write): the frames
    /// by state and the tombstones. `None` when the copy cannot be made or opened.
    fn read_durable(&self, st: &State) -> Option<(View, BTreeSet<u64>)> {
        let copy = self.dir.join("index.copy");
        let _ = std::fs::remove_dir_all(&copy);
        if let Err(e) = copy_dir(&st.store.path, &copy) {
            warn!(index = %st.store.path.display(), error = %e, "cannot copy the failed index to read it");
            let _ = std::fs::remove_dir_all(&copy);
            return None;
        }
        let out = match open_sled(&copy, self.index_cache_bytes) {
            Ok(db) => Trees::open(&db, &copy).ok().map(|trees| {
                let mut view = BTreeMap::new();
                for state in FrameState::ALL {
                    for (k, v) in trees.of(state).iter().flatten() {
                        if let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) {
                            view.insert(seq, (state, e));
                        }
                    }
                }
                let gone = trees
                    .gone
                    .iter()
                    .flatten()
                    .filter_map(|(k, _)| seq_of(&k))
                    .collect();
                (view, gone)
            }),
            Err(e) => {
                warn!(index = %st.store.path.display(), error = %e.message(), "cannot open a copy of the failed index");
                None
            }
        };
        let _ = std::fs::remove_dir_all(&copy);
        out
    }

    fn rebuild(&self, st: &mut State) -> Result<(), QueueError> {
        let started = Instant::now();
        // 1. What the failed index had made durable, with every change since laid over it.
        let (mut view, mut finished) = self.read_durable(st).unwrap_or_else(|| {
            warn!("rebuilding the queue index from the spool files alone: dead frames are tried again and recorded sessions are forgotten");
            Default::default()
        });
        for (seq, (_, now)) in &st.store.changes {
            match now {
                Some(se) => {
                    view.insert(*seq, se.clone());
                }
                None => {
                    view.remove(seq);
                }
            }
        }
        finished.extend(st.store.finished.iter().map(|(_, seq)| *seq));
        for (seq, e) in &st.store.inflight {
            view.insert(*seq, (FrameState::InFlight, e.clone()));
        }
        // 2. The spool directory.
        let mut ops = Vec::new();
        let mut found: BTreeSet<u64> = BTreeSet::new();
        let mut tallies = [Tally::default(); 3];
        let mut reindexed = 0u64;
        let mut quarantined = 0u64;
        let rd =
            std::fs::read_dir(&self.spool).map_err(super::io_err("cannot list", &self.spool))?;
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some(seq) = parse_frame_name(&name) else {
                continue;
            };
            if finished.contains(&seq) {
                continue;
            }
            let (state, entry) = match view.get(&seq) {
                Some((s, e)) => (*s, e.clone()),
                None => match spool::read_meta_of(&ent.path(), seq) {
                    Ok((h, m)) => {
                        reindexed += 1;
                        (
                            FrameState::Pending,
                            Entry::new(h.file_len(), m.filename, m.groups),
                        )
                    }
                    Err(e) => {
                        self.quarantine_file(&ent.path(), &e.to_string());
                        quarantined += 1;
                        continue;
                    }
                },
            };
            found.insert(seq);
            tallies[state as usize].add(entry.bytes);
            ops.push(Op::Put {
                seq,
                to: state,
                entry,
            });
        }
        let missing = view.keys().filter(|s| !found.contains(s)).count() as u64;
        // 3. A fresh index, durable before it replaces the failed one.
        let generation = st.store.generation + 1;
        let path = index_path(&self.dir, generation);
        let _ = std::fs::remove_dir_all(&path);
        let db = open_sled(&path, self.index_cache_bytes).map_err(|e| QueueError::Index {
            path: path.clone(),
            message: e.message(),
        })?;
        let trees = Trees::open(&db, &path)?;
        let mut counters = st.counters;
        counters.index_repairs += 1;
        counters.quarantined += quarantined;
        counters.index_dropped += missing;
        let mut fresh = Store::new(db, trees, path.clone(), generation);
        let written = fresh.apply(&ops, &counters) && fresh.db.flush().is_ok();
        let upto = fresh.last_change();
        fresh.durable_upto(upto);
        if !written {
            let why = fresh
                .failed
                .as_ref()
                .map(|f| f.error.clone())
                .unwrap_or_else(|| "cannot flush the new index".to_string());
            drop(fresh);
            let _ = std::fs::remove_dir_all(&path);
            return Err(QueueError::Index { path, message: why });
        }
        let old = std::mem::replace(&mut st.store, fresh);
        let failed_since = old.failed.as_ref().map(|f| f.since);
        let old_path = old.path.clone();
        drop(old);
        if let Err(e) = std::fs::remove_dir_all(&old_path) {
            warn!(index = %old_path.display(), error = %e, "cannot remove the failed index");
        }
        let [pending, inflight, dead] = tallies;
        st.pending = pending;
        st.inflight = inflight;
        st.dead = dead;
        st.counters = counters;
        st.durable = counters;
        for seq in &finished {
            let _ = std::fs::remove_file(self.path_of(*seq));
        }
        warn!(index = %path.display(), pending = pending.frames, in_flight = inflight.frames,
            dead = dead.frames, reindexed, missing, quarantined,
            failed_for_secs = failed_since.and_then(|t| t.elapsed().ok()).map_or(0, |d| d.as_secs()),
            took_ms = started.elapsed().as_millis() as u64,
            "the queue index was rebuilt after its failure; uploads resume");
        self.notify.notify_one();
        Ok(())
    }
}

/// Copies the files of a sled directory (no sub-folders beyond one level).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}
