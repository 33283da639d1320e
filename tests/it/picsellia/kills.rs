//! The Picsellia sink across `kill -9`: between upload and registration, while an answer
//! is held back, and at random moments over many cycles: no frame registered twice.

use std::collections::BTreeSet;
use std::time::Duration;

use fake_platform::picsellia::{FakePicsellia, FileFault};

use super::config;
use crate::support::{Daemon, Figures, committed_filenames, queue_stats, run_to_end};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_upload_and_registration_leaves_no_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| {
        s.faults.hang = Duration::from_secs(30);
        // Uploaded, registration under way but not arrived: the crash cuts it off.
        s.faults.register_hang_before = vec![FileFault::new("-7.jpg", Some(1))];
        // Registered, the answer not back yet.
        s.faults.register_hang_after = vec![FileFault::new("-9.jpg", Some(1))];
    });
    let mut cfg = config(tmp.path(), &server, 0);
    cfg.fps = 20.0;
    cfg.batch_max_frames = 5;
    let path = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&path, &tmp.path().join("log1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (seven, nine) = server.with(|s| {
            (
                s.record
                    .registrations
                    .iter()
                    .any(|r| r.0.ends_with("-7.jpg")),
                s.data.values().any(|d| d.filename.ends_with("-9.jpg")),
            )
        });
        if seven && nine {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.kill9();
    let first = committed_filenames(&d.log_text());

    let mut cfg2 = cfg.clone();
    cfg2.stop_after_frames = 5;
    let (config, d2) = run_to_end(&cfg2, tmp.path()).await;
    let second = committed_filenames(&d2.log_text());
    let all: BTreeSet<String> = first.iter().chain(second.iter()).cloned().collect();
    let stats = queue_stats(&config);
    let committed = stats["counters"]["committed"].as_u64().unwrap() as usize;
    server.with(|s| {
        assert!(
            s.duplicates().is_empty(),
            "duplicates: {:?}",
            s.duplicates()
        );
        let have: BTreeSet<String> = s.data.values().map(|d| d.filename.clone()).collect();
        // Every frame committed (the log may miss the last lines before the kill) is there
        // exactly once.
        assert!(
            all.is_subset(&have),
            "missing: {:?}",
            all.difference(&have).collect::<Vec<_>>()
        );
        assert_eq!(s.data.len(), committed, "one data per committed frame");
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
    });
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert!(
        stats["counters"]["recovered"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        d2.log_text().contains("found on the platform"),
        "{}",
        d2.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_registers_every_committed_frame_exactly_once() {
    // 10 cycles in the normal run, 50 with `EDGECAP_LONG=1` (scripts/reliability).
    let cycles = if crate::support::long() { 50 } else { 10 };
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| {
        // Answers come back late and processing takes a few reads, so kills land while
        // registrations are unanswered and while processing is followed.
        s.faults.register_answer_delay = Some(Duration::from_millis(150));
        s.faults.processing_reads = 3;
    });
    let mut cfg = config(tmp.path(), &server, 0);
    cfg.batch_max_frames = 10;
    // Below what the slowed platform takes (about 20 frames/s), so the backlog the kills
    // leave stays one the last run drains.
    cfg.fps = 10.0;
    let path = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut committed: BTreeSet<String> = BTreeSet::new();
    for cycle in 0..cycles {
        let mut d = Daemon::start(&path, &tmp.path().join(format!("log.{cycle}")));
        let kill_at = Duration::from_millis(rand::random_range(400..2500u64));
        tokio::time::sleep(kill_at).await;
        d.kill9();
        let text = d.log_text();
        assert!(!text.contains("panicked"), "cycle {cycle}:\n{text}");
        committed.extend(committed_filenames(&text));
    }
    let mut last = cfg.clone();
    last.stop_after_frames = 5;
    let (config, d) = run_to_end(&last, tmp.path()).await;
    committed.extend(committed_filenames(&d.log_text()));
    assert!(
        committed.len() > 40,
        "the kills hit a busy daemon: {}",
        committed.len()
    );
    let stats = queue_stats(&config);
    let lifetime = stats["counters"]["committed"].as_u64().unwrap() as usize;
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    let (delivered, lost, duplicates) = server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        let have: BTreeSet<&String> = s.data.values().map(|d| &d.filename).collect();
        let missing = committed.iter().filter(|f| !have.contains(f)).count();
        (s.data.len(), missing, s.duplicates().len())
    });
    assert_eq!(duplicates, 0, "frames registered twice");
    assert_eq!(lost, 0, "committed frames lost");
    assert_eq!(delivered, lifetime, "one data per committed frame");
    Figures {
        case: "Picsellia: kill -9 at random moments",
        runs: cycles as u64,
        committed: lifetime as u64,
        delivered: delivered as u64,
        lost: lost as u64,
        duplicates: duplicates as u64,
        dead: stats["dead"]["frames"].as_u64().unwrap_or(0),
        recovery_secs: None,
        notes: format!(
            "registration answers 150 ms late, processing 3 reads; {} frames found by object name after a restart and not registered again; {} re-sent after a crash",
            stats["counters"]["recovered"], stats["counters"]["resent_after_crash"]
        ),
    }
    .report();
}
