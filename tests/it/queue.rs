//! The durable queue with real files: recovery rules and a property test against a model.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::BTreeMap;
use std::path::Path;

use edgecap::config::{FsyncMode, MetaValue, OnFull, QueueConfig};
use edgecap::frame::FrameMeta;
use edgecap::queue::{Queue, QueueError, ReadError};
use proptest::prelude::*;

use crate::support::sled_segment_size;

fn qcfg(dir: &Path, max_frames: u64, max_bytes: u64, on_full: OnFull) -> QueueConfig {
    QueueConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        max_frames,
        on_full,
        fsync: FsyncMode::Grouped,
        commit_window: std::time::Duration::from_millis(0),
        buffer_frames: 4,
        index_cache_bytes: 1024 * 1024,
        receipts_max_bytes: 1024 * 1024,
        keep_delivered_bytes: 0,
    }
}

fn meta(n: u64, groups: &[&str]) -> FrameMeta {
    let mut custom = BTreeMap::new();
    custom.insert("sequence".to_string(), MetaValue::Int(n as i64));
    FrameMeta {
        filename: format!("dev_cam_{n:06}.jpg"),
        mime: "image/jpeg".into(),
        camera: "cam".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        custom: custom.into(),
        ..FrameMeta::default()
    }
}

fn image(n: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF];
    v.extend((0..len).map(|i| (i as u64 * 31 + n) as u8));
    v
}

/// A restart, as a new process sees it: the directory as the closed queue left it.
/// (Reopening the same directory in-process races sled's background truncation of its log;
/// see the queue's module docs.)
fn restart(dir: &Path) -> std::path::PathBuf {
    let n = std::fs::read_dir(dir.parent().unwrap()).unwrap().count();
    let to = dir.parent().unwrap().join(format!("restart{n}"));
    copy_dir(dir, &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn commit_n(q: &Queue, n: u64) {
    let mut g = q.group();
    for i in 0..n {
        g.add(&meta(i, &["main"]), &image(i, 1000)).unwrap();
    }
    assert_eq!(g.commit().frames.len() as u64, n);
}

/// The seqs of up to `max` frames leased from `q`.
fn leased_seqs(q: &Queue, max: usize) -> Vec<u64> {
    q.lease(max, u64::MAX)
        .unwrap()
        .iter()
        .map(|l| l.seq)
        .collect()
}

fn spool_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_lost_index_is_rebuilt_from_the_spool_files() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 5);
    }
    let dir = restart(&first);
    let cfg = qcfg(&dir, 100, 1 << 30, OnFull::DropOldest);
    std::fs::remove_dir_all(dir.as_path().join("index")).unwrap();
    let (q, report) = Queue::open(&cfg).unwrap();
    assert_eq!(report.reindexed, 5);
    assert!(report.index_rebuilt, "{report:?}");
    assert_eq!(q.stats().pending.frames, 5);
    // Counted once: the counters' floor outside the index knew these five.
    assert_eq!(q.stats().counters.committed, 5);
    let leased = q.lease(10, u64::MAX).unwrap();
    let names: Vec<_> = leased.iter().map(|l| l.meta.filename.clone()).collect();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("dev_cam_{i:06}.jpg"))
            .collect::<Vec<_>>()
    );
    assert_eq!(q.read_image(leased[2].seq).unwrap(), image(2, 1000));
}

#[test]
fn a_valid_spool_file_copied_over_another_is_told_apart_and_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 5);
    }
    let dir = restart(&first);
    let files = spool_files(&dir);
    // A valid file of frame 1 under the name of frame 4 (a restore gone wrong).
    std::fs::copy(&files[0], &files[3]).unwrap();
    let (q, report) = Queue::open(&qcfg(&dir, 100, 1 << 30, OnFull::DropOldest)).unwrap();
    assert_eq!(report.quarantined, 1, "{report:?}");
    assert_eq!(q.stats().pending.frames, 4);
    let quarantined: Vec<String> = std::fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        quarantined,
        vec![files[3].file_name().unwrap().to_string_lossy().into_owned()]
    );
    let names: Vec<String> = q
        .lease(10, u64::MAX)
        .unwrap()
        .iter()
        .map(|l| l.meta.filename.clone())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(!names.contains(&"dev_cam_000003.jpg".to_string()));
    assert_eq!(
        names.iter().filter(|n| *n == "dev_cam_000000.jpg").count(),
        1,
        "{names:?}"
    );
}

