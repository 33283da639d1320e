//! The budget: `max_frames`/`max_bytes` over every frame on disk, what makes room when it
//! is full (dead frames first, then `on_full`), and the accounting of frames being written.
//! Every drop is counted and logged.

use tracing::{error, warn};

use super::index::{FrameState, decode_entry, key, seq_of};
use super::{AddError, Op, Queue, State};
use crate::config::OnFull;

impl Queue {
    /// Drops one frame to make room (its file goes after the next flush of the index,
    /// which records the drop); returns false when nothing may be dropped. While the
    /// index has failed nothing is dropped: new frames are refused instead.
    pub(super) fn drop_one(&self, st: &mut State) -> bool {
        if st.store.is_failed() {
            return false;
        }
        let trees = &st.store.trees;
        let thinner = &mut st.thinner;
        let victim = match trees.dead.first() {
            Ok(Some(kv)) => Some((FrameState::Dead, kv)),
            _ => match self.on_full {
                OnFull::DropOldest => match trees.pending.first() {
                    Ok(Some(kv)) => Some((FrameState::Pending, kv)),
                    _ => None,
                },
                OnFull::DropNewest => None,
                OnFull::Thin => {
                    let from = |c: Option<u64>, n: usize| -> Vec<u64> {
                        trees
                            .pending
                            .range(key(c.unwrap_or(0))..)
                            .keys()
                            .take(n)
                            .filter_map(|k| k.ok().and_then(|k| seq_of(&k)))
                            .collect()
                    };
                    thinner.victim(from).and_then(|seq| {
                        let k = key(seq);
                        match trees.pending.get(k) {
                            Ok(Some(v)) => {
                                Some((FrameState::Pending, (sled::IVec::from(&k[..]), v)))
                            }
                            _ => None,
                        }
                    })
                }
            },
        };
        let Some((state, (k, v))) = victim else {
            return false;
        };
        let was_dead = state == FrameState::Dead;
        let Some(seq) = seq_of(&k) else {
            let _ = st.store.trees.of(state).remove(k);
            return true;
        };
        let entry = decode_entry(&v);
        let bytes = entry.as_ref().map_or(0, |e| e.bytes);
        st.counters.dropped_budget += 1;
        st.counters.evicted += 1;
        if !st.apply(&[Op::Finish { seq, from: state }]) {
            error!(
                seq,
                "cannot record a frame's drop in the index; it is kept until the index is repaired"
            );
        }
        st.tally(state).sub(bytes);
        let filename = entry.map(|e| e.filename).unwrap_or_default();
        if !st.full {
            st.full = true;
            error!(seq, filename, policy = ?self.on_full, was_dead,
                max_frames = self.max_frames, max_bytes = self.max_bytes,
                "queue budget full: frames are being dropped; raise max_bytes/max_frames or restore the uplink");
        } else {
            warn!(seq, filename, policy = ?self.on_full, was_dead, "dropped a frame to stay within the queue budget");
        }
        true
    }

    /// Reserves room and a sequence number for a frame of `bytes`. A refusal is a lost
    /// frame, counted and logged, when `counted`; otherwise (a file that stays where it
    /// is) the caller reports it.
    pub(super) fn reserve(&self, bytes: u64, counted: bool) -> Result<u64, AddError> {
        let mut st = self.state();
        loop {
            let frames =
                st.pending.frames + st.inflight.frames + st.dead.frames + st.reserved.frames;
            let used = st.pending.bytes + st.inflight.bytes + st.dead.bytes + st.reserved.bytes;
            if frames < self.max_frames && used.saturating_add(bytes) <= self.max_bytes {
                break;
            }
            if bytes > self.max_bytes || !self.drop_one(&mut st) {
                if !counted {
                    return Err(AddError::Full {
                        policy: self.on_full,
                    });
                }
                st.counters.dropped_budget += 1;
                if !st.full {
                    st.full = true;
                    error!(policy = ?self.on_full, max_frames = self.max_frames, max_bytes = self.max_bytes,
                        "queue budget full: new frames are being refused; raise max_bytes/max_frames or restore the uplink");
                } else {
                    warn!(policy = ?self.on_full, bytes, "refused a new frame: queue budget full");
                }
                st.dirty = true;
                return Err(AddError::Full {
                    policy: self.on_full,
                });
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.counters.next_seq = st.next_seq;
        st.reserved.add(bytes);
        Ok(seq)
    }

    pub(super) fn unreserve(&self, bytes: u64, lost: bool) {
        let mut st = self.state();
        st.reserved.sub(bytes);
        if lost {
            st.counters.dropped_write += 1;
            st.dirty = true;
        }
    }
}
