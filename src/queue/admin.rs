//! The operator's views and repairs: [`scan_spool`] and [`inspect`] (read-only, safe
//! beside a running daemon and for a user who may only read the queue), [`may_open`] (whether
//! this user may open the queue at all), [`Queue::list`], [`Queue::retry_dead`] and
//! [`Queue::purge_dead`].

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::files::parse_frame_name;
use super::index::{Entry, FrameState, decode_entry, seq_of, walk};
use super::{Counters, Op, Queue, Tally, spool};
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

/// Whether this process may open the queue in `dir` (which writes to it): the folder (or,
/// before it exists, its nearest existing parent) belongs to this user and this user may
/// write it. Anyone else reads it through [`inspect`] and [`scan_spool`]: a group member
/// cannot write it, and root could, but the files it would create or rewrite would then
/// belong to root and the service (its owner) could no longer write them.
pub fn may_open(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut at = dir;
    let m = loop {
        match std::fs::metadata(at) {
            Ok(m) => break m,
            Err(_) => match at.parent() {
                // A relative path's last parent is the working folder.
                Some(p) if p.as_os_str().is_empty() => at = Path::new("."),
                Some(p) => at = p,
                None => return false,
            },
        }
    };
    m.is_dir()
        && m.uid() == rustix::process::geteuid().as_raw()
        && rustix::fs::access(
            at,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .is_ok()
}

/// What a reader sees of a queue without its index ([`inspect`]).
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// Frame files in the spool: pending, in flight and dead together (only the index
    /// tells them apart).
    pub on_disk: Tally,
    /// Capture time of the oldest of them, Unix ms.
    pub oldest_captured_ms: Option<i64>,
    /// Spool files whose header cannot be read.
    pub damaged: usize,
    /// The lifetime counters as of the daemon's last flush (the counters file beside the
    /// index); zero when there is none.
    pub counters: Counters,
    /// The receipts' figures.
    pub receipts: super::ReceiptStats,
}

/// The queue in `dir` read from its files alone — spool headers, the counters file, the
/// receipts — writing nothing; a queue that does not exist reads as empty.
pub fn inspect(dir: &Path) -> std::io::Result<Inspection> {
    let mut out = Inspection {
        counters: super::open::read_floor(dir).unwrap_or_default(),
        receipts: super::receipts::Receipts::stats_read_only(dir),
        ..Inspection::default()
    };
    let (frames, bad) = match scan_spool(dir) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for f in &frames {
        out.on_disk.add(f.bytes);
        out.oldest_captured_ms = match (out.oldest_captured_ms, f.meta.captured_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    out.damaged = bad.len();
    Ok(out)
}

impl Queue {
    /// Every frame in the index with its state, oldest first.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        let st = self.state();
        for state in FrameState::ALL {
            for (k, v) in walk(st.store.trees.of(state)).flatten() {
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
        let mut ops = Vec::new();
        for (k, v) in walk(&st.store.trees.dead).flatten() {
            let (Some(seq), Some(mut e)) = (seq_of(&k), decode_entry(&v)) else {
                continue;
            };
            e.attempts = 0;
            ops.push((seq, e));
        }
        let n = ops.len();
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|(seq, entry)| {
                st.dead.sub(entry.bytes);
                st.pending.add(entry.bytes);
                Op::Move {
                    seq,
                    from: FrameState::Dead,
                    to: FrameState::Pending,
                    entry,
                }
            })
            .collect();
        st.apply(&ops);
        drop(st);
        if n > 0 {
            self.flush_index();
            info!(frames = n, "dead frames put back in the upload queue");
            self.notify.notify_one();
        }
        n
    }

    /// Deletes every dead frame (file and index entry); returns the frames and bytes freed.
    /// Each deletion is logged and counted (`purged`): this is a deliberate, operator-made
    /// loss.
    pub fn purge_dead(&self) -> Tally {
        let mut st = self.state();
        let mut freed = Tally::default();
        let dead: Vec<(u64, Entry)> = st
            .store
            .trees
            .dead
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((seq_of(&k)?, decode_entry(&v)?)))
            .collect();
        let mut ops = Vec::new();
        for (seq, e) in dead {
            st.dead.sub(e.bytes);
            freed.add(e.bytes);
            warn!(seq, filename = %e.filename, "dead frame purged by the operator");
            ops.push(Op::Finish {
                seq,
                from: FrameState::Dead,
            });
        }
        st.apply_counted(&ops, |c, op| {
            if let Op::Finish { .. } = op {
                c.purged += 1;
            }
        });
        drop(st);
        self.flush_index();
        freed
    }
}
