//! The operator's views and repairs: [`scan_spool`] (read-only, safe beside a running
//! daemon), [`Queue::list`], [`Queue::retry_dead`] and [`Queue::purge_dead`].

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::files::parse_frame_name;
use super::index::{Entry, FrameState, decode_entry, encode_entry, seq_of};
use super::{Queue, Tally, spool};
use crate::frame::FrameMeta;

/// One frame of [`Queue::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// Queue sequence number.
    pub seq: u64,
    /// Where it stands.
    pub state: FrameState,
    /// Its index entry.
    pub entry: Entry,
}

/// A spool file [`scan_spool`] could not read, and why.
pub type Damaged = (PathBuf, String);

/// A frame found by [`scan_spool`].
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Queue sequence number.
    pub seq: u64,
    /// Its spool file.
    pub path: PathBuf,
    /// Its metadata (from the file header).
    pub meta: FrameMeta,
    /// The file's size.
    pub bytes: u64,
}

/// The frames on disk, read from the spool files' headers alone: no index, no lock, no
/// write, so it is safe beside a running daemon (files uploaded during the scan are
/// skipped, damaged ones reported in the second list). Oldest first.
pub fn scan_spool(dir: &Path) -> std::io::Result<(Vec<Spooled>, Vec<Damaged>)> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir.join("spool"))? {
        let Ok(e) = e else { continue };
        let path = e.path();
        let Some(seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_frame_name)
        else {
            continue;
        };
        match spool::read_meta(&path) {
            Ok((h, meta)) => ok.push(Spooled {
                seq,
                bytes: h.file_len(),
                path,
                meta,
            }),
            Err(spool::SpoolError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => bad.push((path, err.to_string())),
        }
    }
    ok.sort_by_key(|s| s.seq);
    Ok((ok, bad))
}

impl Queue {
    /// Every frame in the index with its state, oldest first.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        for state in FrameState::ALL {
            for (k, v) in self.trees.of(state).iter().flatten() {
                if let (Some(seq), Some(entry)) = (seq_of(&k), decode_entry(&v)) {
                    out.push(Listed { seq, state, entry });
                }
            }
        }
        out.sort_by_key(|l| l.seq);
        out
    }

    /// Puts every dead frame back in the upload queue with its attempts reset (after the
    /// cause was fixed: a group created, a permission granted). Returns how many.
    pub fn retry_dead(&self) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for (k, v) in self.trees.dead.iter().flatten() {
            let Some(mut e) = decode_entry(&v) else {
                continue;
            };
            e.attempts = 0;
            if self.trees.pending.insert(&k, encode_entry(&e)).is_ok()
                && self.trees.dead.remove(&k).is_ok()
            {
                st.dead.sub(e.bytes);
                st.pending.add(e.bytes);
                n += 1;
            }
        }
        self.persist(&st);
        drop(st);
        if n > 0 {
            self.flush_index();
            info!(frames = n, "dead frames put back in the upload queue");
            self.notify.notify_one();
        }
        n
    }

    /// Deletes every dead frame (file and index entry); returns the frames and bytes freed.
    /// Each deletion is logged: this is a deliberate, operator-made loss.
    pub fn purge_dead(&self) -> Tally {
        let mut st = self.state();
        let mut freed = Tally::default();
        for (k, v) in self.trees.dead.iter().flatten() {
            let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) else {
                continue;
            };
            let path = self.path_of(seq);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    warn!(file = %path.display(), error = %err, "cannot delete a dead frame's file; kept");
                    continue;
                }
            }
            if self.trees.dead.remove(&k).is_ok() {
                st.dead.sub(e.bytes);
                freed.add(e.bytes);
                warn!(seq, filename = %e.filename, "dead frame purged by the operator");
            }
        }
        self.persist(&st);
        drop(st);
        self.flush_index();
        freed
    }
}
