//! The uploader: drains the queue into a sink, batch by batch.
//!
//! Sinks share one contract: a batch of leased frames in, one [`Outcome`] per frame out,
//! plus a [`Health`] verdict on the link that decides how the uploader paces itself. The
//! uploader is the only code that talks to a platform; it reaches the disk only through
//! [`crate::queue::Queue`].
//!
//! Batching: a batch is cut when `batch_max_frames` or `batch_max_bytes` are pending, or
//! when frames have waited `batch_max_age_secs` (measured on the monotonic clock, so a
//! clock jump cannot hold frames back). Only frames with equal groups share a batch (a
//! Nexus session has one group list).
//!
//! Failures: transient ones (network, 5xx, 429, garbage responses) put the frames back and
//! back off exponentially with jitter, honouring `Retry-After`. When the network itself is
//! down the uploader is *offline*: it probes the platform with backoff and resumes on its
//! own. A request the platform refuses for the batch as a whole (a 400 on session create)
//! halves the batch size until the frame at fault is alone, and that frame goes dead; so
//! one bad frame cannot block the others. Frame-specific failures count towards
//! `max_attempts`; permanent refusals mark the frame dead at once.

mod backoff;
pub mod directory;
mod nexus;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

pub use backoff::{Backoff, RateLimiter, batch_size, parse_retry_after};
pub use directory::DirectorySink;
pub use nexus::NexusSink;

use crate::config::{SinkConfig, UploadConfig};
use crate::ops::health::Beat;
use crate::queue::{Leased, Queue};

/// What became of one frame of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The platform has it: delete it from the queue.
    Accepted,
    /// Not delivered for a reason outside the frame (network, server, expired URL): try
    /// again later; does not count as an attempt.
    Retry(String),
    /// The platform failed this frame (e.g. its processing errored): counts an attempt.
    Failed(String),
    /// Refused for good (e.g. a 400 on its upload): mark dead now.
    Rejected(String),
    /// The frame could not be read (quarantined or missing); the queue already dealt with it.
    Gone,
}

/// The sink's verdict on the link after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Ok,
    /// The platform cannot be reached: go offline and probe.
    Offline(String),
    /// The platform answered with a transient error: back off (at least `retry_after`).
    Backoff {
        /// Why.
        reason: String,
        /// The server's `Retry-After`, or a minimum the sink asks for.
        retry_after: Option<Duration>,
    },
    /// The platform refused the batch as a whole (400): retry with half the batch.
    Split(String),
    /// Configuration is wrong (401/403/404 on the API): an operator must act. Backs off to
    /// the maximum delay and keeps trying.
    OperatorMustAct(String),
}

/// A sink's answer for one batch.
pub struct Report {
    /// One outcome per frame decided now. Frames neither listed here nor in `pending`
    /// are put back as `Retry`.
    pub outcomes: Vec<(u64, Outcome)>,
    /// The link verdict.
    pub health: Health,
    /// Frames whose fate the platform decides later (a Nexus operation), followed in the
    /// background while the next batch goes out.
    pub pending: Option<Pending>,
}

/// Frames waiting on the platform, and the future that decides them.
pub struct Pending {
    /// The frames it decides.
    pub seqs: Vec<u64>,
    /// Resolves to one outcome per frame; must resolve promptly once `stop` is set.
    pub fut: Decision,
}

/// A future resolving to one outcome per frame.
pub type Decision =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<(u64, Outcome)>> + Send>>;

/// Operations followed at once; past this the uploader waits for one before the next batch.
const MAX_OPEN_OPERATIONS: usize = 4;

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
    /// Whether the platform is reachable.
    pub online: AtomicBool,
}

/// The configured sink.
pub enum Sink {
    /// Datature Nexus.
    Nexus(Arc<NexusSink>),
    /// A local folder.
    Directory(DirectorySink),
}

