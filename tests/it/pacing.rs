//! Session pacing against the fake Nexus server: the client-side session limit, a 429
//! that slows the device down, and a 429 taken as bad luck (`src/upload/pacer/`,
//! `docs/fleet.md`). The fleet itself is a benchmark (`scripts/fleet`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use crate::support::{Daemon, TestConfig, queue_stats};
use fake_platform::nexus::{FakeNexus, Scripted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_creations_stay_within_the_client_side_rate_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 200;
    cfg.batch_max_frames = 5;
    // ~12 kB batches grow to at most 16 x that (~33 frames of ~6 kB): 200 frames need six
    // sessions or more whatever the timing, so the limiter must be hit.
    cfg.extra_upload =
        "session_rate_limit = 2\nsession_rate_window_secs = 3\nbatch_max_bytes = 12000\n".into();
    let (_, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        assert_eq!(s.assets.len(), 200);
        let t = &s.record.session_attempts;
        // Capture outruns 2 sessions per 3 s, so the limiter is hit; the backlog goes in
        // grown batches rather than waiting for more windows.
        assert!(t.len() >= 3, "{} sessions", t.len());
        for w in t.windows(3) {
            assert!(
                w[2] - w[0] >= Duration::from_millis(2900),
                "three sessions within {:?}",
                w[2] - w[0]
            );
        }
    });
    assert!(d.log_text().contains("session rate limit reached"));
}

/// A fake Nexus whose first session create is refused with a 429 (no `Retry-After`).
async fn answering_429_once() -> FakeNexus {
    let server = FakeNexus::start().await;
    server.with(|s| {
        s.faults.session_create.push_back(Scripted::status(
            429,
            r#"{"code":"TooManyRequestsError","message":"slow down"}"#,
        ))
    });
    server
}

/// A 429 without `Retry-After`: the project's session limit is shared with other
/// devices, so the pacer halves this device's session rate (15 → 7.5 per 300 s) and the
/// next attempt waits for it (40 s), with the frames kept meanwhile, counted in
/// `/metrics` and shown by `status`.
#[tokio::test]
async fn a_429_without_retry_after_slows_the_session_rate_and_keeps_the_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let server = answering_429_once().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 0;
    cfg.batch_max_frames = 20;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    // A drop-in beside the config asks for node_exporter's textfile.
    let prom = tmp.path().join("edgecap.prom");
    std::fs::create_dir(tmp.path().join("conf.d")).unwrap();
    std::fs::write(
        tmp.path().join("conf.d/50-metrics.toml"),
        format!(
            "[daemon]\nmetrics_textfile = {:?}\n",
            prom.display().to_string()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let t0 = std::time::Instant::now();
    while server.with(|s| s.record.session_attempts.len()) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no session attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        server.with(|s| s.record.session_attempts.len()),
        1,
        "retried within 6 s of a 429"
    );
    let log = d.log_text();
    let wait: u64 = log
        .split("next_session_in_ms=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no next_session_in_ms in\n{log}"));
    // 7.5 per 300 s: 40 s on average, drawn from about half to one and a half of it.
    assert!((19_000..=61_000).contains(&wait), "{wait} ms\n{log}");
    assert!(log.contains("sessions_per_window=7.5 "), "{log}");
    // The status file carries the pace; the waiting state names the session limit.
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).unwrap()).unwrap();
    let u = &status["uploader"];
    assert_eq!(u["rate_limited"], 1, "{status}");
    assert!(
        (u["session_rate"].as_f64().unwrap() - 7.5).abs() < 0.1,
        "{status}"
    );
    assert_eq!(u["state"], "waiting", "{status}");
    assert_eq!(u["reason"], "session limit", "{status}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecap"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("slowed by 1 × 429"), "{text}");
    // The textfile was written at start (then every 30 s), in the text format.
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("edgecap_device_info{device=\"testdev\"} 1\n")
            && metrics.contains("# TYPE edgecap_uploader_rate_limited_total counter\n"),
        "{metrics}"
    );
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    let stats = queue_stats(&config);
    assert!(
        stats["pending"]["frames"].as_u64().unwrap() >= 20,
        "{stats}"
    );
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}

/// A 429 to a device that has had no session for three of its periods or more is bad
/// luck in a crowd, not a rate too high: the rate is kept, the next try comes a slot's
/// time later (window / limit), and the 429 is counted but not announced at INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_after_a_long_wait_keeps_the_rate_and_the_next_try_comes_soon() {
    let tmp = tempfile::tempdir().unwrap();
    let server = answering_429_once().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 2.0;
    cfg.stop_after_frames = 20;
    cfg.batch_max_frames = 500;
    // The first batch goes when its oldest frame is 4 s old: 6 periods of 0.67 s (15 per
    // 10 s) after the start, with no session accepted yet.
    cfg.batch_max_age_secs = 4;
    cfg.extra_upload = "session_rate_window_secs = 10\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start_logging(
        &config,
        &tmp.path().join("log"),
        "info,edgecap::upload=debug",
    );
    assert!(d.wait(Duration::from_secs(60)).await.success());
    let log = d.log_text();
    server.with(|s| {
        assert_eq!(s.assets.len(), 20, "everything delivered");
        let st = &s.record.session_statuses;
        assert_eq!(&st[..2], &[429, 200], "{st:?}");
        let t = &s.record.session_attempts;
        // A slot's time (0.67 s) drawn from ½ to 1½ of it, not the 1.33 s average of a
        // halved rate (and well within the uploader's own backoff cap of 2 s).
        assert!(
            t[1] - t[0] <= Duration::from_millis(1100),
            "{:?}",
            t[1] - t[0]
        );
    });
    assert!(
        log.contains("429 while behind this device's share"),
        "the 429 is logged at DEBUG:\n{log}"
    );
    assert!(
        !log.contains("this device slows down"),
        "the rate was not cut:\n{log}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).unwrap()).unwrap();
    let u = &status["uploader"];
    assert_eq!(u["rate_limited"], 1, "{status}");
    assert_eq!(u["session_rate"].as_f64().unwrap(), 15.0, "{status}");
    assert!(
        !tmp.path().join("queue/pacer.json").exists(),
        "nothing to keep"
    );
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
}
