//! `on_full = "thin"`: when the disk budget is full, thin the backlog evenly instead of
//! dropping all of its oldest part, so a long outage leaves an even sample over its
//! whole length rather than a hole at its start.
//!
//! Binary decimation by sequence number: a frame's level is the number of trailing zero
//! bits of its sequence number. At level `L` the frames below `L` are dropped, oldest
//! first; when none is left the level goes up. What stays is every frame whose number is
//! a multiple of `2^L` (plus the newest ones, not yet reached), an evenly spaced sample of
//! the whole backlog whose spacing doubles as the outage lengthens. The walk resumes where
//! the last drop stopped and new frames arrive ahead of it, so a drop reads a couple of
//! index keys on average and a full walk happens only when the level goes up. Only pending
//! frames are candidates (never one in flight); dead frames still go first (the budget's
//! rule).

/// Where thinning stands.
#[derive(Debug, Default, Clone)]
pub(super) struct Thinner {
    /// Frames whose level is below this are dropped.
    level: u32,
    /// Where the walk resumes (None: the oldest pending frame).
    cursor: Option<u64>,
}

/// How many keys are read at a time.
const CHUNK: usize = 64;

impl Thinner {
    /// The frame to drop. `from(c, n)` gives up to `n` pending sequence numbers at or after
    /// `c` (from the oldest for `None`), in order. `None` when nothing is pending.
    pub(super) fn victim(&mut self, from: impl Fn(Option<u64>, usize) -> Vec<u64>) -> Option<u64> {
        // A level per bit of a sequence number at most.
        for _ in 0..=64 {
            let mut at = self.cursor;
            loop {
                let chunk = from(at, CHUNK);
                if let Some(v) = chunk
                    .iter()
                    .copied()
                    .find(|s| s.trailing_zeros() < self.level)
                {
                    self.cursor = Some(v + 1);
                    return Some(v);
                }
                match chunk.last() {
                    Some(last) if chunk.len() == CHUNK => at = Some(last + 1),
                    _ => break,
                }
            }
            if self.cursor.is_none() && from(None, 1).is_empty() {
                return None;
            }
            // Every pending frame is at this level or above: the next level, from the start.
            self.level += 1;
            self.cursor = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn from(set: &BTreeSet<u64>) -> impl Fn(Option<u64>, usize) -> Vec<u64> + '_ {
        move |c, n| set.range(c.unwrap_or(0)..).take(n).copied().collect()
    }

    /// Frames 1..=n arrive; the budget keeps `keep`; each overflow drops one by thinning.
    fn run(n: u64, keep: usize) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        let mut t = Thinner::default();
        for seq in 1..=n {
            set.insert(seq);
            if set.len() > keep {
                let v = t.victim(from(&set)).unwrap();
                assert!(set.remove(&v));
            }
        }
        set
    }

    #[test]
    fn a_long_outage_keeps_its_start_and_an_even_spread() {
        let kept = run(10_000, 100);
        assert_eq!(kept.len(), 100);
        // Drop-oldest would keep 9901..=10000: here the first hour of the outage is
        // still there.
        assert!(*kept.first().unwrap() <= 200, "{kept:?}");
        assert!(
            *kept.last().unwrap() >= 9_900,
            "the newest part is there: {kept:?}"
        );
    }

    #[test]
    fn a_real_queue_thins_its_backlog_and_counts_every_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = crate::queue::Queue::open(&crate::config::QueueConfig {
            dir: dir.path().join("q"),
            max_bytes: 1 << 30,
            max_frames: 50,
            on_full: crate::config::OnFull::Thin,
            fsync: crate::config::FsyncMode::Grouped,
            commit_window: std::time::Duration::ZERO,
            buffer_frames: 8,
            index_cache_bytes: 1 << 20,
            receipts_max_bytes: 1 << 20,
            keep_delivered_bytes: 0,
        })
        .unwrap();
        for i in 0..1000 {
            let mut g = q.group();
            let meta = crate::frame::FrameMeta {
                filename: format!("f{i}.jpg"),
                ..Default::default()
            };
            g.add(&meta, &[1, 2, 3]).unwrap();
            assert_eq!(g.commit().frames.len(), 1);
        }
        let seqs: Vec<u64> = q.list().iter().map(|l| l.seq).collect();
        assert_eq!(seqs.len(), 50);
        assert!(seqs[0] <= 64, "the start of the backlog is kept: {seqs:?}");
        assert!(*seqs.last().unwrap() >= 990, "{seqs:?}");
        let c = q.stats().counters;
        assert_eq!(c.committed, 1000);
        assert_eq!(c.evicted, 950);
        assert_eq!(c.dropped_budget, 950);
        // The files of the dropped frames are gone (after the flush).
        q.flush();
        let files = std::fs::read_dir(dir.path().join("q/spool"))
            .unwrap()
            .count();
        assert_eq!(files, 50);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn thinning_keeps_an_even_spread(n in 50u64..20_000, keep in 10usize..400) {
            prop_assume!(n as usize > keep * 2);
            let kept = run(n, keep);
            prop_assert_eq!(kept.len(), keep);
            // The ideal sample has a gap of n / keep between frames; no gap (the oldest
            // frame's distance from the start included) is more than four of those.
            let ideal = n as f64 / keep as f64;
            let mut prev = 0u64;
            for &s in &kept {
                prop_assert!(
                    ((s - prev) as f64) <= 4.0 * ideal + 1.0,
                    "gap {} before frame {} (ideal {:.1}) in {:?}", s - prev, s, ideal, kept
                );
                prev = s;
            }
            prop_assert!(((n - prev) as f64) <= 4.0 * ideal + 1.0, "the end is sampled too");
        }
    }
}