impl Sink {
    /// Builds the sink from its config.
    pub fn new(cfg: &SinkConfig, queue: Arc<Queue>) -> Result<Self, String> {
        Ok(match cfg {
            SinkConfig::Nexus(n) => Sink::Nexus(Arc::new(NexusSink::new(n.clone(), queue)?)),
            SinkConfig::Directory { path } => {
                Sink::Directory(DirectorySink::new(path.clone(), queue))
            }
        })
    }

    async fn send(&self, batch: Vec<Leased>, stop: &watch::Receiver<bool>) -> Report {
        match self {
            Sink::Nexus(s) => s.send(batch, stop).await,
            Sink::Directory(s) => s.send(batch).await,
        }
    }

    /// Sessions the sink may still open in its rate window (None: no limit).
    fn sessions_left(&self) -> Option<usize> {
        match self {
            Sink::Nexus(s) => Some(s.sessions_left()),
            Sink::Directory(_) => None,
        }
    }

    async fn probe(&self) -> Result<(), String> {
        match self {
            Sink::Nexus(s) => s.probe().await,
            Sink::Directory(s) => s.probe().await,
        }
    }
}

/// Resolves when `stop` becomes true (or its sender is gone).
pub async fn stopped(stop: &watch::Receiver<bool>) {
    let mut rx = stop.clone();
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleeps for `d` unless `stop` fires first; true if stopped.
pub async fn sleep_or_stop(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stopped(stop) => true,
    }
}

/// Runs a blocking queue call off the async threads, marking the uploader busy meanwhile
/// (a queue call stuck on the disk stops the watchdog pings).
async fn blocking<T: Send + 'static>(
    beat: &Beat,
    doing: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _busy = beat.busy(doing);
    tokio::task::spawn_blocking(f).await.ok()
}

/// Operations followed in the background, with the frames each one decides.
#[derive(Default)]
struct Operations {
    set: tokio::task::JoinSet<Vec<(u64, Outcome)>>,
    seqs: std::collections::HashMap<tokio::task::Id, Vec<u64>>,
}

impl Operations {
    fn spawn(&mut self, p: Pending) {
        let h = self.set.spawn(p.fut);
        self.seqs.insert(h.id(), p.seqs);
    }

    fn len(&self) -> usize {
        self.set.len()
    }

    /// The next finished operation (its frames, its outcomes); never resolves when empty.
    async fn next(&mut self) -> (Vec<u64>, Vec<(u64, Outcome)>) {
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
}

/// What the uploader's helpers share.
struct Ctx<'a> {
    queue: &'a Arc<Queue>,
    cfg: &'a UploadConfig,
    stats: &'a UploadStats,
    stop: &'a watch::Receiver<bool>,
    beat: &'a Beat,
}

impl Ctx<'_> {
    /// Sleeps for `d`, applying operations that finish meanwhile; true if stopped.
    async fn pause(&self, d: Duration, ops: &mut Operations) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return *self.stop.borrow(),
                _ = stopped(self.stop) => return true,
                (seqs, outcomes) = ops.next() => apply(self, &seqs, &outcomes).await,
            }
        }
    }
}

