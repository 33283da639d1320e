//! The daemon's status task: every few seconds it takes a [`Snapshot`] (queue, uploader,
//! cameras, stalls), writes the status file, sets systemd's `STATUS=`, pings the watchdog
//! while no loop is stalled, refreshes the counters' floor, and tries the repair of a
//! failed queue index.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::cameras::CameraList;
use crate::ops::health::Health;
use crate::ops::notify;
use crate::ops::snapshot::{self, CameraSnapshot, RunCounters, Snapshot};
use crate::queue::Queue;
use crate::upload::{self, UploadStats};

/// What the status writer needs.
#[derive(Clone)]
pub(super) struct StatusCtx {
    pub(super) queue: Arc<Queue>,
    pub(super) cams: CameraList,
    pub(super) up: Arc<UploadStats>,
    pub(super) health: Arc<Health>,
    pub(super) base: Snapshot,
    pub(super) path: std::path::PathBuf,
    /// node_exporter's textfile (`daemon.metrics_textfile`).
    pub(super) textfile: Option<std::path::PathBuf>,
}

/// How often the status file and systemd's STATUS= are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How often the metrics textfile is rewritten (it is often on the SD card).
const TEXTFILE_EVERY: Duration = Duration::from_secs(30);

/// How often the queue's counters are copied outside the index (`<queue>/counters`).
const FLOOR_EVERY: Duration = Duration::from_secs(30);

impl StatusCtx {
    pub(super) fn snapshot(&self, state: &str) -> Snapshot {
        let cameras: Vec<CameraSnapshot> = self
            .cams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
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
        let (uploader, online) = self.up.state.view();
        Snapshot {
            state: state.to_string(),
            updated_at: crate::frame::rfc3339_utc(std::time::SystemTime::now()),
            run: RunCounters::of(&cameras),
            online,
            uploader,
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
    pub(super) fn write(&self, state: &str) -> Snapshot {
        let st = self.snapshot(state);
        if let Err(e) = snapshot::write(&self.path, &st) {
            debug!(path = %self.path.display(), error = %e, "cannot write the status file");
        }
        st
    }

    /// Refreshes the status file and STATUS=, and pings the watchdog while nothing is
    /// stalled, until `stop`.
    pub(super) async fn run(self, stop: watch::Receiver<bool>, hopeless: Arc<tokio::sync::Notify>) {
        let ping_every = notify::watchdog_interval();
        let mut tick =
            tokio::time::interval(ping_every.map_or(STATUS_EVERY, |p| p.min(STATUS_EVERY)));
        let mut write_failing = false;
        let mut stalled_logged = false;
        let mut floor_written = Instant::now();
        let mut textfile_written: Option<Instant> = None;
        let mut textfile_failing = false;
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
            let Some((st, give_up)) = crate::queue::calls::call(move || {
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
            if let Some(path) = &self.textfile
                && textfile_written.is_none_or(|t| t.elapsed() >= TEXTFILE_EVERY)
            {
                textfile_written = Some(Instant::now());
                let (target, st2) = (path.clone(), st.clone());
                let done = tokio::task::spawn_blocking(move || {
                    crate::ops::textfile::write_textfile(&target, &st2)
                })
                .await;
                match done {
                    Ok(Ok(())) if textfile_failing => {
                        info!(path = %path.display(), "the metrics textfile is written again");
                        textfile_failing = false;
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if !textfile_failing => {
                        warn!(path = %path.display(), error = %e,
                            "cannot write the metrics textfile; node_exporter will not see this daemon's metrics");
                        textfile_failing = true;
                    }
                    _ => {}
                }
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

impl crate::ops::http::Source for StatusCtx {
    fn snapshot(&self) -> Snapshot {
        StatusCtx::snapshot(self, "running")
    }

    fn frame(&self, camera: &str) -> Option<Option<Arc<Vec<u8>>>> {
        let cams = self.cams.read().unwrap_or_else(|e| e.into_inner());
        // A camera removed and added again by reloads: the running one is the last.
        cams.iter()
            .rev()
            .find(|(name, _)| name == camera)
            .map(|(_, st)| st.latest())
    }
}
