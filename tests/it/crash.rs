//! `kill -9` at random moments during capture and upload: nothing committed is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    Daemon, Figures, TestConfig, committed_filenames, queue_stats, sequences_by_run,
};
use fake_platform::nexus::FakeNexus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_committed_frame_over_10_cycles() {
    // 10 cycles in the normal run, 100 with `EDGECAP_LONG=1` (scripts/reliability).
    let cycles = if crate::support::long() { 100 } else { 10 };
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    // Operations take a while, so a good share of the kills land with frames in flight.
    server.with(|s| s.faults.operation_delay = Some(Duration::from_millis(400)));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 20;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut committed: BTreeSet<String> = BTreeSet::new();
    let mut interrupted = 0u64;
    // Slowest start after a crash: from spawn to the queue reconciled.
    let mut slowest_reopen = Duration::ZERO;
    for cycle in 0..cycles {
        let log = tmp.path().join(format!("log.{cycle}"));
        let mut d = Daemon::start(&config, &log);
        let t = std::time::Instant::now();
        let kill_at = Duration::from_millis(rand::random_range(300..2500u64));
        while t.elapsed() < kill_at {
            if !d.log_text().contains("queue open and reconciled") {
                slowest_reopen = slowest_reopen.max(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        d.kill9();
        let text = d.log_text();
        assert!(!text.contains("panicked"), "cycle {cycle}:\n{text}");
        // An upload acknowledged just before the kill is never mistaken for a lost file.
        assert!(
            !text.contains("spool file is missing"),
            "cycle {cycle}:\n{text}"
        );
        if cycle > 0 {
            assert!(
                text.contains("queue open and reconciled"),
                "cycle {cycle} reopened:\n{text}"
            );
        }
        committed.extend(committed_filenames(&text));
        interrupted += interrupted_at_open(&text);
    }
    // A last, clean run drains what the crashes left behind.
    let mut last = cfg.clone();
    last.stop_after_frames = 10;
    let last_config = last.write(&tmp.path().join("last.toml"));
    let mut d = Daemon::start(&last_config, &tmp.path().join("log.last"));
    let t = std::time::Instant::now();
    assert!(
        d.wait(Duration::from_secs(if crate::support::long() {
            600
        } else {
            90
        }))
        .await
        .success(),
        "{}",
        d.log_text()
    );
    let drain_secs = t.elapsed().as_secs_f64();
    committed.extend(committed_filenames(&d.log_text()));
    interrupted += interrupted_at_open(&d.log_text());

    assert!(
        committed.len() > 100,
        "the crashes hit a busy daemon: {}",
        committed.len()
    );
    let stats = queue_stats(&last_config);
    let lifetime_interrupted = stats["counters"]["interrupted"].as_u64().unwrap();
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
        assert!(delivered.len() >= cycles, "{delivered:?}");
        for ((run, cam), seqs) in &runs {
            let expect: Vec<i64> = (0..seqs.len() as i64).collect();
            assert_eq!(seqs, &expect, "run {run} camera {cam}: gap-free from 0");
        }
        // Every re-sent frame was one the queue found in flight and reported: the lifetime
        // counter is exact (it lands with the moves); the open lines can miss a count when
        // the kill lands between the reconcile and its log line.
        assert!(
            interrupted <= lifetime_interrupted,
            "{interrupted} logged in flight, lifetime counter {lifetime_interrupted}"
        );
        assert!(
            s.record.duplicates.len() as u64 <= lifetime_interrupted,
            "{} duplicates, {lifetime_interrupted} reported in flight",
            s.record.duplicates.len()
        );
        // A frame whose operation had finished is never uploaded twice: its session was
        // recorded before its bytes went out, and the next start asked the platform.
        assert!(
            s.record.duplicates_after_finished.is_empty(),
            "uploaded again although the platform had it: {:?}",
            s.record.duplicates_after_finished
        );
        let recovered = stats["counters"]["recovered"].as_u64().unwrap();
        let open = s.open_sessions();
        eprintln!(
            "crash figures: committed {}, delivered {}, delivered without metadata {}, uploaded twice {} (after a finished operation {}; the rest interrupted before their session was recorded or finished), recovered without re-sending {recovered}, interrupted {lifetime_interrupted}, sessions {} created, {open} left open",
            committed.len(),
            s.assets.len(),
            s.assets
                .values()
                .filter(|a| a.custom_metadata.get("site").is_none())
                .count(),
            s.record.duplicates.len(),
            s.record.duplicates_after_finished.len(),
            s.sessions_created(),
        );
        // No session the daemon sent bytes into is left open: recovery cancelled the
        // unfinished ones. (A kill between a session's creation and its note can leave an
        // empty one behind, which no client can find again; those are counted above.)
        assert_eq!(s.open_sessions_used(), 0, "sessions left open after use");
        // Every frame arrived with its metadata (attached through the bulk endpoint).
        let bare: Vec<_> = s
            .assets
            .values()
            .filter(|a| a.custom_metadata.get("site").is_none())
            .map(|a| a.filename.clone())
            .collect();
        assert!(bare.is_empty(), "delivered without metadata: {bare:?}");
        Figures {
            case: "kill -9 at random moments",
            runs: cycles as u64,
            committed: committed.len() as u64,
            delivered: s.assets.len() as u64,
            lost: missing.len() as u64,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: Some(slowest_reopen.as_secs_f64()),
            notes: format!(
                "{lifetime_interrupted} frames found in flight after a crash, {} of them found on the platform and not sent again; {} sessions, {} left open; slowest re-open {:.2} s; last run drained the backlog in {drain_secs:.1} s",
                stats["counters"]["recovered"],
                s.sessions_created(),
                s.open_sessions(),
                slowest_reopen.as_secs_f64()
            ),
        }
        .report();
    });
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["inflight"]["frames"], 0, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}

/// Frames the queue found in flight when it opened (`interrupted=` of its open line).
fn interrupted_at_open(log: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("queue open and reconciled"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("interrupted="))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}
