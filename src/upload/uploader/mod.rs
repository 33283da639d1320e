//! The uploader: one long-running task that drains the queue into a [`Sink`], written as an
//! explicit state machine (as uplink's serializer is). Each [`Phase`] has one step
//! function that waits for what that phase waits for and returns the next phase; `run`
//! only loops over them. Operations the platform decides later are followed in the
//! background ([`Operations`]) in every phase, so their outcomes are applied while the
//! uploader waits for frames, backs off or probes.
//!
//! ```text
//!  Checking ──ok──▶ Recovering (once: the last run's sessions) ──▶ Idle
//!     (start; and after a refusal: the project and key are checked before any session
//!      is spent, while capture goes on)
//!            frames pending                 batch due (count, bytes, age, drain)
//!   Idle ───────────────────▶ Filling ─────────────────────────────▶ Sending
//!    ▲  queue empty               ▲                                   │ │ │
//!    └────────────────────────────┴──── Ok / Split (smaller batch) ───┘ │ │
//!                                 ▲                                     │ │
//!                                 ├──── BackingOff ◀── Backoff / ───────┘ │
//!                                 │                    OperatorMustAct     │
//!                                 └──── Offline (probe) ◀── Offline ───────┘
//! ```
//!
//! Room for more phases ("upload window closed", "byte budget spent") is deliberate: a
//! link policy is one more phase with its own wait, not a flag checked in every branch.
//!
//! This file holds the machine and its steady-state phases; `start.rs` the start-up
//! phases (the project check, the recovery of the last run's sessions); `send.rs` the
//! `Sending` phase; `link.rs` the link policy (upload windows: the `Closed` phase and a
//! batch stopped at a window's end; byte budgets: the `Spent` phase); `report.rs` the
//! state the status shows; `settle.rs` how outcomes reach the queue; `tests.rs` the unit tests (a scripted sink
//! under tokio's paused clock).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

mod link;
mod report;
mod send;
mod settle;
mod start;
#[cfg(test)]
mod tests;

use super::backoff::Backoff;
use super::link_rate::LinkRate;
use super::operations::Operations;
use super::sink::{Frame, Sink};
use super::state::{StateCell, short_reason};
use super::stopped;
use crate::config::UploadConfig;
use crate::ops::health::Beat;
use crate::queue::{Delivered, Queue};
use crate::schedule::Clock;
use settle::blocking;

/// Uploader counters (for the summary line and status).
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Batches sent.
    pub batches: AtomicU64,
    /// Frames accepted by the platform.
    pub accepted: AtomicU64,
    /// Frames put back after a transient failure.
    pub retried: AtomicU64,
    /// Frames marked dead.
    pub dead: AtomicU64,
    /// What the uploader is doing and why, and whether the platform answered.
    pub state: StateCell,
}

/// Where the uploader stands. `since` is when the oldest frame still waiting was first
/// seen (tokio's monotonic clock, so a clock jump cannot hold a batch back, and tests can
/// pause it); `None` after the queue ran empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Ask the platform whether the destination exists and the key is accepted (at start,
    /// after the link came back before a check passed, and after a refusal).
    Checking,
    /// Once per run, after the first check: ask the platform about the sessions the last
    /// run left (a crash, a stop) before any of their frames is sent again.
    Recovering,
    /// Nothing pending: wait for frames.
    Idle,
    /// Frames pending, no batch due yet: wait for more, or for the oldest to age.
    Filling {
        /// First seen.
        since: Instant,
    },
    /// A batch is due: lease it, send it, apply what the sink says.
    Sending {
        /// First seen.
        since: Instant,
    },
    /// A transient failure or a refusal an operator must fix: wait, then try again.
    BackingOff {
        /// Until when.
        until: Instant,
        /// First seen.
        since: Option<Instant>,
    },
    /// The platform cannot be reached: probe with backoff until it answers.
    Offline {
        /// First seen.
        since: Option<Instant>,
    },
    /// A byte budget is spent: nothing is sent until it starts again.
    Spent {
        /// When it starts again.
        until: Instant,
        /// First seen.
        since: Option<Instant>,
    },
    /// Outside the upload windows: nothing is sent until one opens.
    Closed {
        /// When the next window opens.
        until: Instant,
        /// First seen.
        since: Option<Instant>,
    },
}

impl Phase {
    /// When the oldest frame still waiting was first seen, where the phase knows.
    fn since(&self) -> Option<Instant> {
        match *self {
            Phase::Filling { since } | Phase::Sending { since } => Some(since),
            Phase::BackingOff { since, .. }
            | Phase::Offline { since }
            | Phase::Closed { since, .. }
            | Phase::Spent { since, .. } => since,
            Phase::Checking | Phase::Recovering | Phase::Idle => None,
        }
    }
}

/// A random instant within `max` of `now` (None when `max` is zero).
fn spread_from(now: Instant, max: Duration) -> Option<Instant> {
    (!max.is_zero()).then(|| now + max.mul_f64(rand::random_range(0.0..1.0)))
}

