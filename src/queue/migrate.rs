//! Moving an index an older edgecap made (sled's default log segments of 512 KiB) to the
//! segments a new index gets ([`SEGMENT_BYTES`], `store.rs`): sled keeps up to three
//! segment buffers alive while it writes, 1–2 MiB of a 100k drain's peak. sled opens a
//! database only with the segment size it was made with, so the move is a copy, made at
//! open, once:
//!
//! ```text
//! <dir>/index-migrating   the generation being written (a decimal number); there from
//!                         before the new index directory is made until that index is
//!                         complete and flushed
//! ```
//!
//! 1. the marker is written and the queue's directory synced;
//! 2. every tree of the old index is copied into `index.<n+1>` entry by entry in key
//!    order ([`walk`]: memory follows sled's page cache, not the index), in batches of
//!    [`BATCH`] entries;
//! 3. the new index is flushed, the marker removed and the directory synced. The new
//!    index is the queue's from then on; the old directory is removed at the next open,
//!    as after a repair (sled finishes work for a dropped database in background threads).
//!
//! A crash or an error before 3 leaves the marker, and the next open removes the
//! unfinished copy ([`clean_unfinished`]) and goes on from the old index (copying it
//! again). An error during the copy costs only the memory it would have saved: the
//! queue goes on with the old index. Should a half-written copy ever be taken for the
//! index (the marker lost), it is older than the floor of counters kept beside it, and
//! the open rebuilds it from the spool files like any index that lost state.
//!
//! The copy is made only with room for it: twice the old index's size on top of the
//! reserve and the index margin (both indexes stay until the next open; 24 MB each at
//! 100k frames), else it waits for a later start.
//!
//! Not sled's own `export`/`import`: `import` panics on an error instead of returning it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{info, warn};

use super::files::{INDEX_MARGIN_BYTES, RESERVE_BYTES, dir_size, free_bytes};
use super::index::walk;
use super::spool::sync_dir;
use super::store::{SEGMENT_BYTES, SledOpen, index_path, open_sled, segment_bytes_of};

/// The marker file of a copy under way (module doc).
pub(super) const MARKER: &str = "index-migrating";

/// Entries written to the new index in one batch.
const BATCH: usize = 1000;

/// Whether the index at `path` was made with other log segments than a new one gets.
pub(super) fn needs_copy(path: &Path) -> bool {
    segment_bytes_of(path) != SEGMENT_BYTES
}

/// Removes what a copy that did not finish left in `dir` (its marker and the index
/// directory it names), so that the old index is the newest again. Call before the
/// index directories are listed.
pub(super) fn clean_unfinished(dir: &Path) {
    let marker = dir.join(MARKER);
    let Ok(text) = std::fs::read_to_string(&marker) else {
        return;
    };
    if let Some(partial) = text
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|g| *g > 0)
        .map(|g| index_path(dir, g))
        .filter(|p| p.exists())
    {
        if let Err(e) = std::fs::remove_dir_all(&partial) {
            // Left in place, it is the newest index: an open that finds it behind the
            // floor of counters rebuilds it from the spool files (module doc).
            warn!(index = %partial.display(), error = %e,
                "cannot remove an unfinished copy of the queue index");
            return;
        }
        warn!(index = %partial.display(),
            "removed an unfinished copy of the queue index (into smaller log segments); going on from the index it copied");
    }
    let _ = std::fs::remove_file(&marker);
    if let Err(e) = sync_dir(dir) {
        warn!(dir = %dir.display(), error = %e, "cannot sync the queue directory");
    }
}

/// Copies `old` (the index of generation `generation` in `dir`) into a new index with
/// [`SEGMENT_BYTES`] segments, the next generation. Returns the new index open, with its
/// path and generation; `None` when the copy failed (logged; the queue goes on with
/// `old`, and the next open tries again).
pub(super) fn copy_to_small_segments(
    dir: &Path,
    old: &sled::Db,
    generation: u64,
    cache: u64,
) -> Option<(sled::Db, PathBuf, u64)> {
    let started = Instant::now();
    let next = generation + 1;
    let path = index_path(dir, next);
    if path.exists() {
        warn!(index = %path.display(),
            "cannot copy the queue index into smaller log segments: its directory is there already; going on with the old one");
        return None;
    }
    // The copy is about as large as the old index, and both stay until the next open:
    // made only with room for it on top of what the queue keeps free.
    let old_bytes = dir_size(&index_path(dir, generation));
    let need = old_bytes
        .saturating_mul(2)
        .saturating_add(RESERVE_BYTES + INDEX_MARGIN_BYTES);
    if free_bytes(dir).is_none_or(|free| free < need) {
        info!(index = %path.display(), index_bytes = old_bytes, needed_bytes = need,
            "not copying the queue index into smaller log segments now: not enough free space (tried again at the next start)");
        return None;
    }
    match copy(dir, old, next, &path, cache) {
        Ok((db, entries)) => {
            info!(index = %path.display(), entries, segment_bytes = SEGMENT_BYTES,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "copied the queue index into smaller log segments (less memory while it is written)");
            Some((db, path, next))
        }
        Err(why) => {
            warn!(index = %path.display(), error = %why,
                "cannot copy the queue index into smaller log segments; going on with the old one");
            // The unfinished copy goes now, so that nothing (a repair) takes its
            // generation for an index; if it cannot, the marker has the next open do it.
            if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                let _ = std::fs::remove_file(dir.join(MARKER));
            }
            None
        }
    }
}

/// [`copy_to_small_segments`]'s work: the new index and how many entries it got.
fn copy(
    dir: &Path,
    old: &sled::Db,
    next: u64,
    path: &Path,
    cache: u64,
) -> Result<(sled::Db, u64), String> {
    let marker = dir.join(MARKER);
    std::fs::write(&marker, next.to_string())
        .and_then(|()| sync_dir(dir))
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    let db = open_sled(path, cache).map_err(|e| match e {
        SledOpen::Full(m) | SledOpen::Broken(m) => m,
    })?;
    let mut entries = 0u64;
    for name in old.tree_names() {
        let from = old.open_tree(&name).map_err(|e| e.to_string())?;
        let to = db.open_tree(&name).map_err(|e| e.to_string())?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for kv in walk(&from) {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            batch.insert(k, v);
            in_batch += 1;
            entries += 1;
            if in_batch == BATCH {
                to.apply_batch(std::mem::take(&mut batch))
                    .map_err(|e| e.to_string())?;
                in_batch = 0;
            }
        }
        to.apply_batch(batch).map_err(|e| e.to_string())?;
    }
    db.flush().map_err(|e| e.to_string())?;
    std::fs::remove_file(&marker)
        .and_then(|()| sync_dir(dir))
        .map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
    Ok((db, entries))
}
