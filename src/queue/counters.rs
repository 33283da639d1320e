//! What the queue counts: [`Tally`] (frames and bytes per state), the lifetime
//! [`Counters`] persisted in the index, and the [`Stats`] snapshot.

use serde::{Deserialize, Serialize};

/// Frames and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    pub(super) fn add(&mut self, bytes: u64) {
        self.frames += 1;
        self.bytes += bytes;
    }
    pub(super) fn sub(&mut self, bytes: u64) {
        self.frames = self.frames.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Lifetime counters, stored in the index in the same transaction as the change each one
/// counts, and copied to `<dir>/counters` (a floor should the index roll back). Over a
/// queue's life, with no file removed or damaged outside edgecap:
/// `committed = uploaded + pending + in flight + dead + evicted + purged + quarantined +
/// index_dropped`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Frames committed (fsync'd and indexed).
    pub committed: u64,
    /// Frames the platform accepted (deleted from the queue).
    pub uploaded: u64,
    /// Frames dropped by the budget policy: committed frames deleted to make room
    /// (`evicted`) and new frames refused.
    pub dropped_budget: u64,
    /// Committed frames deleted to make room for new ones (part of `dropped_budget`).
    pub evicted: u64,
    /// Dead frames deleted by the operator (`edgecap queue purge-dead`).
    pub purged: u64,
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
    /// Frames whose image the platform accepted but whose metadata had to be sent again
    /// (metadata only; the image is not re-sent).
    pub metadata_retried: u64,
    /// Frames found on the platform after a restart (their session was recorded) and
    /// acknowledged without sending their images again.
    pub recovered: u64,
    /// Frames handed to the platform again after a crash or a stop left their fate
    /// unknown (they may reach it twice).
    pub resent_after_crash: u64,
    /// Frames handed to the platform again after a failed attempt (an error, a timeout,
    /// a refused batch being split).
    pub resent_after_error: u64,
    /// Times the index failed at run time and was rebuilt without a restart.
    pub index_repairs: u64,
    /// Times the daemon restarted because a failed index could not be rebuilt in-process.
    pub index_restarts: u64,
    /// Highest sequence number counted in `committed` (a spool file above it that the
    /// index does not know was committed after the index's last durable state).
    pub committed_through: u64,
    /// Next sequence number (kept so numbers are not reused after a clean restart).
    pub next_seq: u64,
}

impl Counters {
    /// Each counter the larger of the two (the floor kept outside the index).
    pub fn max(self, o: Counters) -> Counters {
        Counters {
            committed: self.committed.max(o.committed),
            uploaded: self.uploaded.max(o.uploaded),
            dropped_budget: self.dropped_budget.max(o.dropped_budget),
            evicted: self.evicted.max(o.evicted),
            purged: self.purged.max(o.purged),
            dropped_write: self.dropped_write.max(o.dropped_write),
            quarantined: self.quarantined.max(o.quarantined),
            dead: self.dead.max(o.dead),
            interrupted: self.interrupted.max(o.interrupted),
            index_dropped: self.index_dropped.max(o.index_dropped),
            reindexed: self.reindexed.max(o.reindexed),
            metadata_retried: self.metadata_retried.max(o.metadata_retried),
            recovered: self.recovered.max(o.recovered),
            resent_after_crash: self.resent_after_crash.max(o.resent_after_crash),
            resent_after_error: self.resent_after_error.max(o.resent_after_error),
            index_repairs: self.index_repairs.max(o.index_repairs),
            index_restarts: self.index_restarts.max(o.index_restarts),
            committed_through: self.committed_through.max(o.committed_through),
            next_seq: self.next_seq.max(o.next_seq),
        }
    }

    /// The counters that are smaller here than in `o`, by name (empty when none is).
    pub fn behind(&self, o: &Counters) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(o).unwrap_or_default();
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        a.iter()
            .filter_map(|(k, v)| {
                let (x, y) = (v.as_u64()?, b.get(k)?.as_u64()?);
                (x < y).then(|| format!("{k} {x} < {y}"))
            })
            .collect()
    }
}

/// The index failed at run time and waits for its repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFailure {
    /// Since when (RFC 3339, UTC).
    pub since: String,
    /// What failed.
    pub error: String,
}

/// A snapshot of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Waiting for upload.
    pub pending: Tally,
    /// Being uploaded.
    pub inflight: Tally,
    /// Refused by the platform, kept for inspection.
    pub dead: Tally,
    /// Lifetime counters (as durable in the index).
    pub counters: Counters,
    /// Set while the index has failed and waits for its repair.
    pub index_failed: Option<IndexFailure>,
}