/// How the daemon steers and watches the uploader.
pub struct Controls {
    /// Its counters.
    pub stats: Arc<UploadStats>,
    /// Set: stop (see [`Uploader::run`]).
    pub stop: watch::Receiver<bool>,
    /// Set: batches go out without waiting for their age (the daemon winding down after
    /// `stop_after_frames`).
    pub drain: watch::Receiver<bool>,
    /// Marked busy around every queue call, for the watchdog.
    pub beat: Arc<Beat>,
    /// New limits from a reload (batch, retry, attempts; the sink stays), applied before
    /// the next step.
    pub settings: watch::Receiver<UploadConfig>,
    /// The local time the upload windows are read against.
    pub clock: Arc<dyn Clock>,
}

/// What the uploader works with.
pub struct Uploader<S: Sink> {
    queue: Arc<Queue>,
    sink: S,
    cfg: UploadConfig,
    stats: Arc<UploadStats>,
    stop: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    beat: Arc<Beat>,
    settings: watch::Receiver<UploadConfig>,
    clock: Arc<dyn Clock>,
    ops: Operations,
    backoff: Backoff,
    /// Largest batch now: `batch_max_frames`, or less while bisecting a refused batch.
    cap: usize,
    /// A check has passed since the last refusal.
    checked: bool,
    /// A refusal of the check was logged at ERROR (logged once, until a check passes).
    refusal_logged: bool,
    /// The last run's sessions were recovered.
    recovered: bool,
    /// When each group set last had a batch sent.
    last_session: std::collections::HashMap<Vec<String>, Instant>,
    /// The link's measured speed (batches are cut to fit it).
    link: LinkRate,
    /// What each frame out with the platform needs for its receipt.
    facts: std::sync::Mutex<std::collections::HashMap<u64, Delivered>>,
    /// No session before this: the random delay after start-up or an outage that spreads
    /// a fleet (`start_delay_max_secs`).
    spread_until: Option<Instant>,
}

impl<S: Sink> Uploader<S> {
    /// An uploader from `queue` into `sink`.
    pub fn new(queue: Arc<Queue>, sink: S, cfg: UploadConfig, controls: Controls) -> Self {
        let Controls {
            stats,
            stop,
            drain,
            beat,
            mut settings,
            clock,
        } = controls;
        settings.mark_unchanged();
        let cfg_delay = cfg.start_delay_max;
        Self {
            backoff: Backoff::new(cfg.retry),
            cap: cfg.batch.max_frames,
            queue,
            sink,
            cfg,
            stats,
            stop,
            drain,
            beat,
            settings,
            clock,
            ops: Operations::default(),
            checked: false,
            refusal_logged: false,
            recovered: false,
            last_session: Default::default(),
            link: LinkRate::default(),
            facts: Default::default(),
            spread_until: spread_from(Instant::now(), cfg_delay),
        }
    }

    /// Runs until `stop` is set, then winds down (see [`Uploader::wind_down`]).
    pub async fn run(mut self) {
        let mut phase = Phase::Checking;
        self.note_phase(&phase);
        loop {
            if *self.stop.borrow() {
                break;
            }
            if self.settings.has_changed().unwrap_or(false) {
                let new = self.settings.borrow_and_update().clone();
                info!(
                    batch_max_frames = new.batch.max_frames,
                    batch_max_age_secs = new.batch.max_age.as_secs_f64(),
                    "upload limits changed by a reload"
                );
                self.cap = new.batch.max_frames;
                self.backoff = Backoff::new(new.retry);
                self.cfg = UploadConfig {
                    sink: self.cfg.sink.clone(),
                    ..new
                };
            }
            if !matches!(phase, Phase::Closed { .. })
                && let Some(wait) = self.window_wait()
            {
                info!(
                    opens_in_secs = wait.as_secs(),
                    "upload window closed: nothing is sent until it opens (capture goes on)"
                );
                phase = Phase::Closed {
                    until: Instant::now() + wait,
                    since: phase.since(),
                };
                self.note_phase(&phase);
            }
            let next = match phase {
                Phase::Checking => self.checking().await,
                Phase::Recovering => self.recovering().await,
                Phase::Idle => self.idle().await,
                Phase::Filling { since } => self.filling(since).await,
                Phase::Sending { since } => self.sending(since).await,
                Phase::BackingOff { until, since } => self.backing_off(until, since).await,
                Phase::Offline { since } => self.offline(since).await,
                Phase::Closed { until, since } => self.closed(until, since).await,
                Phase::Spent { until, since } => self.spent(until, since).await,
            };
            match next {
                Some(p) => {
                    if std::mem::discriminant(&p) != std::mem::discriminant(&phase) {
                        debug!(from = ?phase, to = ?p, "uploader phase");
                    }
                    self.note_phase(&p);
                    phase = p;
                }
                None => break,
            }
        }
        self.wind_down().await;
    }

    /// Where to go once a wait is over: check first if no check has passed since the
    /// last refusal, else on with the frames.
    fn after(&self, since: Option<Instant>) -> Phase {
        match since {
            _ if !self.checked => Phase::Checking,
            _ if !self.recovered => Phase::Recovering,
            Some(since) => Phase::Filling { since },
            None => Phase::Idle,
        }
    }

