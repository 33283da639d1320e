//! The commit thread: takes captured frames from the bounded channel, names them, and
//! commits them to the queue in groups (see the queue's docs for the protocol).
//!
//! A frame counts as captured only once its group is durable. Write failures (disk full,
//! I/O errors) lose that frame only: they are counted by the queue and logged when the
//! state changes (first failure at ERROR, recovery at INFO), so a full disk does not flood
//! the journal, and capture goes on.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use tracing::{debug, error, info};

use crate::capture::Stop;
use crate::config::FsyncMode;
use crate::frame::{CapturedFrame, Namer};
use crate::ops::health::Beat;
use crate::queue::{AddError, Queue};

/// Largest group, whatever the window (bounds the frames an fsync round holds back).
const MAX_GROUP: usize = 256;

/// Settings of the commit thread.
pub struct CommitSettings {
    /// Grouped or per frame.
    pub mode: FsyncMode,
    /// Group window.
    pub window: std::time::Duration,
    /// Stop capture after this many committed frames.
    pub stop_after: Option<u64>,
}

/// Runs until every camera has stopped (the channel closes) or `stop_after` is reached.
/// Returns the number of frames committed.
pub fn run(
    queue: Arc<Queue>,
    rx: Receiver<CapturedFrame>,
    mut namer: Namer,
    settings: CommitSettings,
    capture_stop: Arc<Stop>,
    beat: Arc<Beat>,
) -> u64 {
    let mut total = 0u64;
    let mut failing = false;
    let mut lost_while_failing = 0u64;
    let limit = settings.stop_after.unwrap_or(u64::MAX);
    'outer: while total < limit {
        let Ok(first) = rx.recv() else { break };
        // Busy from the first frame of a group to its fsync (the window is short; a disk
        // that stops answering keeps it busy).
        let _busy = beat.busy("writing and syncing a commit group");
        let mut group = queue.group();
        let mut in_group = 0u64;
        let mut add = |f: CapturedFrame, group: &mut crate::queue::Group<'_>| {
            let Some(meta) = namer.peek(&f) else {
                return false;
            };
            match group.add(&meta, &f.jpeg) {
                Ok(_) => {
                    namer.advance(f.camera);
                    if failing {
                        info!(
                            lost = lost_while_failing,
                            "writing to the queue works again"
                        );
                        failing = false;
                        lost_while_failing = 0;
                    }
                    true
                }
                Err(AddError::Full { .. }) => false,
                Err(AddError::Write(e)) => {
                    lost_while_failing += 1;
                    if !failing {
                        error!(error = %e, camera = %meta.camera,
                            "frame lost: cannot write to the queue (disk full or failing?); capture goes on, losses are counted in dropped_write");
                        failing = true;
                    }
                    false
                }
            }
        };
        if add(first, &mut group) {
            in_group += 1;
        }
        if settings.mode == FsyncMode::Grouped {
            let deadline = Instant::now() + settings.window;
            while group.len() < MAX_GROUP && total + in_group < limit {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(f) => {
                        if add(f, &mut group) {
                            in_group += 1;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        total += commit(group);
                        break 'outer;
                    }
                }
            }
        }
        total += commit(group);
    }
    if total >= limit {
        info!(frames = total, "stop_after_frames reached: capture stops");
    }
    capture_stop.set();
    total
}

fn commit(group: crate::queue::Group<'_>) -> u64 {
    // An empty group is committed too: it makes the drops counted since durable.
    let committed = group.commit();
    for (seq, filename) in &committed.frames {
        debug!(seq, filename = %filename, "frame committed");
    }
    committed.frames.len() as u64
}