#[test]
fn damaged_files_go_to_quarantine_and_the_rest_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 6);
    }
    let dir = restart(&first);
    let cfg = qcfg(&dir, 100, 1 << 30, OnFull::DropOldest);
    let files = spool_files(dir.as_path());
    // Truncated, a flipped header byte, zero length, a missing file.
    let f0 = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &f0[..f0.len() - 10]).unwrap();
    let mut f1 = std::fs::read(&files[1]).unwrap();
    f1[40] ^= 0x55;
    std::fs::write(&files[1], &f1).unwrap();
    std::fs::write(&files[2], b"").unwrap();
    std::fs::remove_file(&files[3]).unwrap();
    // An unfinished write and a stray file.
    std::fs::write(
        dir.as_path().join("spool/00000000000000000099.frame.tmp"),
        b"x",
    )
    .unwrap();
    std::fs::write(dir.as_path().join("spool/notes.txt"), b"x").unwrap();
    // A flipped image byte is found when the image is read.
    let mut f4 = std::fs::read(&files[4]).unwrap();
    let last = f4.len() - 1;
    f4[last] ^= 0x01;
    std::fs::write(&files[4], &f4).unwrap();

    let (q, r) = Queue::open(&cfg).unwrap();
    assert_eq!(r.quarantined, 4, "{r:?}");
    assert_eq!(
        r.index_dropped, 1,
        "one missing file (the quarantined ones are counted as such): {r:?}"
    );
    assert_eq!(r.tmp_removed, 1);
    assert_eq!(q.stats().pending.frames, 2);
    let quarantine: Vec<_> = std::fs::read_dir(dir.as_path().join("quarantine"))
        .unwrap()
        .collect();
    assert_eq!(quarantine.len(), 4, "moved aside, not deleted");
    let leased = q.lease(10, u64::MAX).unwrap();
    assert_eq!(leased.len(), 2);
    match q.read_image(leased[0].seq) {
        Err(ReadError::Quarantined { .. }) => {}
        other => panic!("flipped image byte must be caught: {other:?}"),
    }
    assert_eq!(q.read_image(leased[1].seq).unwrap(), image(5, 1000));
    assert_eq!(q.stats().counters.quarantined, 5);
    assert_eq!(q.stats().inflight.frames, 1);
}

#[test]
fn a_garbage_index_is_moved_aside_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 3);
    }
    let dir = restart(&first);
    let cfg = qcfg(&dir, 100, 1 << 30, OnFull::DropOldest);
    let index = dir.as_path().join("index");
    for e in std::fs::read_dir(&index).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0xA5u8; 4096]).unwrap();
        }
    }
    let (q, r) = Queue::open(&cfg).unwrap();
    assert_eq!(q.stats().pending.frames, 3, "{r:?}");
}

#[test]
fn frames_in_flight_at_a_crash_are_pending_again_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 4);
        assert_eq!(q.lease(3, u64::MAX).unwrap().len(), 3);
        q.flush();
    }
    let dir = restart(&first);
    let cfg = qcfg(&dir, 100, 1 << 30, OnFull::DropOldest);
    let (q, r) = Queue::open(&cfg).unwrap();
    assert_eq!(r.interrupted, 3);
    assert_eq!(q.stats().pending.frames, 4);
    assert_eq!(q.stats().inflight.frames, 0);
}

#[test]
fn a_recorded_session_survives_a_crash_and_only_its_frames_are_handed_to_recovery() {
    use edgecap::queue::SessionRef;
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    let s1 = SessionRef {
        id: "up_1".into(),
        operation: "op_1".into(),
    };
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 5);
        let leased = leased_seqs(&q, 4);
        q.record_session(&leased[..3], &s1);
        // A transient failure forgets the session: that frame is simply sent again.
        q.release(&leased[2..3], Some("network"));
        q.flush();
    }
    let dir = restart(&first);
    let (q, r) = Queue::open(&qcfg(&dir, 100, 1 << 30, OnFull::DropOldest)).unwrap();
    assert_eq!(r.interrupted, 3);
    let sessions = q.lease_sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].0, s1);
    let seqs: Vec<u64> = sessions[0].1.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(q.stats().inflight.frames, 2);
    // A stop while the platform decides keeps the session for the next start; an ack
    // ends it.
    q.release_for_recovery(&[1], "stopped");
    q.ack(&[2]);
    let again = q.lease_sessions().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].1.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![1]
    );
    q.release(&[1], None);
    assert!(q.lease_sessions().unwrap().is_empty());
    assert_eq!(q.stats().pending.frames, 4);
}

