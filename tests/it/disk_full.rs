//! A full disk, for real: the queue on an 8 MiB tmpfs (root mounts it; real ENOSPC), the
//! platform unreachable so nothing drains. The daemon must keep running and count every
//! frame it could not write, start again while the disk is still full (the reserve is
//! given back), and, once the platform is back, deliver every committed frame and capture
//! again as the space returns.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, TestConfig, Tmpfs};
use fake_platform::nexus::FakeNexus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_counts_its_losses_never_stops_the_daemon_and_drains_later() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("disk"), "8m");
    // The status file stays off the full disk.
    let mut cfg = TestConfig::nexus(tmp.path(), "http://127.0.0.1:1");
    cfg.queue_dir = tmp.path().join("disk").join("queue");
    cfg.fps = 50.0;
    cfg.extra_upload = String::new();
    let status_file = tmp.path().join("status.json");
    let render = |c: &TestConfig| {
        c.render().replace(
            &format!("status_file = {:?}", c.status_file().display().to_string()),
            &format!("status_file = {:?}", status_file.display().to_string()),
        )
    };
    let cfg_path = tmp.path().join("edgecap.toml");
    std::fs::write(&cfg_path, render(&cfg)).unwrap();
    let status_of = || -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(&status_file).ok()?).ok()
    };

    // 1. Fill the disk: frames keep coming, the ones that do not fit are counted.
    let mut d = Daemon::start(&cfg_path, &tmp.path().join("log1"));
    let t0 = Instant::now();
    while status_of().is_none_or(|s| s["counters"]["dropped_write"].as_u64().unwrap_or(0) < 20) {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the disk never filled: {:?}\n{}",
            status_of(),
            d.log_text()
        );
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full = status_of().unwrap();
    assert_eq!(full["state"], "running");
    let log = d.log_text();
    assert!(
        log.contains("frame lost: cannot write to the queue"),
        "{log}"
    );
    assert!(log.contains("the disk is nearly full"), "{log}");
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    let committed_1 = status_of().unwrap()["counters"]["committed"]
        .as_u64()
        .unwrap();
    assert!(committed_1 > 100, "{committed_1} frames fit");

    // 2. Another program takes the last bytes; start again on the full disk: the queue
    // must open (no crash loop), giving back its reserve, and the daemon run.
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
    assert!(filler.metadata().unwrap().len() > 0);
    let mut d = Daemon::start(&cfg_path, &tmp.path().join("log2"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon did not start on a full disk:\n{}",
        d.log_text()
    );
    assert_eq!(status_of().unwrap()["state"], "running");
    let log = d.log_text();
    assert!(
        log.contains("released edgecap's reserve so that the queue can open"),
        "{log}"
    );
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    let committed_2 = status_of().unwrap()["counters"]["committed"]
        .as_u64()
        .unwrap();

    // 3. The platform is back: everything committed is delivered, and capture resumes
    // as uploads free the disk.
    let server = FakeNexus::start().await;
    cfg.endpoint = Some(server.endpoint());
    cfg.batch_max_frames = 200;
    std::fs::write(&cfg_path, render(&cfg)).unwrap();
    let mut d = Daemon::start(&cfg_path, &tmp.path().join("log3"));
    let t0 = Instant::now();
    let mut recovery = None;
    loop {
        let delivered = server.with(|s| s.assets.len()) as u64;
        let s = status_of().unwrap();
        let committed_now = s["counters"]["committed"].as_u64().unwrap();
        if delivered >= committed_2 && recovery.is_none() {
            recovery = Some(t0.elapsed());
        }
        if delivered >= committed_2 && committed_now > committed_2 + 50 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "delivered {delivered} of {committed_2}, committed {committed_now}:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
    });
    let s = status_of().unwrap();
    let lost_uncounted = s["counters"]["committed"].as_u64().unwrap()
        - s["counters"]["uploaded"].as_u64().unwrap()
        - s["backlog_frames"].as_u64().unwrap()
        - s["dead"]["frames"].as_u64().unwrap();
    assert_eq!(
        lost_uncounted, 0,
        "every committed frame is delivered or still queued: {s}"
    );
    let dropped = full["counters"]["dropped_write"].as_u64().unwrap();
    let duplicates = server.with(|s| s.record.duplicates.len() as u64);
    crate::support::Figures {
        case: "disk full (8 MiB tmpfs)",
        runs: 3,
        committed: s["counters"]["committed"].as_u64().unwrap(),
        delivered: s["counters"]["uploaded"].as_u64().unwrap(),
        lost: lost_uncounted,
        duplicates,
        dead: s["dead"]["frames"].as_u64().unwrap(),
        recovery_secs: recovery.map(|r| r.as_secs_f64()),
        notes: format!(
            "{dropped}+ frames refused while full, each counted (dropped_write) and logged; restart on a disk filled by another program; {} frames still queued at the end",
            s["backlog_frames"]
        ),
    }
    .report();
}
