//! Delivery: [`Queue::lease`] hands pending frames to the uploader, [`Queue::read_image`]
//! reads one with its checksum verified, and the settle calls ([`Queue::ack`],
//! [`Queue::release`], [`Queue::fail`], [`Queue::kill`]) record what the platform did.
//! The receipts written on delivery are `proof.rs`.
//! The flush points that make `interrupted` exact are here (see the parent docs).

use tracing::{error, warn};

use super::index::{Entry, FrameState, SessionRef, decode_entry, index_err, seq_of, walk};
use super::spool::{self, SpoolError};
use super::{Counters, Op, Queue, QueueError, ReadError, State};
use crate::frame::FrameMeta;

/// A frame leased for upload.
#[derive(Debug, Clone)]
pub struct Leased {
    /// Queue sequence number.
    pub seq: u64,
    /// Its metadata.
    pub meta: FrameMeta,
    /// Image size.
    pub image_len: u32,
    /// CRC-32C of the image.
    pub image_crc: u32,
    /// The platform already has the image: only the metadata is still to be sent.
    pub image_delivered: bool,
    /// The session it went into last, when its fate was left unknown.
    pub previous: Option<SessionRef>,
}

impl Queue {
    /// Leases up to `max_frames` pending frames (at least one, at most `max_bytes` unless a
    /// single frame is larger) that share the oldest pending frame's groups. While the
    /// index has failed, a repair is tried first; if it cannot be done yet, nothing is
    /// leased ([`QueueError::IndexFailed`]).
    pub fn lease(&self, max_frames: usize, max_bytes: u64) -> Result<Vec<Leased>, QueueError> {
        self.lease_in(max_frames, max_bytes, false)
    }