#[test]
fn a_second_process_cannot_open_a_queue_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = qcfg(tmp.path(), 100, 1 << 30, OnFull::DropOldest);
    let (_q, _) = Queue::open(&cfg).unwrap();
    match Queue::open(&cfg) {
        Err(QueueError::Locked { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn sequence_numbers_are_never_reused_after_frames_were_acked() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("q");
    let cfg = qcfg(&first, 100, 1 << 30, OnFull::DropOldest);
    let last_acked = {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 3);
        let l = q.lease(10, u64::MAX).unwrap();
        q.ack(&l.iter().map(|l| l.seq).collect::<Vec<_>>());
        q.flush();
        l.last().unwrap().seq
    };
    let dir = restart(&first);
    let (q, _) = Queue::open(&qcfg(&dir, 100, 1 << 30, OnFull::DropOldest)).unwrap();
    commit_n(&q, 1);
    assert!(q.lease(1, u64::MAX).unwrap()[0].seq > last_acked);
}

// ---- Property test against a model ----------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Add { len: usize, group: bool },
    Lease { max: usize },
    Ack { k: usize },
    Release { k: usize },
    Fail { k: usize },
    Kill { k: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..3000, any::<bool>()).prop_map(|(len, group)| Op::Add { len, group }),
        2 => (1usize..6).prop_map(|max| Op::Lease { max }),
        2 => (0usize..4).prop_map(|k| Op::Ack { k }),
        1 => (0usize..4).prop_map(|k| Op::Release { k }),
        1 => (0usize..4).prop_map(|k| Op::Fail { k }),
        1 => (0usize..4).prop_map(|k| Op::Kill { k }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Pending,
    Inflight,
    Dead,
}

#[derive(Debug, Clone)]
struct MFrame {
    st: St,
    bytes: u64,
    group: bool,
    attempts: u32,
}

fn groups_of(g: bool) -> Vec<&'static str> {
    if g { vec!["a"] } else { vec!["b", "c"] }
}

