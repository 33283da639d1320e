//! The link policy's part of the uploader: upload windows. Outside every window the
//! uploader is in [`Phase::Closed`] (state `window closed until …`): nothing is sent,
//! operations already under way are still followed. A batch sent inside a window is
//! given a stop signal that fires at the window's end, so the sink stops it there; its
//! unsent frames stay queued for the next window.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use super::{Phase, Uploader};
use crate::upload::sink::Sink;
use crate::upload::stopped;

impl<S: Sink> Uploader<S> {
    /// How long until an upload window opens; `None` while one is open (or none is
    /// configured).
    pub(super) fn window_wait(&self) -> Option<Duration> {
        let w = &self.cfg.link.windows;
        if w.is_always() {
            return None;
        }
        w.until_active(&self.clock.now())
    }

    /// The stop signal a batch is sent with: the daemon's, and the end of the current
    /// upload window (the batch stops there; its unsent frames stay queued).
    pub(super) fn batch_stop(
        &self,
    ) -> (watch::Receiver<bool>, Option<tokio::task::JoinHandle<()>>) {
        let w = &self.cfg.link.windows;
        let Some(closes_in) = (!w.is_always())
            .then(|| w.until_inactive(&self.clock.now()))
            .flatten()
        else {
            return (self.stop.clone(), None);
        };
        let (tx, rx) = watch::channel(*self.stop.borrow());
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = stopped(&stop) => {}
                _ = tokio::time::sleep(closes_in) => {
                    info!("upload window closing: the batch under way stops; its unsent frames stay queued");
                }
            }
            let _ = tx.send(true);
        });
        (rx, Some(task))
    }

    /// Outside the upload windows: wait for the next one (operations followed meanwhile).
    pub(super) async fn closed(&mut self, until: Instant, since: Option<Instant>) -> Option<Phase> {
        if self.pause_until(until).await {
            return None;
        }
        match self.window_wait() {
            Some(wait) => Some(Phase::Closed {
                until: Instant::now() + wait,
                since,
            }),
            None => {
                info!("upload window open: uploading");
                Some(self.after(since))
            }
        }
    }
}
