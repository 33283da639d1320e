//! The daemon: opens the queue, starts one capture thread per camera, the commit thread and
//! the uploader task, logs a periodic summary, and shuts everything down in order.
//!
//! Shutdown on SIGINT/SIGTERM: capture stops, the commit thread commits what is already in
//! the channel, the uploader aborts its batch (cancelling the open session; the frames stay
//! queued), the index is flushed. This takes well under 10 s. With `stop_after_frames`,
//! capture stops after that many committed frames and the uploader drains the queue for up
//! to `drain_on_stop_secs` before the same shutdown. [`Mode::DrainOnly`] (`edgecap run
//! --drain`) starts no camera and goes straight to that drain.

mod cameras;
pub mod commit;
pub mod enqueue;
pub mod inbox;
mod reload;
mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::capture::Stop;
use crate::config::Resolved;
use crate::frame::{CameraTable, Namer, new_run_id};
use crate::ops::health::Health;
use crate::ops::notify;
use crate::ops::snapshot::Snapshot;
use crate::queue::{Queue, QueueError, Stats};
use crate::upload::{self, ConfiguredSink, Controls, UploadStats, Uploader};
use cameras::Cameras;
use status::StatusCtx;

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
        path: config_path,
        ..
    } = resolved;
    // From here on SIGHUP reloads the config (its default action would end the process).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let qcfg = config.queue.clone();
    let (queue, report) = crate::queue::calls::call(move || Queue::open(&qcfg))
        .await
        .ok_or_else(|| DaemonError::Thread(std::io::Error::other("the queue open panicked")))??;
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
    // The bandwidth cap (a reload may set, change or lift it).
    let throttle = upload::throttle::Throttle::new(config.upload.link.max_rate);
    let sink = sink
        .with_throttle(Arc::clone(&throttle))
        .with_pace_file(config.queue.dir.join("pacer.json"));

    let run_id = new_run_id();
    info!(run_id, device = %device_id, cameras = config.cameras.len(), "edgecap starting");
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.buffer_frames);
    let capture_stop = Stop::new();
    let health = Health::new(config.daemon.watchdog_stall);
    let table = CameraTable::new(&device_id, &config.cameras);
    let mut cameras = Cameras::start(
        &config.cameras,
        Arc::clone(&table),
        (mode == Mode::Capture).then_some(tx),
        Arc::clone(&capture_stop),
        Arc::clone(&health),
    )
    .map_err(DaemonError::Thread)?;
    let namer = Namer::new(device_id.clone(), run_id.clone(), Arc::clone(&table));
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

    // Frames handed over by `edgecap enqueue` and other programs (daemon/inbox.rs).
    let taker = match inbox::Taker::new(Arc::clone(&queue), device_id.clone(), table) {
        Ok(t) => {
            let stop = Arc::clone(&capture_stop);
            let beat = health.beat("inbox");
            std::thread::Builder::new()
                .name("inbox".into())
                .spawn(move || t.run(&stop, &beat))
                .map_err(|e| warn!(error = %e, "cannot start the inbox taker; `edgecap enqueue` cannot reach this daemon"))
                .ok()
        }
        Err(e) => {
            warn!(inbox = %inbox::inbox_dir(&config.queue.dir).display(), error = %e,
                "cannot create the inbox; `edgecap enqueue` and other programs cannot hand frames to this daemon");
            None
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let up_stats = Arc::new(UploadStats::default());
    let (settings_tx, settings_rx) = watch::channel(upload_settings(&config));
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
                settings: settings_rx,
                clock: Arc::new(crate::schedule::SystemClock),
            },
        )
        .run(),
    );
    let status_ctx = StatusCtx {
        queue: Arc::clone(&queue),
        cams: cameras.list(),
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
        textfile: config.daemon.metrics_textfile.clone(),
    };
    let http = match config.daemon.http_listen {
        Some(addr) => {
            crate::ops::http::serve(addr, Arc::new(status_ctx.clone()), stop_rx.clone()).await
        }
        None => None,
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
                        if let Some(s) = crate::queue::calls::call(move || ctx.snapshot("running")).await {
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
    let mut running = config.clone();
    let commit_flag = commit_done.clone();
    loop {
        tokio::select! {
            s = &mut sig => {
                info!(signal = s, "stopping");
                signalled = true;
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                if mode == Mode::Capture && !*commit_flag.borrow() {
                    reload::apply(&config_path, &mut running, &mut cameras, &settings_tx, &throttle).await;
                } else {
                    info!("SIGHUP while draining: the config is read again at the next start");
                }
                continue;
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
        break;
    }

    notify::stopping();
    status_ctx.write("stopping");
    capture_stop.set();
    let committed = tokio::task::spawn_blocking(move || {
        cameras.join();
        let taken = taker.map_or(0, |t| t.join().unwrap_or(0));
        committer.join().unwrap_or(0) + taken
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
    if let Some(h) = http {
        h.abort();
    }
    status_task.abort();
    let q = Arc::clone(&queue);
    let _ = crate::queue::calls::call(move || q.flush()).await;
    status_ctx.write("stopped").log_summary();
    let dropped_buffer = status_ctx
        .cams
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, c)| c.dropped_buffer.load(Ordering::Relaxed))
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