/// Runs the uploader until `stop` is set. With `drain` set, batches go out without
/// waiting for their age (used when the daemon winds down after `stop_after_frames`).
pub async fn run(
    queue: Arc<Queue>,
    sink: Sink,
    cfg: UploadConfig,
    stats: Arc<UploadStats>,
    stop: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    beat: Arc<Beat>,
) {
    let ctx = Ctx {
        queue: &queue,
        cfg: &cfg,
        stats: &stats,
        stop: &stop,
        beat: &beat,
    };
    let mut ops = Operations::default();
    let mut backoff = Backoff::new(cfg.retry);
    let mut cap = cfg.batch.max_frames;
    let mut waiting_since: Option<Instant> = None;
    stats.online.store(true, Ordering::Relaxed);
    loop {
        if *stop.borrow() {
            break;
        }
        let notified = queue.pending_notify().notified();
        let s = queue.stats();
        if s.pending.frames == 0 {
            waiting_since = None;
            tokio::select! {
                _ = notified => {}
                _ = stopped(&stop) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                (seqs, outcomes) = ops.next() => apply(&ctx, &seqs, &outcomes).await,
            }
            continue;
        }
        let since = *waiting_since.get_or_insert_with(Instant::now);
        let full = s.pending.frames >= cap as u64 || s.pending.bytes >= cfg.batch.max_bytes;
        let due = since + cfg.batch.max_age;
        if !full && !*drain.borrow() && Instant::now() < due {
            let mut d = drain.clone();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = async { let _ = d.wait_for(|x| *x).await; } => {}
                _ = stopped(&stop) => break,
                (seqs, outcomes) = ops.next() => apply(&ctx, &seqs, &outcomes).await,
            }
            continue;
        }
        if ops.len() >= MAX_OPEN_OPERATIONS {
            tokio::select! {
                (seqs, outcomes) = ops.next() => apply(&ctx, &seqs, &outcomes).await,
                _ = stopped(&stop) => break,
            }
            continue;
        }
        let q = Arc::clone(&queue);
        // While bisecting a refused batch (cap below the configured size) no growth.
        let (frames, max_bytes) = if cap == cfg.batch.max_frames {
            batch_size(
                cap,
                cfg.batch.max_bytes,
                s.pending.frames,
                s.pending.bytes,
                sink.sessions_left(),
            )
        } else {
            (cap, cfg.batch.max_bytes)
        };
        if frames > cap || max_bytes > cfg.batch.max_bytes {
            debug!(
                frames,
                max_bytes,
                backlog = s.pending.frames,
                "batch grown to fit the backlog into the sessions left"
            );
        }
        let leased =
            match blocking(ctx.beat, "queue lease", move || q.lease(frames, max_bytes)).await {
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    error!(error = %e, "cannot lease frames from the queue");
                    if ctx.pause(backoff.next_delay(), &mut ops).await {
                        break;
                    }
                    continue;
                }
                None => break,
            };
        if leased.is_empty() {
            continue;
        }
        let seqs: Vec<u64> = leased.iter().map(|l| l.seq).collect();
        let n = seqs.len();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        debug!(frames = n, first_seq = seqs[0], "sending a batch");
        let mut report = sink.send(leased, &stop).await;
        if let Health::Split(reason) = &report.health
            && n <= 1
        {
            // Already alone: this frame is the one the platform refuses.
            warn!(seqs = ?seqs, reason, "the platform refuses this frame on its own");
            report.outcomes = seqs
                .iter()
                .map(|s| (*s, Outcome::Rejected(reason.clone())))
                .collect();
            report.health = Health::Ok;
        }
        let later: Vec<u64> = report
            .pending
            .as_ref()
            .map(|p| p.seqs.clone())
            .unwrap_or_default();
        let now: Vec<u64> = seqs.into_iter().filter(|s| !later.contains(s)).collect();
        apply(&ctx, &now, &report.outcomes).await;
        if let Some(p) = report.pending {
            ops.spawn(p);
        }
        if queue.stats().pending.frames == 0 {
            waiting_since = None;
        }
        let stopped_now = match report.health {
            Health::Ok => {
                if !stats.online.swap(true, Ordering::Relaxed) {
                    info!("uplink is back: uploading");
                }
                backoff.reset();
                cap = (cap * 2).min(cfg.batch.max_frames);
                false
            }
            Health::Split(reason) => {
                cap = (n / 2).max(1);
                warn!(
                    frames = n,
                    next_batch = cap,
                    reason,
                    "the platform refused the batch; retrying with smaller batches to find the frame at fault"
                );
                false
            }
            Health::Backoff {
                reason,
                retry_after,
            } => {
                let d = backoff.next_delay().max(retry_after.unwrap_or_default());
                warn!(
                    reason,
                    retry_in_ms = d.as_millis() as u64,
                    failures = backoff.failures(),
                    "upload failed; backing off"
                );
                ctx.pause(d, &mut ops).await
            }
            Health::OperatorMustAct(reason) => {
                let d = cfg.retry.max;
                error!(
                    reason,
                    retry_in_secs = d.as_secs(),
                    "the platform refuses edgecap's requests; check project_id and the secret key"
                );
                ctx.pause(d, &mut ops).await
            }
            Health::Offline(reason) => {
                if stats.online.swap(false, Ordering::Relaxed) {
                    warn!(
                        reason,
                        "uplink is down: frames stay queued; probing with backoff"
                    );
                }
                let stopped = probe_until_online(&ctx, &sink, &mut backoff, &mut ops).await;
                if !stopped {
                    stats.online.store(true, Ordering::Relaxed);
                    info!("uplink is back: uploading");
                }
                stopped
            }
        };
        if stopped_now {
            break;
        }
    }
    // Operations resolve promptly once stop is set (one last status poll each).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while ops.len() > 0 {
        tokio::select! {
            (seqs, outcomes) = ops.next() => apply(&ctx, &seqs, &outcomes).await,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let left: Vec<u64> = ops.seqs.values().flatten().copied().collect();
    ops.set.abort_all();
    if !left.is_empty() {
        let q = Arc::clone(&queue);
        blocking(ctx.beat, "queue release", move || {
            q.release(&left, Some("stopped while the operation was followed"))
        })
        .await;
    }
}

