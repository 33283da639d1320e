//! SIGHUP: the config file read and checked again, and what can change while running
//! applied without losing a frame. Cameras (sources, rates, schedules, transforms,
//! metadata, groups; added or removed) change through
//! [`Cameras::reconfigure`](super::cameras::Cameras::reconfigure); the upload limits
//! (batch sizes and age, retry delays, attempts, the link policy) go to the uploader, which applies them
//! before its next step. The queue, the sink's in-flight work and the rest stay as they
//! are: a change to `[queue]`, `[daemon]`, `[device]` or the sink itself is logged as
//! taking effect at the next start. An invalid new config is refused with every problem
//! logged, and the running one is kept.

use std::path::Path;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::cameras::Cameras;
use crate::config::{self, Config, UploadConfig};

/// Reads `path` again and applies what may change to `running` (updated in place).
pub(super) async fn apply(
    path: &Path,
    running: &mut Config,
    cameras: &mut Cameras,
    upload: &watch::Sender<UploadConfig>,
    throttle: &crate::upload::throttle::Throttle,
) {
    info!(config = %path.display(), "SIGHUP: reading the config again");
    let new = match config::load(path).and_then(|c| config::resolve(c, path)) {
        Ok(r) => r,
        Err(e) => {
            error!(
                error = %e,
                "the new config is refused; the daemon keeps running with the config it had"
            );
            return;
        }
    };
    for w in &new.warnings {
        warn!("{w}");
    }
    let new = new.config;
    let later = restart_needed(running, &new);
    if !later.is_empty() {
        warn!(
            sections = later.join(", "),
            "these settings changed and take effect at the next start (systemctl restart edgecap)"
        );
    }
    let changes = match cameras.reconfigure(&new.cameras) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "a camera added by the reload cannot start its thread");
            Default::default()
        }
    };
    let upload_changed = limits_differ(&running.upload, &new.upload);
    if running.upload.link.max_rate != new.upload.link.max_rate {
        throttle.set_rate(new.upload.link.max_rate).await;
    }
    if upload_changed {
        let mut up = super::upload_settings(&new);
        // The sink itself is the running one's until the next start.
        up.sink = running.upload.sink.clone();
        let _ = upload.send(up);
    }
    info!(
        changed = changes.changed.join(","),
        added = changes.added.join(","),
        removed = changes.removed.join(","),
        upload_limits_changed = upload_changed,
        "config reloaded"
    );
    let sink = running.upload.sink.clone();
    let (queue, daemon, device) = (
        running.queue.clone(),
        running.daemon.clone(),
        running.device_id.clone(),
    );
    *running = new;
    // What did not take effect stays as it runs, so the next reload compares with it.
    running.upload.sink = sink;
    running.queue = queue;
    running.daemon = daemon;
    running.device_id = device;
}

/// The sections whose change needs a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.queue != new.queue {
        out.push("[queue]");
    }
    if old.daemon != new.daemon {
        out.push("[daemon]");
    }
    if old.device_id != new.device_id {
        out.push("[device]");
    }
    if old.upload.sink != new.upload.sink {
        out.push("the sink (upload.sink and its table)");
    }
    out
}

/// Whether the limits a reload applies (all of `[upload]` but the sink) differ.
fn limits_differ(old: &UploadConfig, new: &UploadConfig) -> bool {
    old.batch != new.batch
        || old.retry != new.retry
        || old.max_attempts != new.max_attempts
        || old.link != new.link
}