    /// [`Queue::lease`] from the newest pending frames back (`newest_first`), or from the
    /// oldest.
    pub fn lease_in(
        &self,
        max_frames: usize,
        max_bytes: u64,
        newest_first: bool,
    ) -> Result<Vec<Leased>, QueueError> {
        self.repair_if_failed()?;
        let mut chosen: Vec<(u64, Entry)> = Vec::new();
        {
            let mut st = self.state();
            let mut groups: Option<Vec<String>> = None;
            let mut bytes = 0u64;
            let path = st.store.path.clone();
            let ie = index_err(&path);
            let pending = st.store.trees.pending.iter();
            let order: Box<dyn Iterator<Item = _>> = if newest_first {
                Box::new(pending.rev())
            } else {
                Box::new(pending)
            };
            for kv in order {
                if chosen.len() >= max_frames {
                    break;
                }
                let (k, v) = kv.map_err(&ie)?;
                let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) else {
                    continue;
                };
                let g = groups.get_or_insert_with(|| e.groups.clone());
                if *g != e.groups {
                    continue;
                }
                if !chosen.is_empty() && bytes + e.bytes > max_bytes {
                    break;
                }
                bytes += e.bytes;
                chosen.push((seq, e));
            }
            Self::move_in_flight(&mut st, &chosen);
        }
        if !chosen.is_empty() {
            self.flush_index();
        }
        Ok(chosen
            .into_iter()
            .filter_map(|(seq, e)| self.leased(seq, e.image_delivered, e.session))
            .collect())
    }

    /// Moves `frames` from pending to in flight (the caller flushes once the state lock
    /// is released: durable before anything is sent, so after a crash the frames that may
    /// have reached the platform are exactly the ones found in flight, `interrupted`).
    fn move_in_flight(st: &mut State, frames: &[(u64, Entry)]) {
        let mut ops = Vec::with_capacity(frames.len());
        for (seq, e) in frames {
            st.pending.sub(e.bytes);
            st.inflight.add(e.bytes);
            ops.push(Op::Move {
                seq: *seq,
                from: FrameState::Pending,
                to: FrameState::InFlight,
                entry: e.clone(),
            });
        }
        st.apply_counted(&ops, |_, _| {});
    }

    /// A frame just moved in flight, with the metadata of its spool file; a file that
    /// cannot be read is dealt with (quarantined, dropped, or released) and skipped.
    fn leased(
        &self,
        seq: u64,
        image_delivered: bool,
        previous: Option<SessionRef>,
    ) -> Option<Leased> {
        match spool::read_meta_of(&self.path_of(seq), seq) {
            Ok((h, meta)) => Some(Leased {
                seq,
                meta,
                image_len: h.image_len,
                image_crc: h.image_crc,
                image_delivered,
                previous,
            }),
            Err(e) => {
                let err = self.handle_read_error(seq, e);
                warn!(seq, error = %err, "a leased frame cannot be read; skipping it");
                if let ReadError::Io { .. } = err {
                    self.release(&[seq], Some(&err.to_string()));
                }
                None
            }
        }
    }

    pub(super) fn handle_read_error(&self, seq: u64, e: SpoolError) -> ReadError {
        match e {
            SpoolError::Corrupt { reason, path } => {
                self.quarantine_file(&path, &reason);
                self.forget(seq, |c| c.quarantined += 1);
                ReadError::Quarantined { seq, reason }
            }
            SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                error!(
                    seq,
                    "spool file of a queued frame is missing; dropping its index entry"
                );
                self.forget(seq, |c| c.index_dropped += 1);
                ReadError::Missing { seq }
            }
            other => ReadError::Io { seq, source: other },
        }
    }

    /// Removes an entry (any state) without touching files; counts via `count`.
    fn forget(&self, seq: u64, count: impl FnOnce(&mut Counters)) {
        let mut st = self.state();
        let mut ops = Vec::new();
        for state in FrameState::ALL {
            if let Some(e) = st.store.get(state, seq) {
                st.tally(state).sub(e.bytes);
                ops.push(Op::Forget { seq, from: state });
            }
        }
        count(&mut st.counters);
        st.apply(&ops);
        drop(st);
        self.flush_index();
    }

    /// Opens a leased frame's spool file for streaming its image ([`spool::open_image_of`]);
    /// a file whose header is damaged is quarantined. The file and the image's length;
    /// the image's own checksum is the reader's to check, and a mismatch is reported
    /// through [`Queue::image_damaged`].
    pub fn open_image(&self, seq: u64) -> Result<(std::fs::File, u32), ReadError> {
        match spool::open_image_of(&self.path_of(seq), seq) {
            Ok((f, h)) => Ok((f, h.image_len)),
            Err(e) => Err(self.handle_read_error(seq, e)),
        }
    }

    /// Frame `seq`'s image turned out damaged while it was streamed (`reason`): its file
    /// is quarantined and the frame leaves the index, counted as quarantined, exactly as
    /// when a read finds the damage.
    pub fn image_damaged(&self, seq: u64, reason: &str) -> ReadError {
        let path = self.path_of(seq);
        self.handle_read_error(seq, SpoolError::corrupt(&path, reason))
    }

    /// Reads a leased frame's image, verifying its checksum. A corrupt file is quarantined.
    pub fn read_image(&self, seq: u64) -> Result<Vec<u8>, ReadError> {
        match spool::read_frame_of(&self.path_of(seq), seq) {
            Ok((_, _, image)) => Ok(image),
            Err(e) => Err(self.handle_read_error(seq, e)),
        }
    }

    /// The platform accepted these frames: they leave the index (with a tombstone and the
    /// count, in one transaction), the index is flushed, then their files are deleted.
    /// After a crash an entry without a file therefore means a file lost outside edgecap,
    /// and a file with a tombstone a delivered frame, never one to send again.
    pub fn ack(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let keep = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enabled();
        let mut st = self.state();
        let mut ops = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(e) = st.store.get(FrameState::InFlight, seq) {
                if keep {
                    st.acked.insert(seq);
                }
                st.inflight.sub(e.bytes);
                ops.push(Op::Finish {
                    seq,
                    from: FrameState::InFlight,
                });
            }
        }
        if st.pending.frames + st.inflight.frames + st.dead.frames < self.max_frames {
            st.full = false;
        }
        st.apply_counted(&ops, |c, op| {
            if let Op::Finish { .. } = op {
                c.uploaded += 1;
            }
        });
        drop(st);
        self.flush_index();
    }

    /// Moves in-flight frames back to pending (a transient failure).
    pub fn release(&self, seqs: &[u64], error: Option<&str>) {
        self.settle(seqs, error, false, |_| false);
    }

    /// Moves in-flight frames back to pending whose bytes never reached the platform
    /// although they went into a session (a stop before their upload): that session does
    /// not count, so their next one is not counted as a re-send.
    pub fn release_unsent(&self, seqs: &[u64], error: &str) {
        self.settle(seqs, Some(error), false, |e| {
            e.sends = e.sends.saturating_sub(1);
            false
        });
    }

    /// Moves in-flight frames back to pending keeping their recorded session: their fate
    /// is unknown (shutdown while the platform processed them), and the next start asks
    /// the platform before sending them again. Flushed.
    pub fn release_for_recovery(&self, seqs: &[u64], error: &str) {
        self.settle(seqs, Some(error), true, |e| {
            e.interrupted = true;
            false
        });
        self.flush_index();
    }

    /// Moves in-flight frames back to pending keeping their recorded session, leaving
    /// `interrupted` as it was: the platform could not be asked whether it took them (an
    /// operation that did not end cleanly, then a failed lookup). The sink asks before it
    /// sends them again; a re-send then counts as one after an error (or after a crash,
    /// if one had left them unknown before). Flushed.
    pub fn release_unconfirmed(&self, seqs: &[u64], error: &str) {
        self.settle(seqs, Some(error), true, |_| false);
        self.flush_index();
    }

    /// Records the session in-flight frames went into, durably, before any of their bytes
    /// are sent (so a crash leaves the platform something to be asked). A frame that went
    /// into a session before is sent again: counted by cause (`resent_after_crash` when a
    /// crash or a stop left its fate unknown, `resent_after_error` otherwise), in the same
    /// transaction.
    pub fn record_session(&self, seqs: &[u64], session: &SessionRef) {
        let frames: Vec<(u64, SessionRef)> = seqs.iter().map(|s| (*s, session.clone())).collect();
        self.record_sessions(&frames);
    }

    /// [`Queue::record_session`] with a session per frame (Picsellia's object names), in
    /// transactions of 64 with their counts (not one: ~10 MiB for 5000 frames), one flush.
    pub fn record_sessions(&self, frames: &[(u64, SessionRef)]) {
        let mut st = self.state();
        let mut ops = Vec::with_capacity(frames.len());
        // Per change: 1 = a re-send after a crash, 2 = after an error, 0 = a first send.
        let mut resent: Vec<u8> = Vec::with_capacity(frames.len());
        for (seq, session) in frames {
            let seq = *seq;
            let Some(mut e) = st.store.get(FrameState::InFlight, seq) else {
                continue;
            };
            let mut kind = 0;
            if !e.image_delivered {
                if e.sends > 0 {
                    kind = if e.interrupted { 1 } else { 2 };
                }
                e.sends = e.sends.saturating_add(1);
            }
            resent.push(kind);
            e.interrupted = false;
            e.session = Some(session.clone());
            ops.push(Op::Move {
                seq,
                from: FrameState::InFlight,
                to: FrameState::InFlight,
                entry: e,
            });
        }
        let at = std::cell::Cell::new(0usize);
        let applied = st.apply_counted(&ops, |c, _| {
            match resent.get(at.get()) {
                Some(1) => c.resent_after_crash += 1,
                Some(2) => c.resent_after_error += 1,
                _ => {}
            }
            at.set(at.get() + 1);
        });
        if !applied {
            warn!(
                frames = frames.len(),
                "cannot record a batch's upload session: the index has failed; after a crash these frames are counted as interrupted"
            );
        }
        drop(st);
        self.flush_index();
    }

    /// Leases every pending frame with a recorded session (left by a crash or a stop while
    /// the platform processed it), grouped by session, for the start-up recovery.
    pub fn lease_sessions(&self) -> Result<Vec<(SessionRef, Vec<Leased>)>, QueueError> {
        self.repair_if_failed()?;
        let mut by_session: std::collections::BTreeMap<SessionRef, Vec<(u64, bool)>> =
            Default::default();
        {
            let mut st = self.state();
            let mut moved = Vec::new();
            let path = st.store.path.clone();
            let ie = index_err(&path);
            for kv in walk(&st.store.trees.pending) {
                let (k, v) = kv.map_err(&ie)?;
                let (Some(seq), Some(e)) = (seq_of(&k), decode_entry(&v)) else {
                    continue;
                };
                if let Some(s) = e.session.clone() {
                    by_session
                        .entry(s)
                        .or_default()
                        .push((seq, e.image_delivered));
                    moved.push((seq, e));
                }
            }
            Self::move_in_flight(&mut st, &moved);
        }
        if !by_session.is_empty() {
            self.flush_index();
        }
        let mut out = Vec::with_capacity(by_session.len());
        for (session, seqs) in by_session {
            let frames = seqs
                .into_iter()
                .filter_map(|(seq, delivered)| self.leased(seq, delivered, Some(session.clone())))
                .collect();
            out.push((session, frames));
        }
        Ok(out)
    }

    /// Counts frames found on the platform after a restart.
    pub fn count_recovered(&self, n: u64) {
        let mut st = self.state();
        st.counters.recovered += n;
        st.dirty = true;
        drop(st);
        self.flush_index();
    }

    /// The platform accepted these frames' images but not (yet) their metadata: they go
    /// back to pending marked so that only the metadata is sent again. Flushed, so a
    /// restart does not upload the images a second time. Counted in `metadata_retried`.
    pub fn image_delivered(&self, seqs: &[u64], error: &str) {
        {
            let mut st = self.state();
            st.counters.metadata_retried += seqs.len() as u64;
            st.dirty = true;
        }
        // The session stays: the image went in it (the receipt names it), and after a
        // restart the platform is asked about it before anything is sent again.
        self.settle(seqs, Some(error), true, |e| {
            e.image_delivered = true;
            false
        });
        self.flush_index();
    }

    /// A failure of these frames themselves: count an attempt; after `max_attempts` they
    /// are marked dead. Returns how many went dead.
    pub fn fail(&self, seqs: &[u64], error: &str, max_attempts: u32) -> usize {
        self.settle(seqs, Some(error), false, |e| {
            e.attempts += 1;
            e.attempts >= max_attempts
        })
    }

    /// Marks frames dead at once (a permanent refusal).
    pub fn kill(&self, seqs: &[u64], error: &str) -> usize {
        self.settle(seqs, Some(error), false, |e| {
            e.attempts += 1;
            true
        })
    }

    /// Moves in-flight frames to pending or dead (as `dead` decides, after it updated the
    /// entry); their recorded session is forgotten unless `keep_session`.
    fn settle(
        &self,
        seqs: &[u64],
        error: Option<&str>,
        keep_session: bool,
        dead: impl Fn(&mut Entry) -> bool,
    ) -> usize {
        if seqs.is_empty() {
            return 0;
        }
        let mut st = self.state();
        let mut n_dead = 0;
        let mut n_back = 0;
        let mut ops = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let Some(mut e) = st.store.get(FrameState::InFlight, seq) else {
                continue;
            };
            st.inflight.sub(e.bytes);
            if !keep_session {
                e.session = None;
            }
            if let Some(msg) = error {
                e.last_error = Some(msg.chars().take(500).collect());
            }
            let to_dead = dead(&mut e);
            if to_dead {
                st.dead.add(e.bytes);
                n_dead += 1;
                error!(seq, filename = %e.filename, attempts = e.attempts, error = error.unwrap_or(""),
                    "frame marked dead: the platform refused it; it stays in the queue for inspection");
            } else {
                st.pending.add(e.bytes);
                n_back += 1;
            }
            ops.push(Op::Move {
                seq,
                from: FrameState::InFlight,
                to: if to_dead {
                    FrameState::Dead
                } else {
                    FrameState::Pending
                },
                entry: e,
            });
        }
        st.apply_counted(&ops, |c, op| {
            if let Op::Move {
                to: FrameState::Dead,
                ..
            } = op
            {
                c.dead += 1;
            }
        });
        drop(st);
        if n_dead > 0 {
            self.flush_index();
        }
        if n_back > 0 {
            self.notify.notify_one();
        }
        n_dead
    }
}
