//! The `Sending` phase: a batch cut to the session limit, the link's speed and the byte
//! budget, leased (newest first when asked, or in the budget's reserve), counted against
//! the budget before a byte goes out, handed to the sink with a stop that fires at the
//! upload window's end, and the sink's verdict turned into the next phase.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::settle::blocking;
use super::{Phase, Uploader, link};
use crate::queue::QueueError;
use crate::upload::backoff::batch_size;
use crate::upload::operations::MAX_OPEN_OPERATIONS;
use crate::upload::sink::{Frame, ImageStore, Outcome, Sink, Verdict};
use crate::upload::stopped;

impl<S: Sink> Uploader<S> {
    pub(super) async fn sending(&mut self, since: Instant) -> Option<Phase> {
        if self.ops.len() >= MAX_OPEN_OPERATIONS {
            tokio::select! {
                (seqs, outcomes) = self.ops.next() => self.apply(&seqs, &outcomes).await,
                _ = stopped(&self.stop) => return None,
            }
            return Some(Phase::Sending { since });
        }
        let s = self.queue.stats();
        if s.pending.frames == 0 {
            return Some(Phase::Idle);
        }
        // After start-up or an outage, a random delay spreads a fleet's first sessions
        // (not when draining on request: an operator is waiting).
        if let Some(until) = self.spread_until {
            let now = Instant::now();
            if now < until && !*self.drain.borrow() {
                let wait = until - now;
                self.stats.state.set(
                    "waiting",
                    Some("start delay (spreads a fleet)".to_string()),
                    Some(wait),
                );
                info!(
                    wait_ms = wait.as_millis() as u64,
                    max_secs = self.cfg.start_delay_max.as_secs(),
                    "first upload after start-up or an outage: waiting a random delay so that a fleet does not hit the platform at once"
                );
                if self.pause_until(until).await {
                    return None;
                }
                return Some(Phase::Sending { since });
            }
            self.spread_until = None;
        }
        // The platform's session limit holds the next batch: wait here, visibly.
        let wait = self.sink.next_session_in();
        if !wait.is_zero() {
            self.stats
                .state
                .set("waiting", Some("session limit".to_string()), Some(wait));
            info!(
                wait_secs = wait.as_secs(),
                "session rate limit reached; waiting"
            );
            if self.pause_until(Instant::now() + wait).await {
                return None;
            }
            return Some(Phase::Sending { since });
        }
        // The byte budgets: spent → wait for the reset; otherwise the batch fits what is
        // left, and in the reserve the newest frames go first.
        let budget = self.budget_now();
        if let Some(b) = &budget
            && b.spent()
        {
            info!(
                resets_in_secs = b.until_reset.as_secs(),
                "byte budget spent: nothing is sent until it resets (capture goes on)"
            );
            return Some(Phase::Spent {
                until: Instant::now() + b.until_reset,
                since: Some(since),
            });
        }
        let max = self.cfg.batch;
        // While bisecting a refused batch (cap below the configured size) no growth.
        let (frames, max_bytes) = if self.cap == max.max_frames {
            batch_size(
                self.cap,
                max.max_bytes,
                s.pending.frames,
                s.pending.bytes,
                self.sink.sessions_left(),
            )
        } else {
            (self.cap, max.max_bytes)
        };
        // On a slow link a batch is cut so that it takes about a minute: a stop in the
        // middle then costs at most that, and a device stopped often still gets through.
        let fitted = self
            .link
            .fit(max_bytes, s.pending.bytes / s.pending.frames.max(1));
        if fitted < max_bytes {
            debug!(
                max_bytes,
                fitted,
                link_bytes_per_sec = self.link.bytes_per_sec().unwrap_or(0.0) as u64,
                "batch cut to what the link carries in a minute"
            );
        }
        let mut max_bytes = fitted;
        if let Some(b) = &budget {
            // Images only: each frame also costs its overhead.
            let avg = s.pending.bytes / s.pending.frames.max(1);
            let room = b.left - link::OVERHEAD_PER_BATCH;
            let images = room.saturating_mul(avg) / (avg + link::OVERHEAD_PER_FRAME).max(1);
            max_bytes = max_bytes.min(images.max(1));
        }
        if frames > self.cap || max_bytes > max.max_bytes {
            debug!(
                frames,
                max_bytes,
                backlog = s.pending.frames,
                "batch grown to fit the backlog into the sessions left"
            );
        }
        let q = Arc::clone(&self.queue);
        let newest = self.cfg.link.order == crate::config::DrainOrder::NewestFirst
            || budget.as_ref().is_some_and(|b| b.in_reserve);
        let leased = match blocking(&self.beat, "queue lease", move || {
            q.lease_in(frames, max_bytes, newest)
        })
        .await
        {
            Some(Ok(l)) => l,
            Some(Err(QueueError::IndexFailed { error })) => {
                // Logged once by the queue; the repair is tried again before the next lease.
                debug!(
                    error,
                    "the queue index waits for its repair; nothing to lease"
                );
                return Some(Phase::BackingOff {
                    until: Instant::now() + crate::queue::REPAIR_EVERY,
                    since: Some(since),
                });
            }
            Some(Err(e)) => {
                error!(error = %e, "cannot lease frames from the queue");
                return Some(Phase::BackingOff {
                    until: Instant::now() + self.backoff.next_delay(),
                    since: Some(since),
                });
            }
            None => return None,
        };
        if leased.is_empty() {
            return Some(Phase::Filling { since });
        }
        let sent_bytes: u64 = leased
            .iter()
            .filter(|l| !l.image_delivered)
            .map(|l| u64::from(l.image_len))
            .sum();
        if let Some(b) = budget {
            // Counted durably before a byte goes out: a crash over-counts, never under.
            let cost = sent_bytes
                + leased.len() as u64 * link::OVERHEAD_PER_FRAME
                + link::OVERHEAD_PER_BATCH;
            let q = Arc::clone(&self.queue);
            let noted = blocking(&self.beat, "sent-bytes ledger", move || {
                q.note_sent(&b.day, &b.period, cost)
            })
            .await;
            if !matches!(noted, Some(Ok(_))) {
                let why = match noted {
                    Some(Err(e)) => e.to_string(),
                    _ => "interrupted".to_string(),
                };
                error!(
                    error = why,
                    "cannot count the batch against the byte budget; not sending it (it stays queued)"
                );
                let seqs: Vec<u64> = leased.iter().map(|l| l.seq).collect();
                let q = Arc::clone(&self.queue);
                blocking(&self.beat, "queue release", move || {
                    q.release_unsent(&seqs, "the byte budget's ledger could not be written")
                })
                .await;
                return Some(Phase::BackingOff {
                    until: Instant::now() + self.backoff.next_delay(),
                    since: Some(since),
                });
            }
        }
        let store: Arc<dyn ImageStore> = Arc::clone(&self.queue) as Arc<dyn ImageStore>;
        let batch: Vec<Frame> = leased
            .into_iter()
            .map(|l| Frame::stored(l, Arc::clone(&store)))
            .collect();
        let seqs: Vec<u64> = batch.iter().map(|f| f.seq).collect();
        self.note_facts(&batch);
        let n = seqs.len();
        let groups = batch[0].meta.groups.clone();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        debug!(frames = n, first_seq = seqs[0], "sending a batch");
        let started = Instant::now();
        let (batch_stop, closer) = self.batch_stop();
        let mut report = self.sink.send(batch, &batch_stop).await;
        // A 429 created no session: the set's next partial batch waits for the pacer
        // only, not a batch age after this try.
        if !matches!(report.verdict, Verdict::RateLimited(_)) {
            self.last_session.insert(groups, started);
        }
        if let Some(t) = closer {
            t.abort();
        }
        if report.verdict == Verdict::Ok {
            self.link.sample(sent_bytes, started.elapsed());
        }
        if let Verdict::Split(reason) = &report.verdict
            && n <= 1
        {
            // Already alone: this frame is the one the platform refuses.
            warn!(seqs = ?seqs, reason, "the platform refuses this frame on its own");
            report.outcomes = seqs
                .iter()
                .map(|s| (*s, Outcome::Rejected(reason.clone())))
                .collect();
            report.verdict = Verdict::Ok;
        }
        let later: std::collections::HashSet<u64> = report
            .pending
            .as_ref()
            .map(|p| p.seqs.iter().copied().collect())
            .unwrap_or_default();
        let now: Vec<u64> = seqs.into_iter().filter(|s| !later.contains(s)).collect();
        self.apply(&now, &report.outcomes).await;
        // The batch's metadata, session request and answer are freed now: hand the pages
        // back instead of keeping the largest batch's worth resident for good.
        crate::ops::memory::release_free_memory();
        if let Some(p) = report.pending {
            self.ops.spawn(p);
        }
        let since = (self.queue.stats().pending.frames > 0).then_some(since);
        if let Some((rate, limited)) = self.sink.session_pace() {
            self.stats.state.pace(rate, limited);
        }
        Some(match report.verdict {
            Verdict::Ok => {
                if !self
                    .stats
                    .state
                    .set_with_link("uploading", None, None, true)
                {
                    info!("uplink is back: uploading");
                }
                self.backoff.reset();
                self.cap = (self.cap * 2).min(max.max_frames);
                self.after(since)
            }
            Verdict::RateLimited(reason) => {
                // The platform answered: online. The sink's pacer has slowed down; the
                // next batch waits for it in `Sending`, visibly, without a backoff.
                self.stats.state.set_online(true);
                debug!(reason, "session limit: the batch waits for the pacer");
                self.after(since)
            }
            Verdict::Split(reason) => {
                self.stats.state.error(&reason);
                self.cap = (n / 2).max(1);
                warn!(
                    frames = n,
                    next_batch = self.cap,
                    reason,
                    "the platform refused the batch; retrying with smaller batches to find the frame at fault"
                );
                self.after(since)
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
                    failures = self.backoff.failures(),
                    "upload failed; backing off"
                );
                Phase::BackingOff {
                    until: Instant::now() + d,
                    since,
                }
            }
            Verdict::OperatorMustAct(reason) => {
                let d = self.cfg.retry.max;
                // The next session waits for a check to pass.
                self.checked = false;
                self.note_refusal(&reason, d);
                self.refusal_logged = true;
                error!(
                    reason,
                    retry_in_secs = d.as_secs(),
                    "the platform refuses edgecap's requests; check the sink's settings and its secret (the reason says which)"
                );
                Phase::BackingOff {
                    until: Instant::now() + d,
                    since,
                }
            }
            Verdict::Offline(reason) => self.went_offline(reason, since),
        })
    }
}
