//! Group commit: [`Group`] stages frames as unsynced `.tmp` files and [`Group::commit`]
//! makes them durable together (the protocol in the parent docs). A frame is counted as
//! committed only here, after its group's fsyncs returned.

use std::fs::File;
use std::path::PathBuf;

use tracing::{error, warn};

use super::files::{INDEX_MARGIN_BYTES, RESERVE_BYTES, frame_name, free_bytes, is_storage_full};
use super::index::{Entry, FrameState};
use super::spool::{self, SpoolError};
use super::{AddError, Op, Queue};
use crate::frame::FrameMeta;

/// From this many frames on, a group is synced with one `syncfs(2)` of the spool's
/// filesystem instead of an `fdatasync(2)` per file. A camera's group (a few frames per
/// window) keeps the per-file syncs, which do not wait for other programs' writes.
pub const SYNC_TOGETHER_FROM: usize = 16;

impl Queue {
    /// Starts a commit group of captured frames: a frame the budget refuses or that
    /// cannot be written is lost, and counted (`dropped_budget`, `dropped_write`).
    pub fn group(&self) -> Group<'_> {
        self.new_group(false)
    }

    /// Starts a commit group of frames read from files that stay where they are until
    /// the group has made them durable (inbox items, `enqueue`'s files): a frame refused
    /// or not written is not lost (its file is still there, and the caller says so or
    /// tries again), so it is not counted as a drop. Without this, an inbox item waiting
    /// for room was counted in `dropped_budget` again at every try, every 5 s.
    pub fn group_from_files(&self) -> Group<'_> {
        self.new_group(true)
    }

    fn new_group(&self, from_files: bool) -> Group<'_> {
        Group {
            q: self,
            staged: Vec::new(),
            watch: None,
            from_files,
        }
    }
}

/// A frame of an open group: its file, still to be synced and renamed to its name in the
/// spool.
pub(super) struct Staged {
    pub(super) seq: u64,
    pub(super) file: File,
    /// Where the file is now: `<seq>.frame.tmp` in the spool, or an adopted inbox item.
    pub(super) tmp: PathBuf,
    pub(super) entry: Entry,
    /// An inbox item adopted in place (`adopt.rs`): never deleted here; if the commit
    /// fails it stays in the inbox, not lost.
    pub(super) adopted: bool,
}

/// An open commit group; see the module docs for the protocol. Dropping it without
/// [`Group::commit`] discards its frames.
pub struct Group<'q> {
    q: &'q Queue,
    staged: Vec<Staged>,
    /// The spool folder, opened before the group's first file was written: `syncfs` on
    /// it reports the filesystem's writeback errors since then.
    watch: Option<File>,
    /// The frames come from files that stay where they are ([`Queue::group_from_files`]).
    from_files: bool,
}

/// What a commit made durable.
#[derive(Debug, Default)]
pub struct Committed {
    /// (seq, filename) of every frame now committed, in order.
    pub frames: Vec<(u64, String)>,
    /// Frames of the group that were lost (fsync or rename failed).
    pub lost: usize,
    /// Frames of a [`Queue::group_from_files`] group whose fsync or rename failed: not
    /// queued, and not lost (their files are where they were).
    pub left: usize,
}

