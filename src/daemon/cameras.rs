//! The running cameras: one capture thread per camera, each with its own stop flag (a
//! child of the daemon's), counters and update channel. Started with the daemon; a reload
//! ([`Cameras::reconfigure`]) changes them by name:
//!
//! - same config: untouched;
//! - changed: the new config goes to its thread (a changed source is opened again; rate,
//!   schedule, transforms and change detection change in place) and to the
//!   [`CameraTable`] the commit thread names frames from (metadata, groups, filename);
//! - new: a new slot and thread; removed: its thread stopped, its slot and counters kept
//!   (frames of it may still be in the channel; this run's totals keep counting them).

use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use tracing::info;

use crate::capture::{self, CameraLoop, CameraState, CameraStats, Stop};
use crate::config::CameraConfig;
use crate::frame::{CameraTable, CapturedFrame};
use crate::ops::health::Health;

/// Every camera's name and counters, in slot order, for the status (removed ones too).
pub type CameraList = Arc<RwLock<Vec<(String, Arc<CameraStats>)>>>;

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CameraChanges {
    /// Cameras whose config changed.
    pub changed: Vec<String>,
    /// Cameras added.
    pub added: Vec<String>,
    /// Cameras removed.
    pub removed: Vec<String>,
}

struct Running {
    slot: usize,
    cfg: CameraConfig,
    stop: Arc<Stop>,
    updates: Sender<CameraConfig>,
    thread: JoinHandle<()>,
    stats: Arc<CameraStats>,
}

/// The capture threads.
pub struct Cameras {
    table: Arc<CameraTable>,
    tx: Option<SyncSender<CapturedFrame>>,
    stop: Arc<Stop>,
    health: Arc<Health>,
    running: Vec<Running>,
    ended: Vec<JoinHandle<()>>,
    /// Cameras a reload removed, by name, with their slot and counters: one added again
    /// in the same run takes them back, so its sequence numbers (and so its filenames)
    /// go on instead of starting over.
    removed: Vec<(String, usize, Arc<CameraStats>)>,
    list: CameraList,
}

impl Cameras {
    /// Starts a thread for each of `configs` (slot = position in `table`). Without `tx`
    /// (a drain-only run) no camera runs and a reload adds none.
    pub fn start(
        configs: &[CameraConfig],
        table: Arc<CameraTable>,
        tx: Option<SyncSender<CapturedFrame>>,
        stop: Arc<Stop>,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let mut c = Self {
            table,
            tx,
            stop,
            health,
            running: Vec::new(),
            ended: Vec::new(),
            removed: Vec::new(),
            list: Default::default(),
        };
        if c.tx.is_some() {
            for (slot, cfg) in configs.iter().enumerate() {
                c.spawn(slot, cfg.clone(), None)?;
            }
        }
        Ok(c)
    }

    /// The cameras' names and counters, for the status.
    pub fn list(&self) -> CameraList {
        Arc::clone(&self.list)
    }

    /// Starts the thread of the camera in `slot`, with the counters it had if it ran
    /// before in this run.
    fn spawn(
        &mut self,
        slot: usize,
        cfg: CameraConfig,
        before: Option<Arc<CameraStats>>,
    ) -> std::io::Result<()> {
        let Some(tx) = self.tx.clone() else {
            return Ok(());
        };
        let listed = before.is_some();
        let stats = before.unwrap_or_default();
        stats.set_state(CameraState::Starting);
        let stop = self.stop.child();
        let (updates, rx) = std::sync::mpsc::channel();
        let beat = self.health.beat(&format!("camera {}", cfg.name));
        let l = CameraLoop {
            index: slot,
            cam: cfg.clone(),
            tx,
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
            updates: rx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("capture-{}", cfg.name))
            .spawn(move || capture::run_camera(l, beat))?;
        if !listed {
            self.list
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((cfg.name.clone(), Arc::clone(&stats)));
        }
        self.running.push(Running {
            slot,
            cfg,
            stop,
            updates,
            thread,
            stats,
        });
        Ok(())
    }

    /// Applies a reloaded camera list (see the module doc).
    pub fn reconfigure(&mut self, new: &[CameraConfig]) -> std::io::Result<CameraChanges> {
        let mut ch = CameraChanges::default();
        if self.tx.is_none() {
            return Ok(ch);
        }
        // Removed.
        let (keep, gone): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| new.iter().any(|c| c.name == r.cfg.name));
        self.running = keep;
        for r in gone {
            info!(camera = %r.cfg.name, "camera removed by a reload: stopping it");
            r.stop.set();
            r.stats.set_state(CameraState::Removed);
            ch.removed.push(r.cfg.name.clone());
            self.removed
                .push((r.cfg.name.clone(), r.slot, Arc::clone(&r.stats)));
            self.ended.push(r.thread);
        }
        for cfg in new {
            match self.running.iter_mut().find(|r| r.cfg.name == cfg.name) {
                Some(r) if r.cfg == *cfg => {}
                Some(r) => {
                    self.table.set(r.slot, cfg.clone());
                    // The thread may have ended (its channel closed): nothing to tell.
                    let _ = r.updates.send(cfg.clone());
                    r.stop.nudge();
                    r.cfg = cfg.clone();
                    ch.changed.push(cfg.name.clone());
                }
                None => {
                    let back = self
                        .removed
                        .iter()
                        .position(|(n, _, _)| *n == cfg.name)
                        .map(|i| self.removed.swap_remove(i));
                    match back {
                        Some((_, slot, stats)) => {
                            self.table.set(slot, cfg.clone());
                            self.spawn(slot, cfg.clone(), Some(stats))?;
                        }
                        None => {
                            let slot = self.table.push(cfg.clone());
                            self.spawn(slot, cfg.clone(), None)?;
                        }
                    }
                    info!(camera = %cfg.name, "camera added by a reload");
                    ch.added.push(cfg.name.clone());
                }
            }
        }
        Ok(ch)
    }

    /// Stops every camera (if not already), waits for their threads, and lets go of the
    /// channel so the commit thread ends once it has committed what is in it.
    pub fn join(mut self) {
        self.stop.set();
        self.tx = None;
        for r in self.running {
            let _ = r.thread.join();
        }
        for t in self.ended {
            let _ = t.join();
        }
    }
}
