//! The sled index: its trees, the key encoding, the entry codec and [`FrameState`].
//!
//! Keys are the big-endian `seq` (so sled's order is queue order); values are small JSON
//! [`Entry`] records. One tree per [`FrameState`], `meta` for the counters, and `gone`
//! for tombstones: frames delivered or dropped whose files may not be deleted yet (written
//! in the same transaction as the removal and the counter, so that a crash before the
//! unlink never brings a finished frame back). Nothing here touches the spool directory.
//!
//! Whole trees are read with [`walk`], one key at a time, never with sled's own iterator:
//! sled 0.34's `Iter` keeps the node it reads from and never tells the page cache it used
//! it, so the cache cannot evict what a scan read. A scan of 100,000 entries (the
//! reconcile at start-up) left every node resident, +23 MiB whatever `index_cache_bytes`
//! said; read through [`walk`] it leaves what the cache allows (`examples/index_memory.rs`,
//! BENCHMARKS.md). Short reads (a lease from the front of `pending`) still use `iter`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::QueueError;

/// Where a queued frame stands. Each state is one sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FrameState {
    /// Waiting for upload.
    #[serde(rename = "pending")]
    Pending,
    /// Leased to the uploader: it may be on its way to the platform.
    #[serde(rename = "in flight")]
    InFlight,
    /// Refused by the platform; kept for inspection until retried or purged.
    #[serde(rename = "dead")]
    Dead,
}

impl FrameState {
    /// Every state, in the order listings and the reconcile walk them.
    pub const ALL: [FrameState; 3] = [Self::Pending, Self::InFlight, Self::Dead];

    /// The word operators see (`queue list`, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in flight",
            Self::Dead => "dead",
        }
    }

    /// The sled tree holding frames in this state (part of the on-disk format).
    fn tree_name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "inflight",
            Self::Dead => "dead",
        }
    }
}

impl std::fmt::Display for FrameState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An index value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// File size in bytes.
    #[serde(rename = "b")]
    pub bytes: u64,
    /// Platform filename.
    #[serde(rename = "f")]
    pub filename: String,
    /// Asset groups (frames are batched by equal groups).
    #[serde(rename = "g")]
    pub groups: Vec<String>,
    /// Failures of this frame itself.
    #[serde(rename = "a", default)]
    pub attempts: u32,
    /// Last error, if any.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The platform has the image; only the metadata is still to be delivered.
    #[serde(rename = "m", default, skip_serializing_if = "std::ops::Not::not")]
    pub image_delivered: bool,
    /// The platform session the frame went into, recorded before any of its bytes were
    /// sent; set while its fate is unknown (in flight, or released at shutdown), so that
    /// the next start can ask the platform instead of sending it again.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    /// How many platform sessions the frame went into. A frame that goes into another one
    /// is sent again, counted by cause.
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    pub sends: u32,
    /// The frame was found in flight after a crash (or its session could not be confirmed
    /// after a stop): its next send is counted as `resent_after_crash`.
    #[serde(rename = "c", default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entry {
    /// A new entry for a frame just committed (or re-indexed from its file).
    pub fn new(bytes: u64, filename: String, groups: Vec<String>) -> Self {
        Self {
            bytes,
            filename,
            groups,
            attempts: 0,
            last_error: None,
            image_delivered: false,
            session: None,
            sends: 0,
            interrupted: false,
        }
    }
}

/// A platform session (Nexus: an upload session and its operation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session id.
    #[serde(rename = "i")]
    pub id: String,
    /// The operation that processes it.
    #[serde(rename = "o")]
    pub operation: String,
}

/// The index's trees.
pub(super) struct Trees {
    pub(super) pending: sled::Tree,
    pub(super) inflight: sled::Tree,
    pub(super) dead: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) gone: sled::Tree,
}