fn run_model(ops: Vec<Op>, policy: OnFull) -> Result<(), TestCaseError> {
    const MAX_FRAMES: u64 = 8;
    const MAX_BYTES: u64 = 14_000;
    const MAX_ATTEMPTS: u32 = 2;
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().join("q");
    let mut cfg = qcfg(&dir, MAX_FRAMES, MAX_BYTES, policy);
    let mut q = Some(Queue::open(&cfg).unwrap().0);
    let mut model: BTreeMap<u64, MFrame> = BTreeMap::new();
    let mut dropped = 0u64;
    let mut n = 0u64;
    for op in ops {
        let queue = q.as_ref().unwrap();
        match op {
            Op::Add { len, group } => {
                n += 1;
                let m = meta(n, &groups_of(group));
                let img = image(n, len);
                let bytes = (edgecap::queue::spool::HEADER_LEN
                    + serde_json::to_vec(&m).unwrap().len()
                    + img.len()) as u64;
                // Model the budget: dead first, then the policy.
                let accepted = loop {
                    let frames = model.len() as u64;
                    let used: u64 = model.values().map(|f| f.bytes).sum();
                    if frames < MAX_FRAMES && used + bytes <= MAX_BYTES {
                        break true;
                    }
                    let victim = model
                        .iter()
                        .find(|(_, f)| f.st == St::Dead)
                        .or_else(|| match policy {
                            OnFull::DropOldest => model.iter().find(|(_, f)| f.st == St::Pending),
                            OnFull::DropNewest => None,
                            // Not run with this model; queue/thin.rs has its own.
                            OnFull::Thin => None,
                        })
                        .map(|(s, _)| *s);
                    match victim {
                        Some(s) if bytes <= MAX_BYTES => {
                            model.remove(&s);
                            dropped += 1;
                        }
                        _ => break false,
                    }
                };
                let mut g = queue.group();
                let res = g.add(&m, &img);
                prop_assert_eq!(res.is_ok(), accepted, "add of {} bytes", bytes);
                if let Ok(seq) = res {
                    model.insert(
                        seq,
                        MFrame {
                            st: St::Pending,
                            bytes,
                            group,
                            attempts: 0,
                        },
                    );
                } else {
                    dropped += 1;
                }
                g.commit();
            }
            Op::Lease { max } => {
                let leased = queue.lease(max, u64::MAX).unwrap();
                let first = model
                    .values()
                    .find(|f| f.st == St::Pending)
                    .map(|f| f.group);
                let expect: Vec<u64> = model
                    .iter()
                    .filter(|(_, f)| f.st == St::Pending && Some(f.group) == first)
                    .map(|(s, _)| *s)
                    .take(max)
                    .collect();
                let got: Vec<u64> = leased.iter().map(|l| l.seq).collect();
                prop_assert_eq!(&got, &expect, "oldest first, one group");
                for s in got {
                    model.get_mut(&s).unwrap().st = St::Inflight;
                }
            }
            Op::Ack { k } | Op::Release { k } | Op::Fail { k } | Op::Kill { k } => {
                let chosen: Vec<u64> = model
                    .iter()
                    .filter(|(_, f)| f.st == St::Inflight)
                    .map(|(s, _)| *s)
                    .take(k)
                    .collect();
                match op {
                    Op::Ack { .. } => {
                        queue.ack(&chosen);
                        for s in &chosen {
                            model.remove(s);
                        }
                    }
                    Op::Release { .. } => {
                        queue.release(&chosen, Some("transient"));
                        for s in &chosen {
                            model.get_mut(s).unwrap().st = St::Pending;
                        }
                    }
                    Op::Fail { .. } => {
                        let dead = queue.fail(&chosen, "failed", MAX_ATTEMPTS);
                        let mut expect_dead = 0;
                        for s in &chosen {
                            let f = model.get_mut(s).unwrap();
                            f.attempts += 1;
                            f.st = if f.attempts >= MAX_ATTEMPTS {
                                expect_dead += 1;
                                St::Dead
                            } else {
                                St::Pending
                            };
                        }
                        prop_assert_eq!(dead, expect_dead);
                    }
                    _ => {
                        queue.kill(&chosen, "refused");
                        for s in &chosen {
                            model.get_mut(s).unwrap().st = St::Dead;
                        }
                    }
                }
            }
            Op::Reopen => {
                drop(q.take());
                dir = restart(&dir);
                cfg = qcfg(&dir, MAX_FRAMES, MAX_BYTES, policy);
                let (nq, report) = Queue::open(&cfg).unwrap();
                let inflight = model.values().filter(|f| f.st == St::Inflight).count() as u64;
                prop_assert_eq!(report.interrupted, inflight);
                for f in model.values_mut() {
                    if f.st == St::Inflight {
                        f.st = St::Pending;
                    }
                }
                q = Some(nq);
            }
        }
        // Counters are shown as durable, and dropped frames' files go, at a flush of the
        // index (each group commit, ack and lease flushes; a refused frame alone waits up
        // to a second).
        q.as_ref().unwrap().flush();
        let s = q.as_ref().unwrap().stats();
        let tally = |st: St| {
            let v: Vec<_> = model.values().filter(|f| f.st == st).collect();
            (v.len() as u64, v.iter().map(|f| f.bytes).sum::<u64>())
        };
        prop_assert_eq!((s.pending.frames, s.pending.bytes), tally(St::Pending));
        prop_assert_eq!((s.inflight.frames, s.inflight.bytes), tally(St::Inflight));
        prop_assert_eq!((s.dead.frames, s.dead.bytes), tally(St::Dead));
        prop_assert_eq!(s.counters.dropped_budget, dropped);
        let files = spool_files(&dir).len() as u64;
        prop_assert_eq!(files, model.len() as u64, "one spool file per queued frame");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_its_model_with_drop_oldest(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(ops, OnFull::DropOldest)?;
    }

    #[test]
    fn queue_matches_its_model_with_drop_newest(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(ops, OnFull::DropNewest)?;
    }
}

#[test]
fn delivered_frames_files_go_and_no_tombstone_outlives_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let cfg = qcfg(&dir, 100, 1 << 30, OnFull::DropOldest);
    {
        let (q, _) = Queue::open(&cfg).unwrap();
        commit_n(&q, 6);
        let seqs = leased_seqs(&q, 10);
        q.ack(&seqs[..4]);
        assert_eq!(q.stats().counters.uploaded, 4);
        // The four files went with the ack's flush; the two in flight stay.
        assert_eq!(spool_files(&dir).len(), 2, "{:?}", spool_files(&dir));
        q.ack(&seqs[4..]);
    }
    assert!(spool_files(&dir).is_empty(), "{:?}", spool_files(&dir));
    {
        // No tombstone outlived its file.
        // With the segment size the queue made it with (sled opens it with no other).
        let db = sled::Config::new()
            .path(dir.join("index"))
            .segment_size(128 * 1024)
            .open()
            .unwrap();
        assert_eq!(db.open_tree("gone").unwrap().len(), 0);
    }
    let (q, report) = Queue::open(&cfg).unwrap();
    assert_eq!(report.finished_removed, 0, "{report:?}");
    assert_eq!(report.reindexed, 0, "{report:?}");
    assert_eq!(q.stats().pending.frames, 0);
    assert_eq!(q.stats().counters.uploaded, 6);
}

