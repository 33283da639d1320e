//! The daemon: opens the queue, starts one capture thread per camera, the commit thread and
//! the uploader task, logs a periodic summary, and shuts everything down in order.
//!
//! Shutdown on SIGINT/SIGTERM: capture stops, the commit thread commits what is already in
//! the channel, the uploader aborts its batch (cancelling the open session; the frames stay
//! queued), the index is flushed. This takes well under 10 s. With `stop_after_frames`,
//! capture stops after that many committed frames and the uploader drains the queue for up
//! to `drain_on_stop_secs` before the same shutdown. [`Mode::DrainOnly`] (`edgecap run
//! --drain`) starts no camera and goes straight to that drain.

pub mod commit;
pub mod enqueue;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::capture::{self, CameraStats, Stop};
use crate::config::Resolved;
use crate::frame::{Namer, new_run_id};
use crate::ops::health::Health;
use crate::ops::notify;
use crate::ops::snapshot::{self, CameraSnapshot, RunCounters, Snapshot};
use crate::queue::{Queue, QueueError, Stats};
use crate::upload::{self, ConfiguredSink, Controls, UploadStats, Uploader};

/// The daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The sink could not be built.
    #[error("upload: {0}")]
    Sink(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What a run did, for the final report.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// This run's id.
    pub run_id: String,
    /// Frames committed during this run.
    pub committed: u64,
    /// Frames dropped in the capture buffer during this run.
    pub dropped_buffer: u64,
    /// Frames the uploader delivered during this run.
    pub accepted: u64,
    /// The queue at exit.
    pub queue: Stats,
    /// Whether a signal ended the run.
    pub signalled: bool,
    /// The run ended because the failed queue index could not be rebuilt in-process: exit
    /// with [`EXIT_RESTART`] so that systemd starts edgecap again.
    pub restart_for_index: bool,
}

/// The exit code of a run that ends so that systemd restarts it (EX_TEMPFAIL): the queue
/// index failed and could not be rebuilt in-process.
pub const EXIT_RESTART: u8 = 75;

async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can still run; stopping then needs SIGKILL.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Capture, queue and upload until a signal (or `stop_after_frames`).
    Capture,
    /// Start no camera: upload what is queued (for up to `drain_on_stop_secs`) and stop.
    DrainOnly,
}

