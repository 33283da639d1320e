//! Delivered frames kept for a while (`[queue] keep_delivered_bytes`, off by default), so
//! that `edgecap verify --repair` can send a frame again that the platform lost after it
//! accepted it.
//!
//! ```text
//! <dir>/delivered/<seq:020>.frame   spool files of delivered frames, moved (renamed) here
//!                                   instead of deleted once their delivery is durable
//! ```
//!
//! They are a cache, outside the queue's budget and its index: the oldest go first when
//! they exceed their cap, and before the disk gets within [`KEPT_HEADROOM_BYTES`] of what
//! new frames and the index need (a frame is not kept at all then), so a kept frame never
//! costs a captured one: the headroom covers the index growing between two checks.
//! Losing them (a crash between the flush and the rename, a deleted folder) loses only the
//! chance of a repair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::files::{INDEX_MARGIN_BYTES, frame_name, free_bytes};

/// Free space kept frames leave on top of the index margin and the frame being written.
pub(super) const KEPT_HEADROOM_BYTES: u64 = 4 * 1024 * 1024;

/// The kept frames of one queue.
pub(super) struct Kept {
    dir: PathBuf,
    max_bytes: u64,
    /// seq → file size, oldest first.
    files: BTreeMap<u64, u64>,
    total: u64,
}

impl Kept {
    /// The kept frames under `queue_dir`. With a cap of 0 the folder is emptied (keeping
    /// was turned off).
    pub(super) fn open(queue_dir: &Path, max_bytes: u64) -> Self {
        let dir = queue_dir.join("delivered");
        let mut k = Self {
            dir,
            max_bytes,
            files: BTreeMap::new(),
            total: 0,
        };
        for e in std::fs::read_dir(&k.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name
                .strip_suffix(".frame")
                .and_then(|n| n.parse::<u64>().ok());
            match (seq, e.metadata()) {
                (Some(seq), Ok(m)) => {
                    k.files.insert(seq, m.len());
                    k.total += m.len();
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        k.trim();
        k
    }

    /// Whether delivered frames are kept at all.
    pub(super) fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Where frame `seq` is kept.
    pub(super) fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(frame_name(seq))
    }

    /// Moves the delivered frame `seq` from `spool_path` into the cache (deleting it when
    /// that fails). Returns false when the file had to be deleted instead.
    pub(super) fn keep(&mut self, seq: u64, spool_path: &Path) -> bool {
        let len = std::fs::metadata(spool_path).map_or(0, |m| m.len());
        let low = free_bytes(spool_path.parent().unwrap_or(spool_path))
            .is_some_and(|f| f < INDEX_MARGIN_BYTES + KEPT_HEADROOM_BYTES);
        if low {
            // The disk is nearly full: this frame's space is worth more to capture.
            let _ = std::fs::remove_file(spool_path);
            self.free(len);
            return false;
        }
        let kept = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::rename(spool_path, self.path(seq)));
        match kept {
            Ok(()) => {
                self.files.insert(seq, len);
                self.total += len;
                self.trim();
                true
            }
            Err(e) => {
                warn!(seq, error = %e, "cannot keep a delivered frame; it is deleted");
                let _ = std::fs::remove_file(spool_path);
                false
            }
        }
    }

    /// Deletes the oldest kept frames while over the cap.
    fn trim(&mut self) {
        while self.total > self.max_bytes {
            if self.drop_oldest() == 0 && self.files.is_empty() {
                break;
            }
        }
    }

    /// Deletes the oldest kept frame; its size (0 when there is none).
    fn drop_oldest(&mut self) -> u64 {
        let Some((seq, len)) = self.files.pop_first() else {
            return 0;
        };
        self.total = self.total.saturating_sub(len);
        if let Err(e) = std::fs::remove_file(self.path(seq))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(seq, error = %e, "cannot delete a kept delivered frame");
        }
        len
    }

    /// Frees at least `need` bytes of disk (or everything kept); the bytes freed.
    pub(super) fn free(&mut self, need: u64) -> u64 {
        let mut freed = 0;
        while freed < need && !self.files.is_empty() {
            freed += self.drop_oldest();
        }
        freed
    }

    /// Forgets `seq` (sent again): its file is deleted.
    pub(super) fn remove(&mut self, seq: u64) {
        if let Some(len) = self.files.remove(&seq) {
            self.total = self.total.saturating_sub(len);
            let _ = std::fs::remove_file(self.path(seq));
        }
    }

    /// Whether frame `seq` is kept.
    pub(super) fn has(&self, seq: u64) -> bool {
        self.files.contains_key(&seq)
    }
}
