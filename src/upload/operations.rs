//! Platform operations followed in the background (a Nexus session's processing), with the
//! frames each one decides. The uploader sends the next batch while they run, up to
//! [`MAX_OPEN_OPERATIONS`] at once.

use std::collections::HashMap;

use tokio::task::{Id, JoinSet};
use tracing::warn;

use super::sink::{Outcome, Pending};

/// Operations followed at once; past this the uploader waits for one before the next batch.
pub const MAX_OPEN_OPERATIONS: usize = 4;

/// The operations under way.
#[derive(Default)]
pub struct Operations {
    set: JoinSet<Vec<(u64, Outcome)>>,
    seqs: HashMap<Id, Vec<u64>>,
}

impl Operations {
    /// Follows `p` in the background.
    pub fn spawn(&mut self, p: Pending) {
        let h = self.set.spawn(p.fut);
        self.seqs.insert(h.id(), p.seqs);
    }

    /// How many are under way.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is under way.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next finished operation (its frames, its outcomes); never resolves when empty.
    pub async fn next(&mut self) -> (Vec<u64>, Vec<(u64, Outcome)>) {
        match self.set.join_next_with_id().await {
            Some(Ok((id, outcomes))) => (self.seqs.remove(&id).unwrap_or_default(), outcomes),
            Some(Err(e)) => {
                let seqs = self.seqs.remove(&e.id()).unwrap_or_default();
                warn!(error = %e, frames = seqs.len(), "an operation follow-up failed; its frames stay queued");
                (seqs, Vec::new())
            }
            None => std::future::pending().await,
        }
    }

    /// Aborts what is left; returns the frames they were deciding.
    pub fn abort(&mut self) -> Vec<u64> {
        self.set.abort_all();
        self.seqs.drain().flat_map(|(_, s)| s).collect()
    }
}
