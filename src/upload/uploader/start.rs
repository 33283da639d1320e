//! The uploader's start-up phases: the project check (before the first session, and
//! after a refusal) and the recovery of the sessions the last run left behind.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::settle::blocking;
use super::{Phase, Uploader};
use crate::queue::QueueError;
use crate::upload::sink::{Frame, ImageStore, Outcome, Sink, Verdict};
use crate::upload::stopped;

impl<S: Sink> Uploader<S> {
    pub(super) async fn checking(&mut self) -> Option<Phase> {
        let verdict = tokio::select! {
            v = self.sink.check() => v,
            _ = stopped(&self.stop) => return None,
        };
        Some(match verdict {
            Verdict::Ok | Verdict::Split(_) => {
                if self.refusal_logged {
                    info!("the platform accepts edgecap's key and project again: uploading");
                }
                self.checked = true;
                self.refusal_logged = false;
                self.stats.state.set_with_link("checking", None, None, true);
                if self.recovered {
                    Phase::Idle
                } else {
                    Phase::Recovering
                }
            }
            Verdict::OperatorMustAct(reason) => {
                let d = self.cfg.retry.max;
                self.note_refusal(&reason, d);
                if self.refusal_logged {
                    debug!(
                        reason,
                        "the platform still refuses edgecap's credentials or destination"
                    );
                } else {
                    error!(
                        reason,
                        retry_in_secs = d.as_secs(),
                        "the platform refuses edgecap's credentials or destination: no upload until that is fixed (capture goes on; checked again every retry_max_secs)"
                    );
                    self.refusal_logged = true;
                }
                Phase::BackingOff {
                    until: Instant::now() + d,
                    since: None,
                }
            }
            Verdict::Backoff {
                reason,
                retry_after,
            } => {
                let d = self.backoff_delay(retry_after);
                self.note_backoff(&reason, d);
                warn!(
                    reason,
                    retry_in_ms = d.as_millis() as u64,
                    "the project check failed; trying again"
                );
                Phase::BackingOff {
                    until: Instant::now() + d,
                    since: None,
                }
            }
            // A check takes no session; should a sink say so anyway, wait as for a 429.
            Verdict::RateLimited(reason) => {
                let d = self.backoff_delay(None);
                self.note_backoff(&reason, d);
                Phase::BackingOff {
                    until: Instant::now() + d,
                    since: None,
                }
            }
            Verdict::Offline(reason) => self.went_offline(reason, None),
        })
    }

    pub(super) async fn recovering(&mut self) -> Option<Phase> {
        self.recovered = true;
        let q = Arc::clone(&self.queue);
        let sessions = match blocking(&self.beat, "queue lease", move || q.lease_sessions()).await {
            Some(Ok(s)) => s,
            Some(Err(QueueError::IndexFailed { error })) => {
                // Tried again once the index is repaired (nothing is leased before).
                self.recovered = false;
                debug!(
                    error,
                    "the queue index waits for its repair; recovery waits too"
                );
                return Some(Phase::BackingOff {
                    until: Instant::now() + crate::queue::REPAIR_EVERY,
                    since: None,
                });
            }
            Some(Err(e)) => {
                error!(error = %e, "cannot read the last run's sessions from the queue; their frames are sent again");
                return Some(Phase::Idle);
            }
            None => return None,
        };
        let store: Arc<dyn ImageStore> = Arc::clone(&self.queue) as Arc<dyn ImageStore>;
        let mut found = 0u64;
        let mut offline = None;
        let mut seqs: Vec<u64> = Vec::new();
        let mut outcomes: Vec<(u64, Outcome)> = Vec::new();
        for (session, leased) in sessions {
            let frames: Vec<Frame> = leased
                .into_iter()
                .map(|l| Frame::stored(l, Arc::clone(&store)))
                .collect();
            self.note_facts(&frames);
            if offline.is_some() {
                // The platform cannot be asked: the rest keep their sessions and are asked
                // about before they are sent again.
                let why = "not asked: the platform cannot be reached";
                seqs.extend(frames.iter().map(|f| f.seq));
                outcomes.extend(frames.iter().map(|f| (f.seq, Outcome::Unknown(why.into()))));
                continue;
            }
            let report = self.sink.recover(session, frames.clone()).await;
            found += report
                .outcomes
                .iter()
                .filter(|(_, o)| o.accepted() || matches!(o, Outcome::MetadataPending(_)))
                .count() as u64;
            // Frames a sink follows further (still processing) are decided later, counted
            // by their outcome then.
            let later: std::collections::HashSet<u64> = report
                .pending
                .as_ref()
                .map(|p| p.seqs.iter().copied().collect())
                .unwrap_or_default();
            seqs.extend(frames.iter().map(|f| f.seq).filter(|s| !later.contains(s)));
            outcomes.extend(report.outcomes);
            if let Some(p) = report.pending {
                self.ops.spawn(p);
            }
            if let Verdict::Offline(r) = report.verdict {
                offline = Some(r);
            }
        }
        // One index update for all of them.
        self.apply(&seqs, &outcomes).await;
        if found > 0 {
            let q = Arc::clone(&self.queue);
            blocking(&self.beat, "queue update", move || q.count_recovered(found)).await;
            info!(
                frames = found,
                "frames of the last run found on the platform: not sent again"
            );
        }
        Some(match offline {
            Some(reason) => self.went_offline(reason, None),
            None => Phase::Idle,
        })
    }
}
