//! The reaper: deletes the spool files of finished frames (delivered, dropped, purged) on
//! a thread of its own, once the index transaction that finished them is durable.
//!
//! Why: the flush that made an ack durable used to delete the batch's files itself, on
//! the thread the uploader's queue calls run on. Deleting 500 files took ~50 ms on this
//! project's benchmark disk (an ext4 without journal), and an SD card can stall for
//! seconds: the uploader's next lease, and so its next session, waited for it. The
//! deletions may wait instead: a finished frame keeps a tombstone in the index (the
//! `gone` tree) until its file is gone, and the reconcile at start deletes a file whose
//! tombstone it finds (parent module's recovery rules). The reaper hands back the
//! sequence numbers whose files it deleted ([`Reaper::reaped`]); the next flush removes
//! their tombstones. A tombstone is never removed before its file.
//!
//! Dropping the queue waits for the reaper ([`Reaper::finish`]). When the thread cannot be
//! started, files are deleted where they are handed over, as before.

use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::warn;

/// The files of finished frames: (seq, spool path).
type Files = Vec<(u64, PathBuf)>;

/// The deleting thread and what it deleted.
pub(super) struct Reaper {
    tx: Option<Sender<Files>>,
    thread: Option<JoinHandle<()>>,
    /// Sequence numbers whose files are gone and whose tombstones may go.
    reaped: Arc<Mutex<Vec<u64>>>,
}

impl Reaper {
    /// Starts the thread (a small stack: it only calls `unlink`).
    pub(super) fn start() -> Self {
        let reaped = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel::<Files>();
        let done = Arc::clone(&reaped);
        let thread = std::thread::Builder::new()
            .name("edgecap-reap".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for files in rx {
                    delete(&files, &done);
                }
            });
        match thread {
            Ok(t) => Self {
                tx: Some(tx),
                thread: Some(t),
                reaped,
            },
            Err(e) => {
                warn!(error = %e, "cannot start the thread that deletes delivered frames' files; deleting them in place");
                Self {
                    tx: None,
                    thread: None,
                    reaped,
                }
            }
        }
    }

    /// Deletes `files` in the background (in place when the thread is gone).
    pub(super) fn delete(&self, files: Files) {
        if files.is_empty() {
            return;
        }
        let files = match &self.tx {
            Some(tx) => match tx.send(files) {
                Ok(()) => return,
                Err(back) => back.0,
            },
            None => files,
        };
        delete(&files, &self.reaped);
    }

    /// The sequence numbers whose files were deleted since the last call.
    pub(super) fn reaped(&self) -> Vec<u64> {
        std::mem::take(&mut *self.reaped.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until every file handed over is deleted (or failed to be).
    pub(super) fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes `files`, noting each one gone (or never there) in `done`. A file that cannot
/// be deleted keeps its tombstone: the next start tries again.
fn delete(files: &Files, done: &Mutex<Vec<u64>>) {
    let mut gone = Vec::with_capacity(files.len());
    for (seq, path) in files {
        match std::fs::remove_file(path) {
            Ok(()) => gone.push(*seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(*seq),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot delete a finished frame's file");
            }
        }
    }
    done.lock().unwrap_or_else(|e| e.into_inner()).extend(gone);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_deleted_in_the_background_and_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let files: Files = (1..=3)
            .map(|seq| {
                let p = dir.path().join(format!("{seq}.frame"));
                std::fs::write(&p, b"x").unwrap();
                (seq, p)
            })
            .collect();
        let mut missing = files.clone();
        missing.push((9, dir.path().join("never-there")));
        let mut r = Reaper::start();
        r.delete(missing);
        r.finish();
        for (_, p) in &files {
            assert!(!p.exists(), "{} still there", p.display());
        }
        let mut got = r.reaped();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 9]);
        assert!(r.reaped().is_empty());
        // After `finish` files are deleted in place.
        let late = dir.path().join("late");
        std::fs::write(&late, b"x").unwrap();
        r.delete(vec![(10, late.clone())]);
        assert!(!late.exists());
        assert_eq!(r.reaped(), vec![10]);
    }

    #[test]
    fn a_file_that_cannot_be_deleted_keeps_its_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where a file is expected: `remove_file` fails, not NotFound.
        let sub = dir.path().join("5.frame");
        std::fs::create_dir(&sub).unwrap();
        let mut r = Reaper::start();
        r.delete(vec![(5, sub.clone())]);
        r.finish();
        assert!(sub.exists());
        assert!(r.reaped().is_empty());
    }
}
