//! Corrupt state on disk, through the real daemon: damaged spool files and a lost or
//! garbage index. The daemon must start, set the damage aside (never delete it), say what
//! it did, and deliver everything else.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Figures, TestConfig, committed_filenames, queue_stats};
use fake_platform::nexus::FakeNexus;

/// Runs a daemon with the platform unreachable until `n` frames wait in the queue.
/// Returns the committed filenames and the spool files, oldest first.
async fn queue_up(dir: &Path, n: u64) -> (Vec<String>, Vec<PathBuf>) {
    let mut cfg = TestConfig::nexus(dir, "http://127.0.0.1:1");
    cfg.stop_after_frames = n;
    cfg.drain_on_stop_secs = 0;
    let (config, d) = crate::support::run_to_end(&cfg, dir).await;
    let committed = committed_filenames(&d.log_text());
    assert_eq!(committed.len() as u64, n);
    assert_eq!(queue_stats(&config)["pending"]["frames"], n);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("queue/spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Names carry the zero-padded seq: sorting by name is by age.
    files.sort();
    assert_eq!(files.len() as u64, n);
    (committed, files)
}

/// Starts the daemon against a working platform; it captures `more` frames, drains and
/// exits. Returns its log and the time from start to the last frame delivered.
async fn deliver(dir: &Path, server: &FakeNexus, more: u64) -> (String, serde_json::Value, f64) {
    let mut cfg = TestConfig::nexus(dir, &server.endpoint());
    cfg.stop_after_frames = more;
    let t = Instant::now();
    let config = cfg.write(&dir.join("second.toml"));
    let mut d = crate::support::Daemon::start(&config, &dir.join("log.second"));
    let st = d.wait(Duration::from_secs(60)).await;
    let secs = t.elapsed().as_secs_f64();
    let log = d.log_text();
    assert!(st.success(), "exit {st:?}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    (log, queue_stats(&config), secs)
}

fn quarantined(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("queue/quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_spool_files_are_quarantined_and_logged_and_the_rest_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let (committed, files) = queue_up(tmp.path(), 30).await;
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    // Truncated mid-image (a write cut by power loss on a filesystem without ordering).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[2])
        .unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    // A flipped byte in the header, and one in the image (found only when it is read).
    flip(&files[5], 10);
    let len = std::fs::metadata(&files[8]).unwrap().len() as usize;
    flip(&files[8], len - 40);
    // Zero length (an allocation with no data after a crash).
    std::fs::write(&files[11], b"").unwrap();
    // Gone: the index points at a missing file.
    std::fs::remove_file(&files[14]).unwrap();
    // Not ours at all.
    std::fs::write(tmp.path().join("queue/spool/notes.txt"), b"hello").unwrap();
    let damaged: Vec<String> = [2, 5, 8, 11].iter().map(|&i| name(&files[i])).collect();

    let server = FakeNexus::start().await;
    let (log, stats, secs) = deliver(tmp.path(), &server, 10).await;

    // Set aside, never deleted: the four damaged files and the stranger.
    let q = quarantined(tmp.path());
    for d in &damaged {
        assert!(q.contains(d), "{d} quarantined: {q:?}");
    }
    assert!(q.contains(&"notes.txt".to_string()), "{q:?}");
    assert_eq!(q.len(), 5, "{q:?}");
    // Logged, each naming its file.
    for d in &damaged {
        assert!(
            log.lines()
                .any(|l| l.contains("quarantined a spool file") && l.contains(d.as_str())),
            "{d} logged:\n{log}"
        );
    }
    // The flipped image byte is found as the image is streamed (it is read once): the
    // file is quarantined once, for that reason, and the frame is not tried again.
    let image_damage: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("quarantined a spool file") && l.contains(damaged[2].as_str()))
        .collect();
    assert_eq!(image_damage.len(), 1, "{image_damage:?}");
    assert!(
        image_damage[0].contains("image checksum mismatch"),
        "{image_damage:?}"
    );
    assert!(log.contains("index_dropped=1"), "{log}");
    assert_eq!(stats["counters"]["quarantined"], 5, "{stats}");
    assert_eq!(stats["counters"]["index_dropped"], 1, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
    let mut expected: Vec<String> = committed.clone();
    let skip: Vec<String> = [2, 5, 8, 11, 14]
        .iter()
        .map(|&i| committed[i].clone())
        .collect();
    expected.retain(|f| !skip.contains(f));
    let new = committed_filenames(&log);
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        for f in expected.iter().chain(&new) {
            assert!(s.assets.contains_key(f), "{f} delivered");
        }
        for f in &skip {
            assert!(!s.assets.contains_key(f), "{f}: damaged, not sent");
            assert!(
                !s.record.puts.iter().any(|(n, st)| n == f && *st < 400),
                "{f}: damaged, no PUT of it accepted: {:?}",
                s.record.puts
            );
        }
        assert_eq!(s.assets.len(), 25 + 10);
        Figures {
            case: "corrupt spool files (5 of 30 damaged)",
            runs: 1,
            committed: 30 + new.len() as u64,
            delivered: s.assets.len() as u64,
            lost: 0,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: Some(secs),
            notes: "4 damaged files + 1 stranger quarantined, 1 missing file dropped from the index; all logged".into(),
        }
        .report();
    });
}

/// The index is lost (`deleted`) or overwritten with garbage: rebuilt from the spool files.
async fn index_case(garbage: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (committed, _) = queue_up(tmp.path(), 30).await;
    let index = tmp.path().join("queue/index");
    if garbage {
        for e in walk(&index) {
            let len = std::fs::metadata(&e).unwrap().len().max(64) as usize;
            let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            std::fs::write(&e, junk).unwrap();
        }
    } else {
        std::fs::remove_dir_all(&index).unwrap();
    }
    let server = FakeNexus::start().await;
    let (log, stats, secs) = deliver(tmp.path(), &server, 10).await;
    if garbage {
        assert!(
            log.contains("queue index cannot be opened; moving it aside"),
            "{log}"
        );
        let q = quarantined(tmp.path());
        assert!(q.iter().any(|n| n.starts_with("index-")), "{q:?}");
    }
    assert!(log.contains("reindexed=30"), "{log}");
    assert!(log.contains("index_rebuilt=true"), "{log}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    let new = committed_filenames(&log);
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        for f in committed.iter().chain(&new) {
            assert!(s.assets.contains_key(f), "{f} delivered");
        }
        assert_eq!(s.assets.len(), 40);
        Figures {
            case: if garbage {
                "garbage index"
            } else {
                "deleted index"
            },
            runs: 1,
            committed: 40,
            delivered: s.assets.len() as u64,
            lost: 0,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: Some(secs),
            notes: "index rebuilt from the 30 spool files".into(),
        }
        .report();
    });
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_rebuilt_from_the_spool_files_and_everything_is_delivered() {
    index_case(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_index_is_set_aside_and_rebuilt_and_everything_is_delivered() {
    index_case(true).await;
}