impl<'q> Group<'q> {
    /// Frames in the group.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    pub(super) fn queue(&self) -> &'q Queue {
        self.q
    }

    /// Whether the frames come from files that stay where they are.
    pub(super) fn is_from_files(&self) -> bool {
        self.from_files
    }

    pub(super) fn push(&mut self, staged: Staged) {
        self.staged.push(staged);
    }

    /// Opens the spool folder to watch for writeback errors, before the first file.
    pub(super) fn watch(&mut self) {
        if self.watch.is_none() {
            self.watch = File::open(&self.q.spool).ok();
        }
    }

    /// Writes a frame into the group (not yet durable). Applies the budget first.
    pub fn add(&mut self, meta: &FrameMeta, image: &[u8]) -> Result<u64, AddError> {
        let meta_json = serde_json::to_vec(meta).map_err(|e| {
            AddError::Write(SpoolError::Corrupt {
                path: self.q.spool.clone(),
                reason: format!("cannot encode metadata: {e}"),
            })
        })?;
        let bytes = (spool::HEADER_LEN + meta_json.len() + image.len()) as u64;
        let seq = self.q.reserve(bytes, !self.from_files)?;
        // A frame that would leave the index no room is refused before it touches the
        // disk (counted like any failed write): sled must never hit ENOSPC itself. While
        // the index has failed, room for its repair is kept as well.
        let margin = if self.q.index_failed() {
            INDEX_MARGIN_BYTES + RESERVE_BYTES
        } else {
            INDEX_MARGIN_BYTES
        };
        // Kept delivered frames go first, with headroom: a kept frame never costs a
        // captured one.
        let want = bytes + margin + super::kept::KEPT_HEADROOM_BYTES;
        if let Some(free) = free_bytes(&self.q.spool).filter(|f| *f < want) {
            self.q.free_kept(want - free);
        }
        if free_bytes(&self.q.spool).is_some_and(|free| free < bytes + margin) {
            self.q.unreserve(bytes, !self.from_files);
            return Err(AddError::Write(SpoolError::Io {
                path: self.q.spool.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the disk is nearly full (less than {} MiB would be left for the index)",
                        INDEX_MARGIN_BYTES / (1024 * 1024)
                    ),
                ),
            }));
        }
        let tmp = self.q.spool.join(format!("{}.tmp", frame_name(seq)));
        self.watch();
        match spool::write_unsynced(&tmp, seq, &meta_json, image) {
            Ok((file, _)) => {
                self.staged.push(Staged {
                    seq,
                    file,
                    tmp,
                    entry: Entry::new(bytes, meta.filename.clone(), meta.groups.clone()),
                    adopted: false,
                });
                Ok(seq)
            }
            Err(e) => {
                self.q.unreserve(bytes, !self.from_files);
                if let SpoolError::Io { source, .. } = &e
                    && is_storage_full(source)
                {
                    self.q.free_kept(u64::MAX);
                    self.q.release_reserve();
                }
                Err(AddError::Write(e))
            }
        }
    }

    /// Makes the group durable and visible to the uploader.
    pub fn commit(mut self) -> Committed {
        let q = self.q;
        let staged = std::mem::take(&mut self.staged);
        let mut out = Committed::default();
        let mut durable = Vec::with_capacity(staged.len());
        // A large group (the inbox's, `enqueue`'s) is made durable by one sync of the
        // filesystem rather than one per file: each fdatasync ends in a flush of the
        // device's cache, which an SD card takes tens of milliseconds for. `syncfs`
        // reports any writeback error of the filesystem since `watch` was opened (before
        // the group's first file was written; Linux 5.8 and later); after an error each
        // file is synced on its own, so that only a file that failed is lost.
        let together = staged.len() >= SYNC_TOGETHER_FROM
            && self
                .watch
                .as_ref()
                .is_some_and(|dir| rustix::fs::syncfs(dir).is_ok());
        for s in staged {
            let fin = q.path_of(s.seq);
            let synced = if together { Ok(()) } else { s.file.sync_data() };
            let res = synced.and_then(|_| std::fs::rename(&s.tmp, &fin));
            drop(s.file);
            match res {
                Ok(()) => durable.push((s.seq, s.entry)),
                Err(e) if s.adopted => {
                    warn!(seq = s.seq, file = %s.tmp.display(), error = %e,
                        "cannot fsync or move an inbox item into the spool; it stays in the inbox");
                    q.unreserve(s.entry.bytes, false);
                    out.left += 1;
                }
                Err(e) if self.from_files => {
                    warn!(seq = s.seq, filename = %s.entry.filename, error = %e,
                        "cannot fsync or rename a spool file; the file it was read from is not queued and stays where it is");
                    let _ = std::fs::remove_file(&s.tmp);
                    q.unreserve(s.entry.bytes, false);
                    out.left += 1;
                }
                Err(e) => {
                    error!(seq = s.seq, filename = %s.entry.filename, error = %e,
                        "frame lost: cannot fsync or rename its spool file");
                    let _ = std::fs::remove_file(&s.tmp);
                    q.unreserve(s.entry.bytes, true);
                    out.lost += 1;
                }
            }
        }
        if durable.is_empty() {
            // Drops and lost writes counted since the last flush become durable all the
            // same (at most once a second: on a full disk every frame is one).
            q.flush_counters();
            return out;
        }
        if let Err(e) = spool::sync_dir(&q.spool) {
            error!(dir = %q.spool.display(), error = %e,
                "cannot fsync the spool directory; the last frames may not survive a power cut");
        }
        // The entries and the count land in one transaction, flushed with the group: a
        // frame counted as committed is in the index, and one the index lost in a crash
        // is above `committed_through`, counted when it is re-indexed.
        let mut st = q.state();
        let mut ops = Vec::with_capacity(durable.len());
        for (seq, entry) in durable {
            st.reserved.sub(entry.bytes);
            st.pending.add(entry.bytes);
            out.frames.push((seq, entry.filename.clone()));
            ops.push(Op::Put {
                seq,
                to: FrameState::Pending,
                entry,
            });
        }
        st.apply_counted(&ops, |c, op| {
            if let Op::Put { seq, .. } = op {
                c.committed += 1;
                c.committed_through = c.committed_through.max(*seq);
            }
        });
        drop(st);
        q.flush_index();
        q.notify.notify_one();
        out
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        for s in self.staged.drain(..) {
            if !s.adopted {
                let _ = std::fs::remove_file(&s.tmp);
            }
            self.q.unreserve(s.entry.bytes, false);
        }
    }
}
