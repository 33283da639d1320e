//! Delivery: [`Queue::lease`] hands pending frames to the uploader, [`Queue::read_image`]
//! reads one with its checksum verified, and the settle calls ([`Queue::ack`],
//! [`Queue::release`], [`Queue::fail`], [`Queue::kill`]) record what the platform did.
//! The flush points that make `interrupted` exact are here (see the parent docs).

use tracing::{error, warn};

use super::index::{
    Entry, FrameState, SessionRef, decode_entry, encode_entry, index_err, key, seq_of,
};
use super::spool::{self, SpoolError};
use super::{Counters, Queue, QueueError, ReadError, State};
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
}

impl Queue {
    /// Leases up to `max_frames` pending frames (at least one, at most `max_bytes` unless a
    /// single frame is larger) that share the oldest pending frame's groups.
    pub fn lease(&self, max_frames: usize, max_bytes: u64) -> Result<Vec<Leased>, QueueError> {
        let ie = index_err(&self.index);
        let mut chosen: Vec<(u64, Entry)> = Vec::new();
        {
            let mut st = self.state();
            let mut groups: Option<Vec<String>> = None;
            let mut bytes = 0u64;
            for kv in self.trees.pending.iter() {
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
            self.move_in_flight(&mut st, &chosen)?;
        }
        if !chosen.is_empty() {
            self.flush_index();
        }
        Ok(chosen
            .into_iter()
            .filter_map(|(seq, e)| self.leased(seq, e.image_delivered))
            .collect())
    }

    /// Moves `frames` from pending to in flight (the caller flushes once the state lock
    /// is released: durable before anything is sent, so after a crash the frames that may
    /// have reached the platform are exactly the ones found in flight, `interrupted`).
    fn move_in_flight(&self, st: &mut State, frames: &[(u64, Entry)]) -> Result<(), QueueError> {
        let ie = index_err(&self.index);
        for (seq, e) in frames {
            self.trees.pending.remove(key(*seq)).map_err(&ie)?;
            self.trees
                .inflight
                .insert(key(*seq), encode_entry(e))
                .map_err(&ie)?;
            st.pending.sub(e.bytes);
            st.inflight.add(e.bytes);
        }
        Ok(())
    }

    /// A frame just moved in flight, with the metadata of its spool file; a file that
    /// cannot be read is dealt with (quarantined, dropped, or released) and skipped.
    fn leased(&self, seq: u64, image_delivered: bool) -> Option<Leased> {
        match spool::read_meta(&self.path_of(seq)) {
            Ok((h, meta)) => Some(Leased {
                seq,
                meta,
                image_len: h.image_len,
                image_crc: h.image_crc,
                image_delivered,
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
        for state in FrameState::ALL {
            if let Ok(Some(v)) = self.trees.of(state).remove(key(seq)) {
                let bytes = decode_entry(&v).map_or(0, |e| e.bytes);
                st.tally(state).sub(bytes);
            }
        }
        count(&mut st.counters);
        self.persist(&st);
    }

    /// Reads a leased frame's image, verifying its checksum. A corrupt file is quarantined.
    pub fn read_image(&self, seq: u64) -> Result<Vec<u8>, ReadError> {
        match spool::read_frame(&self.path_of(seq)) {
            Ok((_, _, image)) => Ok(image),
            Err(e) => Err(self.handle_read_error(seq, e)),
        }
    }

    /// The platform accepted these frames: delete them.
    pub fn ack(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut st = self.state();
        let mut delivered = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            match self.trees.inflight.remove(key(seq)) {
                Ok(Some(v)) => {
                    let bytes = decode_entry(&v).map_or(0, |e| e.bytes);
                    st.inflight.sub(bytes);
                    st.counters.uploaded += 1;
                    delivered.push(seq);
                }
                Ok(None) => {}
                Err(e) => error!(seq, error = %e, "cannot remove an uploaded frame from the index"),
            }
        }
        if st.pending.frames + st.inflight.frames + st.dead.frames < self.max_frames {
            st.full = false;
        }
        self.persist(&st);
        drop(st);
        // The index forgets the frames before their files go: after a crash, an entry
        // without a file then always means a file lost outside edgecap, never an upload.
        self.flush_index();
        for seq in delivered {
            let path = self.path_of(seq);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(file = %path.display(), error = %e, "cannot delete an uploaded frame's file");
            }
        }
    }

    /// Moves in-flight frames back to pending (a transient failure).
    pub fn release(&self, seqs: &[u64], error: Option<&str>) {
        self.settle(seqs, error, false, |_| false);
    }

    /// Moves in-flight frames back to pending keeping their recorded session: their fate
    /// is unknown (shutdown while the platform processed them), and the next start asks
    /// the platform before sending them again. Flushed.
    pub fn release_for_recovery(&self, seqs: &[u64], error: &str) {
        self.settle(seqs, Some(error), true, |_| false);
        self.flush_index();
    }

    /// Records the session in-flight frames went into, durably, before any of their bytes
    /// are sent (so a crash leaves the platform something to be asked).
    pub fn record_session(&self, seqs: &[u64], session: &SessionRef) {
        let _st = self.state();
        for &seq in seqs {
            let Ok(Some(v)) = self.trees.inflight.get(key(seq)) else {
                continue;
            };
            let Some(mut e) = decode_entry(&v) else {
                continue;
            };
            e.session = Some(session.clone());
            if let Err(err) = self.trees.inflight.insert(key(seq), encode_entry(&e)) {
                warn!(seq, error = %err, "cannot record a frame's upload session");
            }
        }
        drop(_st);
        self.flush_index();
    }

    /// Leases every pending frame with a recorded session (left by a crash or a stop while
    /// the platform processed it), grouped by session, for the start-up recovery.
    pub fn lease_sessions(&self) -> Result<Vec<(SessionRef, Vec<Leased>)>, QueueError> {
        let ie = index_err(&self.index);
        let mut by_session: std::collections::BTreeMap<SessionRef, Vec<(u64, bool)>> =
            Default::default();
        {
            let mut st = self.state();
            let mut moved = Vec::new();
            for kv in self.trees.pending.iter() {
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
            self.move_in_flight(&mut st, &moved)?;
        }
        if !by_session.is_empty() {
            self.flush_index();
        }
        let mut out = Vec::with_capacity(by_session.len());
        for (session, seqs) in by_session {
            let frames = seqs
                .into_iter()
                .filter_map(|(seq, delivered)| self.leased(seq, delivered))
                .collect();
            out.push((session, frames));
        }
        Ok(out)
    }

    /// Counts frames found on the platform after a restart.
    pub fn count_recovered(&self, n: u64) {
        let mut st = self.state();
        st.counters.recovered += n;
        self.persist(&st);
    }

    /// The platform accepted these frames' images but not (yet) their metadata: they go
    /// back to pending marked so that only the metadata is sent again. Flushed, so a
    /// restart does not upload the images a second time. Counted in `metadata_retried`.
    pub fn image_delivered(&self, seqs: &[u64], error: &str) {
        self.settle(seqs, Some(error), false, |e| {
            e.image_delivered = true;
            false
        });
        {
            let mut st = self.state();
            st.counters.metadata_retried += seqs.len() as u64;
            self.persist(&st);
        }
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
        for &seq in seqs {
            let Ok(Some(v)) = self.trees.inflight.remove(key(seq)) else {
                continue;
            };
            let Some(mut e) = decode_entry(&v) else {
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
            let tree = if to_dead {
                &self.trees.dead
            } else {
                &self.trees.pending
            };
            if let Err(err) = tree.insert(key(seq), encode_entry(&e)) {
                error!(seq, error = %err, "cannot update a frame's index entry; it will be re-indexed at the next start");
                continue;
            }
            if to_dead {
                st.dead.add(e.bytes);
                st.counters.dead += 1;
                n_dead += 1;
                error!(seq, filename = %e.filename, attempts = e.attempts, error = error.unwrap_or(""),
                    "frame marked dead: the platform refused it; it stays in the queue for inspection");
            } else {
                st.pending.add(e.bytes);
                n_back += 1;
            }
        }
        self.persist(&st);
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