/// Rewrites the index of `dir` (a queue directory no process has open) as an earlier
/// version made it: sled's default log segments (512 KiB) instead of the queue's own.
fn with_sleds_default_segments(dir: &Path, scratch: &Path) {
    let index = dir.join("index");
    std::fs::rename(&index, scratch).unwrap();
    let small = sled::Config::new()
        .path(scratch)
        .segment_size(128 * 1024)
        .open()
        .unwrap();
    let big = sled::Config::new().path(&index).open().unwrap();
    big.import(small.export());
    big.flush().unwrap();
    assert_eq!(sled_segment_size(&index), 512 * 1024);
}

/// The names of the index directories in `dir`, sorted.
fn index_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index"))
        .collect();
    v.sort();
    v
}

/// A queue whose index an earlier version made (frames pending, leased, acked, and a
/// recorded session), in a directory of its own: its `cfg` and the session.
fn queue_with_an_older_index(tmp: &Path) -> (QueueConfig, edgecap::queue::SessionRef) {
    let first = tmp.join("q");
    let s1 = edgecap::queue::SessionRef {
        id: "up_1".into(),
        operation: "op_1".into(),
    };
    {
        let (q, _) = Queue::open(&qcfg(&first, 100, 1 << 30, OnFull::DropOldest)).unwrap();
        commit_n(&q, 8);
        let leased = leased_seqs(&q, 5);
        q.ack(&leased[3..5]);
        q.record_session(&leased[..3], &s1);
        q.flush();
    }
    let converted = restart(&first);
    with_sleds_default_segments(&converted, &tmp.join("scratch"));
    let dir = restart(&converted);
    (qcfg(&dir, 100, 1 << 30, OnFull::DropOldest), s1)
}

/// What the queue of `q` holds that a rebuild from the spool files would lose or change.
fn assert_state_kept(q: &Queue, s1: &edgecap::queue::SessionRef) {
    let sessions = q.lease_sessions().unwrap();
    assert_eq!(sessions.len(), 1, "the recorded session is kept");
    assert_eq!(&sessions[0].0, s1);
    let seqs: Vec<u64> = sessions[0].1.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let s = q.stats();
    assert_eq!(s.pending.frames, 3);
    assert_eq!(s.inflight.frames, 3);
    assert_eq!(s.counters.uploaded, 2);
    assert_eq!(s.counters.committed, 8);
}

#[test]
fn an_index_an_earlier_version_made_is_copied_into_small_segments_keeping_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, s1) = queue_with_an_older_index(tmp.path());
    {
        let (q, r) = Queue::open(&cfg).unwrap();
        assert!(r.index_copied, "{r:?}");
        assert!(!r.index_rebuilt, "{r:?}");
        assert_eq!(r.interrupted, 3, "{r:?}");
        assert_eq!(r.reindexed, 0, "{r:?}");
        assert_eq!(sled_segment_size(&cfg.dir.join("index.1")), 128 * 1024);
        assert!(!cfg.dir.join("index-migrating").exists());
        assert_state_kept(&q, &s1);
        q.flush();
    }
    // The next start keeps the copy, removes the old index and copies nothing again.
    let dir = restart(&cfg.dir);
    let (q, r) = Queue::open(&qcfg(&dir, 100, 1 << 30, OnFull::DropOldest)).unwrap();
    assert!(!r.index_copied && !r.index_rebuilt, "{r:?}");
    assert_eq!(index_dirs(&dir), vec!["index.1"]);
    assert_state_kept(&q, &s1);
}

#[test]
fn a_copy_into_small_segments_that_did_not_finish_is_thrown_away_and_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, s1) = queue_with_an_older_index(tmp.path());
    // As a crash in the middle of the copy leaves it: the marker, and a new index
    // directory that is not a whole index.
    let partial = cfg.dir.join("index.1");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("db"), vec![0x5a; 70_000]).unwrap();
    std::fs::write(cfg.dir.join("index-migrating"), "1").unwrap();
    let (q, r) = Queue::open(&cfg).unwrap();
    assert!(r.index_copied && !r.index_rebuilt, "{r:?}");
    assert_eq!(sled_segment_size(&partial), 128 * 1024);
    assert!(!cfg.dir.join("index-migrating").exists());
    assert_state_kept(&q, &s1);
}
