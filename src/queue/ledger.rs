//! The bytes the uploader sent, for the link's byte budgets (`daily_budget`,
//! `monthly_budget`):
//!
//! ```text
//! <dir>/sent   {"day":"2026-11-26","day_bytes":…,"period":"2026-11-01","period_bytes":…,"total_bytes":…}
//! ```
//!
//! Written whole (temporary file, fdatasync, rename, directory fsync) *before* the bytes it
//! counts are sent: a crash after the write over-counts what did not go out, never the
//! other way round, so the budget holds across any number of crashes. A file rather than
//! a sled key because the index can be rebuilt from the spool files, which would reset the
//! budgets; this file is never rebuilt. Unreadable (damaged) it reads as zero, with a
//! warning — the only case where a budget can be overspent.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Queue;

/// What was sent today, this budget month and ever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sent {
    /// The local day `day_bytes` counts (`YYYY-MM-DD`).
    pub day: String,
    /// Bytes sent on `day`.
    pub day_bytes: u64,
    /// The first day of the budget month `period_bytes` counts (`YYYY-MM-DD`).
    pub period: String,
    /// Bytes sent in `period`.
    pub period_bytes: u64,
    /// Bytes sent over the queue's life.
    pub total_bytes: u64,
}

impl Sent {
    /// The counts as of `day` in the budget month starting `period`: a count of another
    /// day or month is zero.
    pub fn at(&self, day: &str, period: &str) -> Sent {
        Sent {
            day: day.to_string(),
            day_bytes: if self.day == day { self.day_bytes } else { 0 },
            period: period.to_string(),
            period_bytes: if self.period == period {
                self.period_bytes
            } else {
                0
            },
            total_bytes: self.total_bytes,
        }
    }
}

impl Queue {
    fn ledger_path(&self) -> PathBuf {
        self.dir.join("sent")
    }

    /// The ledger as last written.
    pub fn sent(&self) -> Sent {
        match std::fs::read(self.ledger_path()) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(file = %self.ledger_path().display(), error = %e,
                    "the sent-bytes ledger cannot be read; the byte budgets start again from zero");
                Sent::default()
            }),
            Err(_) => Sent::default(),
        }
    }

    /// Counts `bytes` as sent on `day` in the budget month starting `period`, durably,
    /// before they are sent. Returns the new counts.
    pub fn note_sent(&self, day: &str, period: &str, bytes: u64) -> std::io::Result<Sent> {
        let _g = self.ledger_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.sent().at(day, period);
        s.day_bytes += bytes;
        s.period_bytes += bytes;
        s.total_bytes += bytes;
        let json = serde_json::to_vec(&s).map_err(std::io::Error::other)?;
        let path = self.ledger_path();
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(s)
    }
}
