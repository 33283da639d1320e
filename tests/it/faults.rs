//! Outages and server faults, against the real binary and the fake Nexus server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::counters::counters;
use crate::support::proxy::{Mode, Proxy};
use crate::support::{Daemon, TestConfig, free_port, queue_stats};
use fake_platform::nexus::{FakeNexus, PutFault, Scripted, Shared};

/// Every committed spool file, read through the queue's own format: filename → (image, meta).
fn snapshot_spool(dir: &std::path::Path) -> BTreeMap<String, (Vec<u8>, edgecap::frame::FrameMeta)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("spool")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "frame") {
            let (_, meta, image) = edgecap::queue::spool::read_frame(&p).unwrap();
            out.insert(meta.filename.clone(), (image, meta));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_and_up_20_s_later_drains_everything_byte_identical_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = TestConfig::nexus(tmp.path(), &format!("http://127.0.0.1:{port}"));
    cfg.stop_after_frames = 100;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    // Capture finishes in ~2 s; the frames wait in the queue while the server is down.
    let mut snap = BTreeMap::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        snap = snapshot_spool(&tmp.path().join("queue"));
        if snap.len() == 100 {
            break;
        }
    }
    assert_eq!(snap.len(), 100, "all frames queued while offline");
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "still running while offline"
    );
    let server = FakeNexus::start_on(port, Shared::default()).await;
    let st = d.wait(Duration::from_secs(40)).await;
    assert!(st.success(), "{}", d.log_text());
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert_eq!(s.assets.len(), 100);
        for (name, (image, meta)) in &snap {
            let a = &s.assets[name];
            assert_eq!(&a.bytes, image, "{name} arrives byte-identical");
            assert_eq!(
                a.custom_metadata,
                serde_json::to_value(&meta.custom).unwrap()
            );
            assert_eq!(a.groups, meta.groups);
        }
    });
    let log = d.log_text();
    // Logged once per state change, not once per attempt.
    assert_eq!(log.matches("uplink is down").count(), 1, "{log}");
    assert!(log.contains("uplink is back"), "{log}");
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0);
    assert_eq!(stats["counters"]["uploaded"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_create_500s_and_a_429_with_retry_after_are_retried_as_specified() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        // A server that echoes the key back: the daemon must mask it in its logs.
        let e500 = format!(
            r#"{{"code":"InternalServerError","message":"boom for key {}"}}"#,
            fake_platform::nexus::SECRET
        );
        for _ in 0..2 {
            s.faults
                .session_create
                .push_back(Scripted::status(500, &e500));
        }
        s.faults.session_create.push_back(
            Scripted::status(
                429,
                r#"{"code":"TooManyRequestsError","message":"Too Many Requests"}"#,
            )
            .with_header("retry-after", "3"),
        );
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 20;
    cfg.batch_max_frames = 100;
    // A short session window, so that the pacer's own wait after the 429 (a window /
    // 7.5 = 1.3 s) is shorter than the server's Retry-After: the test sees the latter.
    cfg.extra_upload = "session_rate_window_secs = 10\n".into();
    let (_, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    let log = d.log_text();
    assert!(
        log.contains("boom for key ***"),
        "server text is logged, masked:\n{log}"
    );
    server.with(|s| {
        assert_eq!(s.assets.len(), 20, "everything delivered after the faults");
        let st = &s.record.session_statuses;
        assert_eq!(&st[..4], &[500, 500, 429, 200], "{st:?}");
        let t = &s.record.session_attempts;
        // Backoff between the 500s (initial 200 ms, ±20 %), and Retry-After honoured.
        assert!(
            t[1] - t[0] >= Duration::from_millis(150),
            "{:?}",
            t[1] - t[0]
        );
        assert!(
            t[3] - t[2] >= Duration::from_secs(3),
            "Retry-After: {:?}",
            t[3] - t[2]
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_on_one_put_marks_only_that_frame_dead_and_delivers_all_others() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.put.push(PutFault::new("-7.jpg", 400, None)));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 40;
    cfg.drain_on_stop_secs = 10;
    let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        assert_eq!(s.assets.len(), 39, "all others delivered");
        assert!(s.assets.keys().all(|k| !k.ends_with("-7.jpg")));
        let tries = s
            .record
            .puts
            .iter()
            .filter(|(f, _)| f.ends_with("-7.jpg"))
            .count();
        assert_eq!(tries, 1, "a permanent refusal is not retried");
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["dead"]["frames"], 1, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert!(d.log_text().contains("frame marked dead"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_bad_digest_on_a_put_sends_the_frame_again_and_only_repeated_damage_kills_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        // Damaged once in transit: sent again from the spool, delivered.
        let mut once = PutFault::new("-4.jpg", 400, Some(1));
        once.code = "BadDigest";
        s.faults.put.push(once);
        // Damaged every time: dead after `max_attempts`, not retried for ever.
        let mut always = PutFault::new("-9.jpg", 400, None);
        always.code = "BadDigest";
        s.faults.put.push(always);
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 20;
    cfg.drain_on_stop_secs = 30;
    cfg.extra_upload = "max_attempts = 3\n".into();
    let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        let tries = |suffix: &str| -> Vec<u16> {
            s.record
                .puts
                .iter()
                .filter(|(f, _)| f.ends_with(suffix))
                .map(|x| x.1)
                .collect()
        };
        assert_eq!(tries("-4.jpg"), vec![400, 200]);
        assert_eq!(tries("-9.jpg"), vec![400, 400, 400], "max_attempts = 3");
        assert_eq!(s.assets.len(), 19);
        assert!(!s.assets.keys().any(|k| k.ends_with("-9.jpg")));
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["dead"]["frames"], 1, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    let log = d.log_text();
    assert!(
        log.contains("did not match its checksum on arrival"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_a_put_sends_the_frame_again_in_a_new_session_instead_of_killing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.put.push(PutFault::new("-3.jpg", 403, Some(1))));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 20;
    let (config, _) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        assert_eq!(s.assets.len(), 20);
        let tries: Vec<u16> = s
            .record
            .puts
            .iter()
            .filter(|(f, _)| f.ends_with("-3.jpg"))
            .map(|x| x.1)
            .collect();
        assert_eq!(tries, vec![403, 200]);
    });
    assert_eq!(queue_stats(&config)["dead"]["frames"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errored_operation_is_checked_asset_by_asset_and_missing_frames_are_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.errored_operations = 1);
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 20;
    let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| assert_eq!(s.assets.len(), 20));
    let log = d.log_text();
    assert!(
        log.contains("did not create this asset"),
        "Errored logged per asset:\n{log}"
    );
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0);
    assert_eq!(stats["dead"]["frames"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_and_max_frames_20_drop_oldest_keeps_the_20_newest_and_counts_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = TestConfig::nexus(tmp.path(), &format!("http://127.0.0.1:{port}"));
    cfg.stop_after_frames = 50;
    cfg.max_frames = 20;
    cfg.drain_on_stop_secs = 1;
    // No batch is due while capturing: a lease would hold the oldest frames in flight, and
    // frames in flight are never dropped, which is a different rule than this test's.
    cfg.batch_max_age_secs = 3600;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 20, "{stats}");
    assert_eq!(stats["counters"]["dropped_budget"], 30, "{stats}");
    let snap = snapshot_spool(&tmp.path().join("queue"));
    let mut seqs: Vec<i64> = snap
        .values()
        .map(|(_, m)| match &m.custom.to_map()["sequence"] {
            edgecap::config::MetaValue::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (30..50).collect::<Vec<_>>(), "the 20 newest remain");
    let log = d.log_text();
    assert_eq!(
        log.matches("queue budget full").count(),
        1,
        "first drop at ERROR"
    );
    assert_eq!(
        log.matches("dropped a frame to stay within the queue budget")
            .count(),
        29
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hung_upload_cancels_the_session_and_keeps_the_frames_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.put_delay = Some(Duration::from_secs(60)));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 10;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    for _ in 0..200 {
        if server.with(|s| !s.record.session_sizes.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.with(|s| !s.record.session_sizes.is_empty()),
        "a session was created"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.signal("TERM");
    let t = std::time::Instant::now();
    let st = d.wait(Duration::from_secs(10)).await;
    assert!(st.success(), "{}", d.log_text());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        server.with(|s| s.record.cancels) >= 1,
        "the open session was cancelled"
    );
    let committed = crate::support::committed_filenames(&d.log_text()).len() as u64;
    let stats = queue_stats(&config);
    assert_eq!(stats["inflight"]["frames"], 0, "{stats}");
    assert_eq!(
        stats["pending"]["frames"].as_u64().unwrap(),
        committed,
        "{stats}"
    );
    assert_eq!(stats["counters"]["uploaded"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_that_never_get_an_answer_time_out_and_the_frames_still_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        s.faults.put_delay = Some(Duration::from_secs(3600));
        s.faults.put_delay_count = Some(3);
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    cfg.batch_max_frames = 10;
    cfg.extra_upload = "put_concurrency = 1\n".into();
    let (config, _) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| assert_eq!(s.assets.len(), 10, "no frame lost to the hung uploads"));
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0);
    assert_eq!(stats["dead"]["frames"], 0);
}

/// More answers a session create can get, each on its own server: 503, a 200 whose body
/// is not JSON, and a 200 that lists fewer assets than were asked for (here none). None
/// may lose, kill or duplicate a frame, and each is followed by a backoff, not a tight
/// loop.
#[tokio::test]
async fn odd_session_answers_are_retried_without_loss() {
    let cases: [(&str, Scripted); 3] = [
        (
            "503",
            Scripted::status(
                503,
                r#"{"code":"ServiceUnavailable","message":"maintenance"}"#,
            ),
        ),
        (
            "200 with garbage",
            Scripted::status(200, "<html>gateway says hi</html>"),
        ),
        (
            "200 with fewer assets",
            Scripted::status(200, r#"{"id":"sess_fake","opId":"op_fake","assets":[]}"#),
        ),
    ];
    for (name, answer) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let server = FakeNexus::start().await;
        server.with(|s| {
            for _ in 0..2 {
                s.faults.session_create.push_back(answer.clone());
            }
        });
        let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
        cfg.stop_after_frames = 20;
        cfg.batch_max_frames = 100;
        let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
        server.with(|s| {
            assert_eq!(
                s.assets.len(),
                20,
                "{name}: everything delivered\n{}",
                d.log_text()
            );
            assert!(
                s.record.duplicates.is_empty(),
                "{name}: {:?}",
                s.record.duplicates
            );
            assert!(
                s.record.violations.is_empty(),
                "{name}: {:?}",
                s.record.violations
            );
            let t = &s.record.session_attempts;
            assert!(t.len() >= 3, "{name}: {} attempts", t.len());
            // Backoff (initial 200 ms, ±20 %) between the faulty answers.
            assert!(
                t[1] - t[0] >= Duration::from_millis(150),
                "{name}: retried after {:?}",
                t[1] - t[0]
            );
        });
        let stats = queue_stats(&config);
        assert_eq!(stats["dead"]["frames"], 0, "{name}: {stats}");
        assert_eq!(stats["pending"]["frames"], 0, "{name}: {stats}");
    }
}

/// A fake server behind the fault proxy: the API and the signed URLs both go through it.
async fn server_behind_proxy() -> (FakeNexus, Proxy) {
    let server = FakeNexus::start().await;
    let proxy = Proxy::start(server.addr).await;
    server.with(|s| s.storage_port = Some(proxy.addr.port()));
    (server, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_reset_in_the_middle_of_their_body_are_sent_again_and_arrive_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, proxy) = server_behind_proxy().await;
    proxy.reset_next_puts(4);
    let mut cfg = TestConfig::nexus(tmp.path(), &proxy.endpoint());
    cfg.stop_after_frames = 30;
    cfg.batch_max_frames = 10;
    let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;
    let counts = proxy.counts();
    assert_eq!(counts.resets, 4, "{counts:?}");
    let committed = crate::support::committed_filenames(&d.log_text());
    server.with(|s| {
        // A truncated body never becomes an asset, and every re-sent body is checked.
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert_eq!(s.assets.len(), 30);
        for f in &committed {
            assert!(s.assets.contains_key(f), "{f} delivered");
        }
        crate::support::Figures {
            case: "PUT reset mid-body (4 resets)",
            runs: 1,
            committed: committed.len() as u64,
            delivered: s.assets.len() as u64,
            lost: committed
                .iter()
                .filter(|f| !s.assets.contains_key(*f))
                .count() as u64,
            duplicates: s.record.duplicates.len() as u64,
            dead: 0,
            recovery_secs: None,
            notes: format!("{} PUTs answered 200", s.record.puts.len()),
        }
        .report();
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
}

/// Waits until `f` holds, polling; returns how long it took, or panics after `limit`.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_refused_then_hanging_connections_drains_afterwards_without_a_restart_or_a_tight_retry_loop()
 {
    // Short: 10 s refused + 10 s hanging; long (`EDGECAP_LONG=1`): 60 s + 60 s.
    let phase = Duration::from_secs(if crate::support::long() { 60 } else { 10 });
    let tmp = tempfile::tempdir().unwrap();
    let (server, proxy) = server_behind_proxy().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &proxy.endpoint());
    cfg.fps = 10.0;
    cfg.retry_max_secs = 10;
    // The default batch size: the backlog of a long outage must not need more sessions
    // than the platform's 15 per 5 minutes.
    cfg.batch_max_frames = 500;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start_logging(
        &config,
        &tmp.path().join("log"),
        "info,edgecap::daemon::commit=debug,edgecap::upload=debug",
    );
    until(Duration::from_secs(20), "first uploads", || {
        server.with(|s| s.assets.len() >= 10)
    })
    .await;

    proxy.set(Mode::Refuse);
    let down_at = std::time::Instant::now();
    tokio::time::sleep(phase).await;
    proxy.set(Mode::Hang);
    tokio::time::sleep(phase).await;
    let delivered_while_down = server.with(|s| s.assets.len());
    let hung = proxy.counts().hung;
    let backlog_at_return = crate::support::queue_stats_live(&cfg).unwrap_or(0);
    proxy.set(Mode::Pass);
    let outage = down_at.elapsed();
    assert!(d.child.try_wait().unwrap().is_none(), "running throughout");

    // Everything captured during the outage drains on its own.
    let recovery = until(Duration::from_secs(60), "backlog drained", || {
        crate::support::queue_stats_live(&cfg).is_some_and(|b| b <= 20)
            && server.with(|s| s.assets.len()) > delivered_while_down + 100
    })
    .await;
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(70)).await.success(),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("queue open and reconciled").count(),
        1,
        "no restart"
    );
    assert_eq!(log.matches("uplink is down").count(), 1, "{log}");
    assert_eq!(log.matches("uplink is back").count(), 1, "{log}");
    // Attempts while down: every failed probe (refused or timed out) plus the batch that
    // found the link down. With the delay doubling up to 10 s, that is a handful.
    let probes = log.matches("probe failed").count() as u64;
    let attempts = probes + 1;
    let bound = 4 + outage.as_secs() / 3;
    assert!(
        attempts <= bound,
        "{attempts} attempts in {outage:?} (bound {bound}): a tight retry loop"
    );
    assert!(hung >= 1, "the hanging phase was tried: {hung}");
    assert!(
        probes >= 4,
        "still probing throughout the outage: {probes} failed probes"
    );
    let committed = crate::support::committed_filenames(&log);
    let stats = queue_stats(&config);
    let c = counters(&stats);
    let counted = |k: &str| c.get(k).copied().unwrap_or(0);
    let (resent_crash, resent_error) =
        (counted("resent_after_crash"), counted("resent_after_error"));
    // A stop by signal does not drain: the last frames wait in the queue for the next start.
    let queued = snapshot_spool(&tmp.path().join("queue"));
    assert!(queued.len() <= 30, "{} frames left queued", queued.len());
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        let lost: Vec<_> = committed
            .iter()
            .filter(|f| !s.assets.contains_key(*f) && !queued.contains_key(*f))
            .collect();
        assert!(lost.is_empty(), "committed frames lost: {lost:?}");
        // A batch whose operation cannot be followed through the outage, and whose assets
        // cannot be looked up then, is sent again (the long run: 10 frames): the platform
        // gets those filenames twice, and every one must be a counted re-send.
        let dup = s.record.duplicates.len() as u64;
        assert!(
            dup <= resent_crash + resent_error,
            "{dup} duplicates at the platform, {resent_error} re-sends after an error counted: {stats}"
        );
        crate::support::Figures {
            case: "outage: refused, then hanging",
            runs: 1,
            committed: committed.len() as u64,
            delivered: s.assets.len() as u64,
            lost: lost.len() as u64,
            duplicates: s.record.duplicates.len() as u64,
            dead: stats["dead"]["frames"].as_u64().unwrap(),
            recovery_secs: Some(recovery.as_secs_f64()),
            notes: format!(
                "{:.0} s down ({} s refused + {} s hanging); {attempts} attempts while down ({hung} hung); backlog {backlog_at_return} frames at return; resent after an error {resent_error}",
                outage.as_secs_f64(),
                phase.as_secs(),
                phase.as_secs()
            ),
        }
        .report();
    });
    assert_eq!(stats["pending"]["frames"], queued.len(), "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}
