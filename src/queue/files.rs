//! The queue directory's own files beside the spool format: frame file names, the
//! disk-full reserve, free-space and size checks, and quarantine.
//!
//! A full disk is recognised by its error kind ([`std::io::ErrorKind::StorageFull`], i.e.
//! ENOSPC/EDQUOT), never by the text of a message.

use std::fs::File;
use std::path::Path;

use tracing::{error, warn};

use super::Queue;

/// A committed frame's file name in `spool/`.
pub(super) fn frame_name(seq: u64) -> String {
    format!("{seq:020}.frame")
}

/// The `seq` of a committed frame's file name (None for any other name).
pub(super) fn parse_frame_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".frame")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file the daemon leaves when it exits for a restart because its failed index could
/// not be rebuilt in-process (the next open counts it).
pub(super) const RESTART_MARK: &str = "restart-for-index-repair";

/// Space set aside in `<dir>/reserve` while there is room. When the disk fills up, it is
/// given back so that the index can still be written (and the queue opened at the next
/// start): a full disk must never keep the daemon from starting and draining.
pub const RESERVE_BYTES: u64 = 4 * 1024 * 1024;

/// Free space a frame write must leave on the queue's file system, for the index's own
/// writes (acks that free space need them).
pub const INDEX_MARGIN_BYTES: u64 = 1024 * 1024;

/// Bytes available to this user on the file system holding `path`.
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes of the files in `dir` and its sub-folders (an index directory, for the room a
/// rebuild or a copy of it needs).
pub(super) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Whether an OS error means the file system is full (ENOSPC, or a quota: EDQUOT).
pub(super) fn is_storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

/// Creates the reserve file if it is missing (best effort: a full disk gets a warning).
pub(super) fn ensure_reserve(path: &Path) {
    if path.exists() {
        return;
    }
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = RESERVE_BYTES;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n])?;
            left -= n as u64;
        }
        f.sync_data()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        warn!(file = %path.display(), error = %e,
            "cannot set aside the disk-full reserve; a full disk may keep the queue from opening");
    }
}

impl Queue {
    /// Moves a file from outside the spool (an inbox item) into quarantine, logged with
    /// `reason`.
    pub fn quarantine_foreign(&self, path: &Path, reason: &str) {
        self.quarantine_as(
            path,
            reason,
            "quarantined an inbox item that cannot be queued",
        );
    }

    /// Moves a spool file into quarantine (never deletes it).
    pub(super) fn quarantine_file(&self, path: &Path, reason: &str) {
        self.quarantine_as(path, reason, "quarantined a spool file");
    }

    fn quarantine_as(&self, path: &Path, reason: &str, what: &str) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".to_string());
        let mut target = self.quarantine.join(&name);
        let mut n = 1;
        while target.exists() {
            target = self.quarantine.join(format!("{name}.{n}"));
            n += 1;
        }
        match std::fs::rename(path, &target) {
            Ok(()) => {
                warn!(file = %path.display(), moved_to = %target.display(), reason, "{what}");
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, reason,
                    "cannot move a bad spool file to quarantine; leaving it in place");
            }
        }
    }

    /// Gives back the disk-full reserve (once), so the index can still record uploads
    /// that free space.
    pub(super) fn release_reserve(&self) {
        let path = self.dir.join("reserve");
        if std::fs::remove_file(&path).is_ok() {
            error!(dir = %self.dir.display(), reserve_bytes = RESERVE_BYTES,
                "the disk is full: released edgecap's reserve so that the queue index keeps working");
        }
    }
}