impl Trees {
    /// Opens (creating) every tree of `db`.
    pub(super) fn open(db: &sled::Db, path: &Path) -> Result<Self, QueueError> {
        let ie = index_err(path);
        let open = |s: FrameState| db.open_tree(s.tree_name()).map_err(&ie);
        Ok(Trees {
            pending: open(FrameState::Pending)?,
            inflight: open(FrameState::InFlight)?,
            dead: open(FrameState::Dead)?,
            meta: db.open_tree("meta").map_err(&ie)?,
            gone: db.open_tree("gone").map_err(&ie)?,
        })
    }

    /// The tree of frames in `state`.
    pub(super) fn of(&self, state: FrameState) -> &sled::Tree {
        match state {
            FrameState::Pending => &self.pending,
            FrameState::InFlight => &self.inflight,
            FrameState::Dead => &self.dead,
        }
    }
}

/// The index key of `seq`.
pub(super) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The `seq` of an index key (None for a key of another shape).
pub(super) fn seq_of(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Every entry of `tree` in key order, read with one `get_gt` per entry. Each read goes
/// through sled's page cache, which then pages out what exceeds its capacity; sled's
/// `Iter` would keep every node it passed (see the module doc). About twice the CPU of
/// `Iter` (1.2 µs an entry here), for memory that follows the cache, not the tree.
pub(super) fn walk(tree: &sled::Tree) -> Walk {
    Walk {
        tree: tree.clone(),
        after: None,
        done: false,
    }
}

/// The iterator of [`walk`].
pub(super) struct Walk {
    /// A handle on the tree (sled's trees are shared handles).
    tree: sled::Tree,
    /// The last key returned (None before the first).
    after: Option<sled::IVec>,
    done: bool,
}

impl Iterator for Walk {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match &self.after {
            None => self.tree.first(),
            Some(k) => self.tree.get_gt(k),
        };
        match next {
            Ok(Some((k, v))) => {
                self.after = Some(k.clone());
                Some(Ok((k, v)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Turns sled's errors into [`QueueError::Index`] naming the index directory.
pub(super) fn index_err(path: &Path) -> impl Fn(sled::Error) -> QueueError + '_ {
    move |e| QueueError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Decodes an index value (None for a damaged one).
pub(super) fn decode_entry(v: &[u8]) -> Option<Entry> {
    serde_json::from_slice(v).ok()
}

/// Encodes an index value.
pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    serde_json::to_vec(e).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (sled::Db, sled::Tree) {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary db");
        let t = db.open_tree("pending").expect("tree");
        (db, t)
    }

    #[test]
    fn walk_reads_every_entry_in_key_order_and_nothing_of_an_empty_tree() {
        let (_db, t) = tree();
        assert_eq!(walk(&t).count(), 0);
        // Inserted out of order, across several of sled's nodes.
        for seq in (1..=3000u64).rev() {
            t.insert(key(seq), format!("v{seq}").as_bytes())
                .expect("insert");
        }
        let got: Vec<(u64, Vec<u8>)> = walk(&t)
            .map(|kv| {
                let (k, v) = kv.expect("read");
                (seq_of(&k).expect("a seq key"), v.to_vec())
            })
            .collect();
        assert_eq!(got.len(), 3000);
        for (i, (seq, v)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(v, format!("v{seq}").as_bytes());
        }
    }

    #[test]
    fn walk_goes_on_past_entries_removed_or_added_behind_and_ahead_of_it() {
        let (_db, t) = tree();
        for seq in 1..=10u64 {
            t.insert(key(seq * 10), &[1u8][..]).expect("insert");
        }
        let mut seen = Vec::new();
        for kv in walk(&t) {
            let (k, _) = kv.expect("read");
            let seq = seq_of(&k).expect("a seq key");
            seen.push(seq);
            if seq == 30 {
                // The reconcile removes what it has read, and may meet new keys.
                t.remove(key(30)).expect("remove");
                t.remove(key(50)).expect("remove");
                t.insert(key(35), &[1u8][..]).expect("insert");
                t.insert(key(5), &[1u8][..]).expect("insert");
            }
        }
        assert_eq!(seen, vec![10, 20, 30, 35, 40, 60, 70, 80, 90, 100]);
    }
}