    /// The next backoff delay, at least what the server asked for.
    fn backoff_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        self.backoff
            .next_delay()
            .max(retry_after.unwrap_or_default())
    }

    /// The link is down: counted and logged once, then probed.
    fn went_offline(&self, reason: String, since: Option<Instant>) -> Phase {
        let was_offline = self.stats.state.word() == "offline";
        self.stats.state.set_with_link(
            "offline",
            Some(short_reason("offline", &reason)),
            None,
            false,
        );
        self.stats.state.error(&reason);
        if !was_offline {
            warn!(
                reason,
                "uplink is down: frames stay queued; probing with backoff"
            );
        }
        Phase::Offline { since }
    }

    async fn idle(&mut self) -> Option<Phase> {
        let notified = self.queue.pending_notify().notified();
        if self.queue.stats().pending.frames > 0 {
            return Some(Phase::Filling {
                since: Instant::now(),
            });
        }
        tokio::select! {
            _ = notified => {}
            _ = stopped(&self.stop) => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            (seqs, outcomes) = self.ops.next() => self.apply(&seqs, &outcomes).await,
        }
        Some(Phase::Idle)
    }

    async fn filling(&mut self, since: Instant) -> Option<Phase> {
        let notified = self.queue.pending_notify().notified();
        let s = self.queue.stats();
        if s.pending.frames == 0 {
            return Some(Phase::Idle);
        }
        let avg = s.pending.bytes / s.pending.frames.max(1);
        let full = s.pending.frames >= self.cap as u64
            || s.pending.bytes >= self.link.fit(self.cfg.batch.max_bytes, avg);
        // A partial batch also waits one batch age after its group set's last session,
        // so a set is never split into a second session needlessly (frames that arrived
        // while its batch was being sent wait for the next one).
        let age = self.cfg.batch.max_age;
        let set_due = self
            .queue
            .oldest_pending_groups()
            .and_then(|g| self.last_session.get(&g).map(|t| *t + age));
        let due = (since + age).max(set_due.unwrap_or(since));
        if full || *self.drain.borrow() || Instant::now() >= due {
            return Some(Phase::Sending { since });
        }
        let mut drain = self.drain.clone();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(due) => {}
            _ = async { let _ = drain.wait_for(|x| *x).await; } => {}
            _ = stopped(&self.stop) => return None,
            (seqs, outcomes) = self.ops.next() => self.apply(&seqs, &outcomes).await,
        }
        Some(Phase::Filling { since })
    }

    async fn backing_off(&mut self, until: Instant, since: Option<Instant>) -> Option<Phase> {
        if self.pause_until(until).await {
            return None;
        }
        Some(self.after(since))
    }

    async fn offline(&mut self, since: Option<Instant>) -> Option<Phase> {
        let d = self.backoff.next_delay();
        debug!(retry_in_ms = d.as_millis() as u64, "offline; next probe");
        if self.pause_until(Instant::now() + d).await {
            return None;
        }
        match self.sink.probe().await {
            Ok(()) => {
                self.backoff.reset();
                self.stats.state.set_online(true);
                info!("uplink is back: uploading");
                // Every device behind the same uplink sees it come back at once.
                self.spread_until = spread_from(Instant::now(), self.cfg.start_delay_max);
                Some(self.after(since))
            }
            Err(e) => {
                debug!(error = %e, "probe failed");
                Some(Phase::Offline { since })
            }
        }
    }

    /// Notes the receipt facts of frames handed to the sink.
    pub(super) fn note_facts(&self, batch: &[Frame]) {
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        for f in batch {
            facts.insert(
                f.seq,
                Delivered {
                    seq: f.seq,
                    filename: f.meta.filename.clone(),
                    crc32c: f.image_crc,
                    bytes: u64::from(f.image_len),
                    captured_ms: f.meta.captured_ms,
                    asset: None,
                },
            );
        }
    }

    /// Drops the facts of frames decided or given up on.
    pub(super) fn forget_facts(&self, seqs: &[u64]) {
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        for s in seqs {
            facts.remove(s);
        }
    }

    /// Waits until `until`, applying operations that finish meanwhile; true if stopped.
    async fn pause_until(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return *self.stop.borrow(),
                _ = stopped(&self.stop) => return true,
                (seqs, outcomes) = self.ops.next() => self.apply(&seqs, &outcomes).await,
            }
        }
    }

    /// After `stop`: operations resolve promptly (one last status poll each) and get 4 s to
    /// do so; the frames of any still open go back to pending.
    async fn wind_down(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        while !self.ops.is_empty() {
            tokio::select! {
                (seqs, outcomes) = self.ops.next() => self.apply(&seqs, &outcomes).await,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let left = self.ops.abort();
        self.forget_facts(&left);
        if !left.is_empty() {
            let q = Arc::clone(&self.queue);
            // Their sessions stay recorded: the next start asks the platform about them.
            blocking(&self.beat, "queue release", move || {
                q.release_for_recovery(&left, "stopped while the operation was followed")
            })
            .await;
        }
    }
}
