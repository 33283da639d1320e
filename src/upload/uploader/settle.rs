//! How the sink's outcomes reach the queue: acknowledged, released, failed, killed,
//! marked for a metadata-only retry, or kept with their session (for the next start's
//! recovery, or to be asked about before they are sent again), one index update per
//! distinct reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Uploader;
use crate::ops::health::Beat;
use crate::queue::Delivered;
use crate::upload::sink::{Outcome, Sink};

impl<S: Sink> Uploader<S> {
    /// Applies outcomes: `seqs` are the frames decided here; any of them without an
    /// outcome goes back to pending.
    pub(super) async fn apply(&self, seqs: &[u64], outcomes: &[(u64, Outcome)]) {
        let mut accepted = Vec::new();
        let mut retry: Vec<(u64, String)> = Vec::new();
        let mut failed: Vec<(u64, String)> = Vec::new();
        let mut rejected: Vec<(u64, String)> = Vec::new();
        let mut metadata: Vec<(u64, String)> = Vec::new();
        let mut unknown: Vec<(u64, String)> = Vec::new();
        let mut unconfirmed: Vec<(u64, String)> = Vec::new();
        let mut unsent: Vec<(u64, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (seq, o) in outcomes {
            seen.insert(*seq);
            match o {
                Outcome::Accepted => accepted.push((*seq, None)),
                Outcome::AcceptedAs(id) => accepted.push((*seq, Some(id.clone()))),
                Outcome::Retry(m) => retry.push((*seq, m.clone())),
                Outcome::Failed(m) => failed.push((*seq, m.clone())),
                Outcome::Rejected(m) => rejected.push((*seq, m.clone())),
                Outcome::MetadataPending(m) => metadata.push((*seq, m.clone())),
                Outcome::Unknown(m) => unknown.push((*seq, m.clone())),
                Outcome::Unconfirmed(m) => unconfirmed.push((*seq, m.clone())),
                Outcome::NotSent(m) => unsent.push((*seq, m.clone())),
                Outcome::Gone => {}
            }
        }
        for s in seqs {
            if !seen.contains(s) {
                retry.push((*s, "not sent".to_string()));
            }
        }
        // Receipt facts of the accepted frames; every decided frame's are dropped.
        let delivered: Vec<Delivered> = {
            let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
            let out = accepted
                .iter()
                .map(|(seq, asset)| {
                    let mut d = facts.remove(seq).unwrap_or_else(|| Delivered {
                        seq: *seq,
                        filename: String::new(),
                        crc32c: 0,
                        bytes: 0,
                        captured_ms: None,
                        asset: None,
                    });
                    d.asset = asset.clone();
                    d
                })
                .collect();
            for s in seen.iter().chain(seqs) {
                facts.remove(s);
            }
            out
        };
        let sink = self.cfg.sink.name();
        let stats = &self.stats;
        stats.state.delivered(
            delivered.len() as u64,
            delivered.iter().map(|d| d.bytes).sum(),
        );
        stats
            .accepted
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        stats
            .retried
            .fetch_add((retry.len() + unsent.len()) as u64, Ordering::Relaxed);
        let q = Arc::clone(&self.queue);
        let max_attempts = self.cfg.max_attempts;
        let dead = blocking(&self.beat, "queue update", move || {
            q.deliver(&delivered, sink);
            // One index update per distinct reason, not one per frame.
            for (m, seqs) in by_reason(&retry) {
                q.release(&seqs, Some(m));
            }
            for (m, seqs) in by_reason(&metadata) {
                q.image_delivered(&seqs, m);
            }
            for (m, seqs) in by_reason(&unsent) {
                q.release_unsent(&seqs, m);
            }
            for (m, seqs) in by_reason(&unknown) {
                q.release_for_recovery(&seqs, m);
            }
            for (m, seqs) in by_reason(&unconfirmed) {
                q.release_unconfirmed(&seqs, m);
            }
            let mut dead = 0;
            for (s, m) in &failed {
                dead += q.fail(&[*s], m, max_attempts);
            }
            for (s, m) in &rejected {
                dead += q.kill(&[*s], m);
            }
            dead
        })
        .await
        .unwrap_or(0);
        stats.dead.fetch_add(dead as u64, Ordering::Relaxed);
    }
}

/// The frames of `list` grouped by their reason.
fn by_reason(list: &[(u64, String)]) -> BTreeMap<&str, Vec<u64>> {
    let mut out: BTreeMap<&str, Vec<u64>> = Default::default();
    for (s, m) in list {
        out.entry(m.as_str()).or_default().push(*s);
    }
    out
}

/// Runs a blocking queue call on the queue thread (`queue::calls`), marking the uploader
/// busy meanwhile (a queue call stuck on the disk stops the watchdog pings).
pub(super) async fn blocking<T: Send + 'static>(
    beat: &Beat,
    doing: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _busy = beat.busy(doing);
    crate::queue::calls::call(f).await
}
