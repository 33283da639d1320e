//! `kill -9` at random moments during capture and upload: nothing committed is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::fake_nexus::FakeNexus;
use support::{Daemon, TestConfig, committed_filenames, queue_stats, sequences_by_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_committed_frame_over_10_cycles() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 20;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut committed: BTreeSet<String> = BTreeSet::new();
    for cycle in 0..10 {
        let log = tmp.path().join(format!("log.{cycle}"));
        let mut d = Daemon::start(&config, &log);
        let ms = rand::random_range(300..2500u64);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        d.kill9();
        let text = d.log_text();
        assert!(!text.contains("panicked"), "cycle {cycle}:\n{text}");
        if cycle > 0 {
            assert!(
                text.contains("queue open and reconciled"),
                "cycle {cycle} reopened:\n{text}"
            );
        }
        committed.extend(committed_filenames(&text));
    }
    // A last, clean run drains what the crashes left behind.
    let mut last = cfg.clone();
    last.stop_after_frames = 10;
    let last_config = last.write(&tmp.path().join("last.toml"));
    let mut d = Daemon::start(&last_config, &tmp.path().join("log.last"));
    assert!(
        d.wait(Duration::from_secs(90)).await.success(),
        "{}",
        d.log_text()
    );
    committed.extend(committed_filenames(&d.log_text()));

    assert!(
        committed.len() > 100,
        "the crashes hit a busy daemon: {}",
        committed.len()
    );
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        let missing: Vec<_> = committed.iter().filter(|f| !s.assets.contains_key(*f)).collect();
        assert!(missing.is_empty(), "committed frames lost: {missing:?}");
        let runs = sequences_by_run(s.assets.values().map(|a| &a.custom_metadata));
        // Every start that committed a frame shows up as its own run.
        let started: BTreeSet<String> = committed
            .iter()
            .filter_map(|f| f.rsplit('_').next()?.split('-').next().map(String::from))
            .collect();
        let delivered: BTreeSet<String> = runs.keys().map(|(r, _)| r.clone()).collect();
        assert_eq!(started, delivered);
        assert!(delivered.len() >= 10, "{delivered:?}");
        for ((run, cam), seqs) in &runs {
            let expect: Vec<i64> = (0..seqs.len() as i64).collect();
            assert_eq!(seqs, &expect, "run {run} camera {cam}: gap-free from 0");
        }
        eprintln!(
            "crash test: {} frames committed, {} delivered, {} re-sent after a crash (duplicates replaced by name)",
            committed.len(),
            s.assets.len(),
            s.record.duplicates.len()
        );
    });
    let stats = queue_stats(&last_config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["inflight"]["frames"], 0, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}
