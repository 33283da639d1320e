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
    /// Frames whose image the platform accepted but whose metadata had to be sent again
    /// (metadata only; the image is not re-sent).
    pub metadata_retried: u64,
    /// Frames found on the platform after a restart (their session was recorded) and
    /// acknowledged without sending their images again.
    pub recovered: u64,
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
