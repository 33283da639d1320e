//! The promises beside "no committed frame lost", through the real binary: lifetime
//! counters never go back and always add up across `kill -9`; a disk filled by another
//! program heals without a restart; a sink folder that cannot be written does not stop
//! capture; a slow link stopped every few seconds still makes progress. A damaged or
//! failed index is `index_damage.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::counters::{assert_adds_up, assert_not_behind, counters};
use crate::support::{Daemon, Figures, TestConfig, Tmpfs, committed_filenames, queue_stats};
use fake_platform::nexus::{FakeNexus, Scripted};

fn read_status(cfg: &TestConfig) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_go_backwards_and_add_up_over_50_kills_at_random_moments() {
    let cycles = if crate::support::long() { 200 } else { 50 };
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.operation_delay = Some(Duration::from_millis(300)));
    // A small budget and an uplink that is down every other run: frames are evicted,
    // committed, sent, acknowledged and interrupted in every mix.
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.max_frames = 60;
    cfg.batch_max_frames = 20;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut kills_with_counters_shown = 0;
    for cycle in 0..cycles {
        cfg.endpoint = Some(if cycle % 2 == 0 {
            server.endpoint()
        } else {
            "http://127.0.0.1:1".to_string()
        });
        let config = cfg.write(&tmp.path().join("edgecap.toml"));
        let _ = std::fs::remove_file(cfg.status_file());
        let mut d = Daemon::start(&config, &tmp.path().join(format!("log.{cycle}")));
        let t = Instant::now();
        let kill_at = Duration::from_millis(rand::random_range(200..2500u64));
        let mut shown = None;
        while t.elapsed() < kill_at {
            if let Some(s) = read_status(&cfg) {
                shown = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d.kill9();
        let text = d.log_text();
        assert!(!text.contains("panicked"), "cycle {cycle}:\n{text}");
        // What the daemon showed before the kill never exceeds what survives it.
        if let Some(s) = &shown {
            let c = counters(s);
            assert_not_behind(&seen, &c, &format!("cycle {cycle}, status"));
            seen = c;
            kills_with_counters_shown += 1;
        }
        let stats = queue_stats(&config);
        let c = counters(&stats);
        assert_not_behind(&seen, &c, &format!("cycle {cycle}, after the kill"));
        assert_adds_up(&stats, &format!("cycle {cycle}"));
        seen = c;
    }
    assert!(
        kills_with_counters_shown > cycles / 2,
        "{kills_with_counters_shown}"
    );
    let n = |k: &str| seen.get(k).copied().unwrap_or(0);
    assert!(n("committed") > 300, "{seen:?}");
    assert!(n("uploaded") > 50, "{seen:?}");
    assert!(n("evicted") > 0, "the budget was exercised: {seen:?}");
    let dup = server.with(|s| s.record.duplicates.len() as u64);
    // Every frame sent twice was counted as a re-send.
    assert!(
        dup <= n("resent_after_crash") + n("resent_after_error"),
        "{dup} duplicates, counted {seen:?}"
    );
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        // `uploaded` counts distinct frames: each asset once, however often it was sent.
        assert!(
            n("uploaded") <= s.assets.len() as u64,
            "uploaded {} > {} distinct assets",
            n("uploaded"),
            s.assets.len()
        );
    });
    Figures {
        case: "counters across kill -9 (budget 60 frames, uplink down every other run)",
        runs: cycles as u64,
        committed: n("committed"),
        delivered: n("uploaded"),
        lost: 0,
        duplicates: dup,
        dead: 0,
        recovery_secs: None,
        notes: format!(
            "no counter went back in {cycles} kills (status before each, queue stats after); committed = uploaded + pending + dead + evicted + … after each; evicted {}, interrupted {}, resent after a crash {}, after an error {}",
            n("evicted"),
            n("interrupted"),
            n("resent_after_crash"),
            n("resent_after_error")
        ),
    }
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_folder_that_cannot_be_written_at_start_does_not_stop_capture() {
    let tmp = tempfile::tempdir().unwrap();
    // The sink's folder is a read-only file system at start (root cannot write there
    // either), made writable while the daemon runs.
    let out = tmp.path().join("out");
    let fs = Tmpfs::mount(&out, "16m");
    let remount = |opts: &str| {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    };
    remount("ro");
    let mut cfg = TestConfig::nexus(tmp.path(), "unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(out.clone());
    cfg.fps = 20.0;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let t = Instant::now();
    loop {
        let committed =
            read_status(&cfg).map_or(0, |s| s["counters"]["committed"].as_u64().unwrap_or(0));
        if committed >= 30 {
            break;
        }
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "exited:\n{}",
            d.log_text()
        );
        assert!(t.elapsed() < Duration::from_secs(30), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = d.log_text();
    assert!(log.contains("edgecap starts anyway"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    remount("rw");
    let t = Instant::now();
    while std::fs::read_dir(&out).map_or(0, |r| r.count()) < 40 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    let log = d.log_text();
    let warned = log.lines().filter(|l| l.contains("uplink is down")).count();
    assert_eq!(warned, 1, "warned once:\n{log}");
    assert!(log.contains("uplink is back"), "{log}");
    let s = queue_stats(&config);
    let delivered = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".jpg")
        })
        .count() as u64;
    assert_eq!(
        s["counters"]["uploaded"].as_u64().unwrap(),
        delivered,
        "{s}"
    );
    assert_adds_up(&s, "after the run");
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_another_program_heals_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("disk"), "24m");
    let server = FakeNexus::start().await;
    // The platform answers 503 to every session at first: a backlog builds.
    server.with(|s| {
        for _ in 0..10_000 {
            s.faults
                .session_create
                .push_back(Scripted::status(503, "{\"message\":\"busy\"}"));
        }
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.queue_dir = tmp.path().join("disk").join("queue");
    cfg.fps = 40.0;
    cfg.batch_max_frames = 100;
    // The status file stays off the full disk.
    let status_file = tmp.path().join("status.json");
    let text = cfg.render().replace(
        &format!(
            "status_file = {:?}",
            cfg.status_file().display().to_string()
        ),
        &format!("status_file = {:?}", status_file.display().to_string()),
    );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let status = || -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(&status_file).ok()?).ok()
    };
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Another program takes every byte left.
    let filler = tmp.path().join("disk").join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let t = Instant::now();
    while !d.log_text().contains("the queue index failed") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the index never hit the full disk:\n{}",
            d.log_text()
        );
        assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = status().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log_text());
    let s = status().unwrap();
    assert!(s["index_failed"].is_object(), "status says so: {s}");
    // The filler goes and the platform comes back: delivery resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    server.with(|s| s.faults.session_create.clear());
    let freed = Instant::now();
    let pid = d.child.id();
    while server.with(|s| s.assets.len()) < 50 {
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "no delivery 30 s after the disk was freed:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed = freed.elapsed().as_secs_f64();
    assert_eq!(d.child.id(), pid);
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("rebuilt after its failure"), "{log}");
    let errors = log
        .lines()
        .filter(|l| l.contains("the queue index failed"))
        .count();
    assert_eq!(errors, 1, "one ERROR for the failure:\n{log}");
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    // Everything committed is delivered or still queued.
    let stats = queue_stats(&config);
    assert_adds_up(&stats, "after the heal");
    assert_not_behind(&counters(&failed), &counters(&stats), "after the heal");
    assert!(
        stats["counters"]["index_repairs"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    let committed = committed_filenames(&log);
    let queued = stats["pending"]["frames"].as_u64().unwrap();
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        let missing = committed
            .iter()
            .filter(|f| !s.assets.contains_key(*f))
            .count() as u64;
        assert!(missing <= queued, "{missing} not delivered, {queued} still queued");
        Figures {
            case: "disk filled by another program, freed 10 s later",
            runs: 1,
            committed: committed.len() as u64,
            delivered: s.assets.len() as u64,
            lost: 0,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: Some(resumed),
            notes: format!(
                "index failed on ENOSPC, repaired in-process ({} repair(s)); deliveries resumed {resumed:.1} s after the filler was removed, no restart; {queued} frames still queued at the stop",
                stats["counters"]["index_repairs"]
            ),
        }
        .report();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_and_a_daemon_stopped_every_few_seconds_still_make_progress_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    // Every storage PUT takes a second: a batch of 40 needs about 10 s, longer than a run.
    server.with(|s| s.faults.put_delay = Some(Duration::from_secs(1)));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 10.0;
    cfg.batch_max_frames = 40;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let runs = 8;
    let mut uploaded = Vec::new();
    let mut committed = Vec::new();
    for run in 0..runs {
        let mut d = Daemon::start(&config, &tmp.path().join(format!("log.{run}")));
        tokio::time::sleep(Duration::from_millis(4500)).await;
        d.signal("TERM");
        assert!(
            d.wait(Duration::from_secs(15)).await.success(),
            "{}",
            d.log_text()
        );
        committed.extend(committed_filenames(&d.log_text()));
        let s = queue_stats(&config);
        assert_adds_up(&s, &format!("run {run}"));
        uploaded.push(s["counters"]["uploaded"].as_u64().unwrap());
    }
    // Each run finds the frames the previous one put into storage before it was stopped,
    // and puts some more: `uploaded` grows from one run to the next.
    for w in uploaded[1..].windows(2) {
        assert!(w[1] > w[0], "progress every run: {uploaded:?}");
    }
    // A last run with a fast link delivers the rest.
    server.with(|s| s.faults.put_delay = None);
    let mut last = cfg.clone();
    last.stop_after_frames = 5;
    let last_config = last.write(&tmp.path().join("last.toml"));
    let mut d = Daemon::start(&last_config, &tmp.path().join("log.last"));
    assert!(
        d.wait(Duration::from_secs(60)).await.success(),
        "{}",
        d.log_text()
    );
    committed.extend(committed_filenames(&d.log_text()));
    let s = queue_stats(&last_config);
    assert_eq!(s["pending"]["frames"], 0, "{s}");
    let c = counters(&s);
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    server.with(|sv| {
        assert!(sv.record.violations.is_empty(), "{:?}", sv.record.violations);
        let missing: Vec<_> = committed
            .iter()
            .filter(|f| !sv.assets.contains_key(*f))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        let dup = sv.record.duplicates.len() as u64;
        assert!(
            dup <= n("resent_after_crash") + n("resent_after_error"),
            "{dup} duplicates, {c:?}"
        );
        assert_eq!(n("uploaded"), sv.assets.len() as u64, "uploaded counts frames");
        Figures {
            case: "slow link (1 s per PUT), stopped every 4.5 s",
            runs: runs as u64 + 1,
            committed: committed.len() as u64,
            delivered: sv.assets.len() as u64,
            lost: 0,
            duplicates: dup,
            dead: 0,
            recovery_secs: None,
            notes: format!(
                "uploaded after each stopped run: {uploaded:?}; {} PUTs for {} assets; {} frames found on the platform after a stop instead of being sent again; resent after a stop {}, after an error {}",
                sv.record.puts.len(),
                sv.assets.len(),
                n("recovered"),
                n("resent_after_crash"),
                n("resent_after_error")
            ),
        }
        .report();
    });
}
