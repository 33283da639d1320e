//! A damaged or failed queue index, through the real binary: garbage written over the
//! newest segment of the index's log is found at start and the index rebuilt from the
//! spool files; an index that fails at run time is repaired in-process, and one that
//! cannot be ends in a counted restart. No committed frame is lost and no counter goes
//! back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

use std::time::{Duration, Instant};

use crate::support::counters::{assert_adds_up, assert_not_behind, counters};
use crate::support::{
    Daemon, Figures, TestConfig, committed_filenames, queue_stats, sled_segment_size,
};
use fake_platform::nexus::FakeNexus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_index_files_newest_segment_is_found_and_the_index_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 10;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    // Several runs, each delivering and each leaving a backlog: the index's log holds many
    // states, and the later ones are the ones garbage in its middle takes away.
    let mut committed = Vec::new();
    for run in 0..4 {
        let mut d = Daemon::start(&config, &tmp.path().join(format!("log.{run}")));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        d.signal("TERM");
        assert!(d.wait(Duration::from_secs(30)).await.success());
        committed.extend(committed_filenames(&d.log_text()));
    }
    let before = queue_stats(&config);
    let index = tmp.path().join("queue/index");
    let db = index.join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let mut bytes = std::fs::read(&db).unwrap();
    // sled reuses freed log segments, so a given offset of the file may hold nothing
    // live; the newest segment holds the last states written (the counters among them).
    let segment = sled_segment_size(&index);
    let newest = newest_segment(&bytes, segment).expect("a log segment with a valid header");
    let (from, to) = (newest + SEGMENT_HEADER_BYTES, (newest + segment).min(len));
    for b in &mut bytes[from..to] {
        *b = rand::random();
    }
    std::fs::write(&db, bytes).unwrap();

    let mut last = cfg.clone();
    last.stop_after_frames = 10;
    let last_config = last.write(&tmp.path().join("last.toml"));
    let mut d = Daemon::start(&last_config, &tmp.path().join("log.last"));
    assert!(
        d.wait(Duration::from_secs(90)).await.success(),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(log.contains("index_rebuilt=true"), "{log}");
    assert!(
        log.contains("recovered an older state") || log.contains("cannot be opened"),
        "{log}"
    );
    committed.extend(committed_filenames(&log));
    let after = queue_stats(&last_config);
    assert_not_behind(&counters(&before), &counters(&after), "after the garbage");
    assert_eq!(after["pending"]["frames"], 0, "{after}");
    server.with(|s| {
        let missing: Vec<_> = committed
            .iter()
            .filter(|f| !s.assets.contains_key(*f))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        Figures {
            case: "garbage in the index file's newest segment",
            runs: 5,
            committed: committed.len() as u64,
            delivered: s.assets.len() as u64,
            lost: 0,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: None,
            notes: format!(
                "garbage over the newest log segment of index/db (at {newest} of {len} bytes, {segment}-byte segments): found and rebuilt at start; committed {} before, {} after (no counter went back)",
                before["counters"]["committed"], after["counters"]["committed"]
            ),
        }
        .report();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_index_is_repaired_in_process_and_one_that_cannot_be_ends_in_a_counted_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 20.0;
    cfg.batch_max_frames = 20;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let wait_for = |d: &Daemon, text: &str, secs: u64| {
        let t = Instant::now();
        loop {
            if d.log_text().contains(text) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "no {text:?} within {secs} s:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut committed = Vec::new();

    // 1. The index fails at run time (an injected failure stands for a sled I/O error):
    // repaired in-process, uploads go on.
    let mut d = Daemon::start_env(
        &config,
        &tmp.path().join("log.1"),
        &[("EDGECAP_FAULT_INDEX_FAIL_AFTER", "150")],
    );
    wait_for(&d, "the queue index failed", 30);
    wait_for(&d, "rebuilt after its failure", 15);
    let delivered = server.with(|s| s.assets.len());
    let t = Instant::now();
    while server.with(|s| s.assets.len()) < delivered + 20 {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    committed.extend(committed_filenames(&d.log_text()));
    let s = queue_stats(&config);
    assert_eq!(s["counters"]["index_repairs"], 1, "{s}");
    assert_adds_up(&s, "after the repair");
    let before = counters(&s);

    // 2. A repair that keeps failing although there is room: the daemon exits with its
    // restart code (75), and the next start counts the restart.
    let mut d = Daemon::start_env(
        &config,
        &tmp.path().join("log.2"),
        &[
            ("EDGECAP_FAULT_INDEX_FAIL_AFTER", "150"),
            ("EDGECAP_FAULT_REPAIR_FAILS", "1"),
        ],
    );
    let st = d.wait(Duration::from_secs(90)).await;
    assert_eq!(st.code(), Some(75), "{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("cannot be rebuilt in-process"), "{log}");
    committed.extend(committed_filenames(&log));
    let mut last = cfg.clone();
    last.stop_after_frames = 10;
    // The backlog left by the failed run fits a few sessions (no wait for the limiter).
    last.batch_max_frames = 1000;
    let last_config = last.write(&tmp.path().join("last.toml"));
    let mut d = Daemon::start(&last_config, &tmp.path().join("log.3"));
    assert!(
        d.wait(Duration::from_secs(60)).await.success(),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.contains("started again because the last run could not rebuild"),
        "{log}"
    );
    committed.extend(committed_filenames(&log));
    let s = queue_stats(&last_config);
    assert_eq!(s["counters"]["index_restarts"], 1, "{s}");
    assert_eq!(s["pending"]["frames"], 0, "{s}");
    assert_adds_up(&s, "after the restart");
    assert_not_behind(&before, &counters(&s), "after the restart");
    server.with(|sv| {
        let missing: Vec<_> = committed
            .iter()
            .filter(|f| !sv.assets.contains_key(*f))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
    });
}

/// The length of a sled 0.34 log segment header: CRC-32 of the rest (inverted), the
/// segment's LSN and the highest stable LSN (each XORed with `i64::MAX`), little-endian.
const SEGMENT_HEADER_BYTES: usize = 20;

/// The file offset of the segment with the highest LSN among those whose header's
/// checksum holds (freed and never-written segments fail it or carry a lower LSN).
fn newest_segment(db: &[u8], segment: usize) -> Option<usize> {
    (0..db.len().div_ceil(segment))
        .map(|i| i * segment)
        .filter(|at| at + SEGMENT_HEADER_BYTES <= db.len())
        .filter_map(|at| {
            let h = &db[at..at + SEGMENT_HEADER_BYTES];
            let stored = u32::from_le_bytes(h[0..4].try_into().unwrap()) ^ u32::MAX;
            let lsn = i64::from_le_bytes(h[4..12].try_into().unwrap()) ^ i64::MAX;
            (crc32fast::hash(&h[4..]) == stored && lsn >= 0).then_some((lsn, at))
        })
        .max()
        .map(|(_, at)| at)
}