/// Probes until the platform answers; true if stopped meanwhile.
async fn probe_until_online(
    ctx: &Ctx<'_>,
    sink: &Sink,
    backoff: &mut Backoff,
    ops: &mut Operations,
) -> bool {
    loop {
        let d = backoff.next_delay();
        debug!(retry_in_ms = d.as_millis() as u64, "offline; next probe");
        if ctx.pause(d, ops).await {
            return true;
        }
        match sink.probe().await {
            Ok(()) => {
                backoff.reset();
                return false;
            }
            Err(e) => debug!(error = %e, "probe failed"),
        }
    }
}

/// Applies outcomes: `seqs` are the frames decided here; any of them without an outcome
/// goes back to pending.
async fn apply(ctx: &Ctx<'_>, seqs: &[u64], outcomes: &[(u64, Outcome)]) {
    let mut accepted = Vec::new();
    let mut retry: Vec<(u64, String)> = Vec::new();
    let mut failed: Vec<(u64, String)> = Vec::new();
    let mut rejected: Vec<(u64, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (seq, o) in outcomes {
        seen.insert(*seq);
        match o {
            Outcome::Accepted => accepted.push(*seq),
            Outcome::Retry(m) => retry.push((*seq, m.clone())),
            Outcome::Failed(m) => failed.push((*seq, m.clone())),
            Outcome::Rejected(m) => rejected.push((*seq, m.clone())),
            Outcome::Gone => {}
        }
    }
    for s in seqs {
        if !seen.contains(s) {
            retry.push((*s, "not sent".to_string()));
        }
    }
    let stats = ctx.stats;
    stats
        .accepted
        .fetch_add(accepted.len() as u64, Ordering::Relaxed);
    stats
        .retried
        .fetch_add(retry.len() as u64, Ordering::Relaxed);
    let q = Arc::clone(ctx.queue);
    let max_attempts = ctx.cfg.max_attempts;
    let dead = blocking(ctx.beat, "queue update", move || {
        q.ack(&accepted);
        // One index update per distinct reason, not one per frame.
        let mut by_reason: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for (s, m) in &retry {
            by_reason.entry(m.as_str()).or_default().push(*s);
        }
        for (m, seqs) in by_reason {
            q.release(&seqs, Some(m));
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