/// Runs the daemon until a signal, or until `stop_after_frames` are captured and drained
/// (in [`Mode::DrainOnly`], until the queue is drained).
pub async fn run(resolved: Resolved, mode: Mode) -> Result<RunSummary, DaemonError> {
    let Resolved {
        config,
        device_id,
        secret,
        ..
    } = resolved;
    let qcfg = config.queue.clone();
    let (queue, report) = tokio::task::spawn_blocking(move || Queue::open(&qcfg))
        .await
        .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??;
    let queue = Arc::new(queue);
    crate::ops::memory::release_free_memory();
    let s = queue.stats();
    info!(dir = %config.queue.dir.display(), pending = s.pending.frames, dead = s.dead.frames,
        tmp_removed = report.tmp_removed, quarantined = report.quarantined,
        index_dropped = report.index_dropped, reindexed = report.reindexed,
        interrupted = report.interrupted, index_rebuilt = report.index_rebuilt,
        "queue open and reconciled");
    if report.quarantined > 0 || report.index_rebuilt {
        warn!(
            quarantined = report.quarantined,
            index_rebuilt = report.index_rebuilt,
            "the queue needed repairs at start-up; see quarantine/ in the queue directory"
        );
    }
    let sink = ConfiguredSink::new(
        &config.upload.sink,
        secret.as_ref(),
        &device_id,
        Arc::clone(&queue) as Arc<dyn upload::SessionJournal>,
    )
    .map_err(DaemonError::Sink)?;

    let run_id = new_run_id();
    info!(run_id, device = %device_id, cameras = config.cameras.len(), "edgecap starting");
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.buffer_frames);
    let capture_stop = Stop::new();
    let health = Health::new(config.daemon.watchdog_stall);
    let mut cam_stats = Vec::new();
    let mut cam_threads = Vec::new();
    let cameras = match mode {
        Mode::Capture => config.cameras.as_slice(),
        Mode::DrainOnly => &[],
    };
    for (i, cam) in cameras.iter().enumerate() {
        let st = Arc::new(CameraStats::default());
        cam_stats.push(Arc::clone(&st));
        let (cam, tx, stop) = (cam.clone(), tx.clone(), Arc::clone(&capture_stop));
        let beat = health.beat(&format!("camera {}", cam.name));
        let h = std::thread::Builder::new()
            .name(format!("capture-{}", cam.name))
            .spawn(move || capture::run_camera(i, cam, tx, stop, st, beat))
            .map_err(DaemonError::Thread)?;
        cam_threads.push(h);
    }
    drop(tx);
    let namer = Namer::new(device_id.clone(), run_id.clone(), config.cameras.clone());
    let settings = commit::CommitSettings {
        mode: config.queue.fsync,
        window: config.queue.commit_window,
        stop_after: config.daemon.stop_after_frames,
    };
    let (commit_done_tx, mut commit_done) = watch::channel(false);
    let (q2, cs) = (Arc::clone(&queue), Arc::clone(&capture_stop));
    let commit_beat = health.beat("commit");
    let committer = std::thread::Builder::new()
        .name("commit".into())
        .spawn(move || {
            let n = commit::run(q2, rx, namer, settings, cs, commit_beat);
            let _ = commit_done_tx.send(true);
            n
        })
        .map_err(DaemonError::Thread)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let up_stats = Arc::new(UploadStats::default());
    let uploader = tokio::spawn(
        Uploader::new(
            Arc::clone(&queue),
            sink,
            upload_settings(&config),
            Controls {
                stats: Arc::clone(&up_stats),
                stop: stop_rx.clone(),
                drain: drain_rx,
                beat: health.beat("upload"),
            },
        )
        .run(),
    );
    let status_ctx = StatusCtx {
        queue: Arc::clone(&queue),
        cams: cam_stats.clone(),
        names: cameras.iter().map(|c| c.name.clone()).collect(),
        up: Arc::clone(&up_stats),
        health: Arc::clone(&health),
        base: Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            run_id: run_id.clone(),
            device: device_id.clone(),
            state: "running".into(),
            started_at: crate::frame::rfc3339_utc(std::time::SystemTime::now()),
            queue_dir: config.queue.dir.display().to_string(),
            ..Snapshot::default()
        },
        path: config.daemon.status_file.clone(),
    };
    let first = status_ctx.write("running");
    notify::ready(&first.line());
    info!(status_file = %config.daemon.status_file.display(), "ready");
    // Set by the status task when the failed queue index cannot be rebuilt in-process.
    let hopeless = Arc::new(tokio::sync::Notify::new());
    let status_task = {
        let ctx = status_ctx.clone();
        let stop = stop_rx.clone();
        let hopeless = Arc::clone(&hopeless);
        tokio::spawn(async move { ctx.run(stop, hopeless).await })
    };
    let summary = config.daemon.summary_interval.map(|every| {
        let stop = stop_rx.clone();
        let ctx = status_ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let ctx = ctx.clone();
                        if let Ok(s) = tokio::task::spawn_blocking(move || ctx.snapshot("running")).await {
                            s.log_summary();
                        }
                    }
                    _ = upload::stopped(&stop) => break,
                }
            }
        })
    });

    // Wait for a signal, or for stop_after_frames followed by a drain.
    let mut signalled = false;
    let mut restart_for_index = false;
    let sig = signal();
    tokio::pin!(sig);
    tokio::select! {
        s = &mut sig => {
            info!(signal = s, "stopping");
            signalled = true;
        }
        _ = hopeless.notified() => {
            error!(exit_code = EXIT_RESTART,
                "the failed queue index cannot be rebuilt in-process; stopping so that systemd starts edgecap again (the restart is counted in index_restarts)");
            queue.mark_restart_for_repair();
            restart_for_index = true;
        }
        _ = commit_done.wait_for(|d| *d) => {
            let _ = drain_tx.send(true);
            let deadline = Instant::now() + config.daemon.drain_on_stop;
            info!(timeout_secs = config.daemon.drain_on_stop.as_secs(), "capture finished; draining the queue");
            loop {
                let st = queue.stats();
                if st.pending.frames + st.inflight.frames == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(pending = st.pending.frames, inflight = st.inflight.frames,
                        "drain timed out; the remaining frames stay queued for the next run");
                    break;
                }
                tokio::select! {
                    s = &mut sig => {
                        info!(signal = s, "stopping");
                        signalled = true;
                        break;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }

    notify::stopping();
    status_ctx.write("stopping");
    capture_stop.set();
    let committed = tokio::task::spawn_blocking(move || {
        for h in cam_threads {
            let _ = h.join();
        }
        committer.join().unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(6), uploader).await {
        Ok(_) => {}
        Err(_) => error!("the uploader did not stop in time; its frames stay queued"),
    }
    if let Some(s) = summary {
        s.abort();
    }
    status_task.abort();
    let q = Arc::clone(&queue);
    let _ = tokio::task::spawn_blocking(move || q.flush()).await;
    status_ctx.write("stopped").log_summary();
    let dropped_buffer = cam_stats
        .iter()
        .map(|c| c.dropped_buffer.load(Ordering::Relaxed))
        .sum();
    Ok(RunSummary {
        run_id,
        committed,
        dropped_buffer,
        accepted: up_stats.accepted.load(Ordering::Relaxed),
        queue: queue.stats(),
        signalled,
        restart_for_index,
    })
}

/// The upload settings the uploader runs with: as configured, with the batch age
/// stretched when the cameras' group sets would need more sessions than the limit allows
/// (`config::platform::session_plan`).
fn upload_settings(config: &crate::config::Config) -> crate::config::UploadConfig {
    let mut up = config.upload.clone();
    if let crate::config::SinkConfig::Nexus(n) = &up.sink {
        let plan = crate::config::platform::session_plan(
            config.group_sets(),
            up.batch.max_age,
            n.session_rate_limit,
            n.session_rate_window,
        );
        if plan.batch_age > up.batch.max_age {
            info!(
                group_sets = config.group_sets(),
                configured_secs = up.batch.max_age.as_secs(),
                batch_age_secs = plan.batch_age.as_secs_f64(),
                "batch age stretched so that every group set gets its share of the upload sessions"
            );
            up.batch.max_age = plan.batch_age;
        }
    }
    up
}

/// What the status writer needs.
#[derive(Clone)]
struct StatusCtx {
    queue: Arc<Queue>,
    cams: Vec<Arc<CameraStats>>,
    names: Vec<String>,
    up: Arc<UploadStats>,
    health: Arc<Health>,
    base: Snapshot,
    path: std::path::PathBuf,
}

/// How often the status file and systemd's STATUS= are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How often the queue's counters are copied outside the index (`<queue>/counters`).
const FLOOR_EVERY: Duration = Duration::from_secs(30);

impl StatusCtx {
    fn snapshot(&self, state: &str) -> Snapshot {
        let cameras: Vec<CameraSnapshot> = self
            .names
            .iter()
            .zip(&self.cams)
            .map(|(name, st)| CameraSnapshot {
                name: name.clone(),
                produced: st.produced.load(Ordering::Relaxed),
                errors: st.errors.load(Ordering::Relaxed),
                skipped_unchanged: st.skipped_unchanged.load(Ordering::Relaxed),
                bad_frames: st.bad_frames.load(Ordering::Relaxed),
                dropped_buffer: st.dropped_buffer.load(Ordering::Relaxed),
                state: st.state_name().to_string(),
                last_frame_ms: Some(st.last_frame_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0),
                fps: st.fps(),
                restarts: st.restarts.load(Ordering::Relaxed),
            })
            .collect();
        let oldest = self.queue.oldest_waiting_age().map(|d| d.as_secs());
        Snapshot {
            state: state.to_string(),
            updated_at: crate::frame::rfc3339_utc(std::time::SystemTime::now()),
            run: RunCounters::of(&cameras),
            online: self.up.online.load(Ordering::Relaxed),
            uploader: self.up.state.status(),
            stalled: self
                .health
                .stalled()
                .map(|st| format!("{} stuck {} s in {}", st.name, st.for_secs, st.doing)),
            cameras,
            receipts: self.queue.receipt_stats(),
            ..self.base.clone()
        }
        .with_queue(&self.queue.stats(), oldest)
    }

    /// Writes the status file (a failure is logged once per state change by the caller's
    /// loop; here it is only reported).
    fn write(&self, state: &str) -> Snapshot {
        let st = self.snapshot(state);
        if let Err(e) = snapshot::write(&self.path, &st) {
            debug!(path = %self.path.display(), error = %e, "cannot write the status file");
        }
        st
    }

    /// Refreshes the status file and STATUS=, and pings the watchdog while nothing is
    /// stalled, until `stop`.
    async fn run(self, stop: watch::Receiver<bool>, hopeless: Arc<tokio::sync::Notify>) {
        let ping_every = notify::watchdog_interval();
        let mut tick =
            tokio::time::interval(ping_every.map_or(STATUS_EVERY, |p| p.min(STATUS_EVERY)));
        let mut write_failing = false;
        let mut stalled_logged = false;
        let mut floor_written = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = upload::stopped(&stop) => break,
            }
            // A failed queue index is repaired from here too (not only before a lease),
            // so it heals while the uplink is down; and the counters' floor is refreshed.
            let write_floor = floor_written.elapsed() >= FLOOR_EVERY;
            if write_floor {
                floor_written = Instant::now();
            }
            let ctx = self.clone();
            let Ok((st, give_up)) = tokio::task::spawn_blocking(move || {
                let _ = ctx.queue.repair_if_failed();
                ctx.queue.flush_counters();
                if write_floor {
                    ctx.queue.write_floor();
                }
                (ctx.snapshot("running"), ctx.queue.repair_hopeless())
            })
            .await
            else {
                continue;
            };
            if give_up {
                hopeless.notify_one();
            }
            match snapshot::write(&self.path, &st) {
                Ok(()) if write_failing => {
                    info!(path = %self.path.display(), "the status file is written again");
                    write_failing = false;
                }
                Ok(()) => {}
                Err(e) if !write_failing => {
                    warn!(path = %self.path.display(), error = %e,
                        "cannot write the status file; `edgecap status` will not see this daemon");
                    write_failing = true;
                }
                Err(_) => {}
            }
            notify::status(&st.line());
            match self.health.stalled() {
                None => {
                    if stalled_logged {
                        info!("no loop is stalled any more; watchdog pings resume");
                        stalled_logged = false;
                    }
                    if ping_every.is_some() {
                        notify::watchdog();
                    }
                }
                Some(s) => {
                    if !stalled_logged {
                        error!(loop_name = %s.name, doing = s.doing, stuck_secs = s.for_secs,
                            "a loop is stuck; watchdog pings stopped so that systemd restarts the service");
                        stalled_logged = true;
                    }
                }
            }
        }
    }
}
