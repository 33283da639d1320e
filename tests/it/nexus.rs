//! Nexus as it speaks today: custom metadata the way the current SDK attaches it (the bulk
//! endpoint after the upload), against a fake server that ignores metadata in session
//! requests as a current platform may; metadata-only retries; refusals; the project check
//! at start; group sets sharing the session budget; frames whose upload the platform
//! could not confirm are asked about, not sent twice.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_platform::nexus::{FakeNexus, PROJECT};

use crate::support::{Daemon, TestConfig, queue_stats, run_to_end};

/// Every asset of `server` carries the camera's metadata and the built-in keys.
fn assert_all_have_metadata(server: &FakeNexus, n: usize, what: &str) {
    server.with(|s| {
        assert_eq!(s.assets.len(), n, "{what}: assets");
        for a in s.assets.values() {
            let m = &a.custom_metadata;
            assert_eq!(
                m["site"], "north",
                "{what}: {} lacks its metadata: {m}",
                a.filename
            );
            assert_eq!(m["rig"], 3, "{what}: {m}");
            assert_eq!(m["label"], "testdev/cam0", "{what}: {m}");
            assert_eq!(m["camera"], "cam0", "{what}: {m}");
            assert!(m["capture_time_ms"].as_i64().is_some(), "{what}: {m}");
        }
    });
}

/// PUTs that succeeded, per filename.
fn puts_per_file(server: &FakeNexus) -> BTreeMap<String, usize> {
    server.with(|s| {
        let mut m = BTreeMap::new();
        for (name, status) in &s.record.puts {
            if *status < 300 {
                *m.entry(name.clone()).or_default() += 1;
            }
        }
        m
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_bulk_mode_every_frame_gets_its_metadata_from_a_server_that_ignores_the_session_field() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.ignore_session_metadata = true);
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 30;
    cfg.batch_max_frames = 10;
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    assert_all_have_metadata(&server, 30, "bulk");
    server.with(|s| {
        // Nothing in the session requests; one bulk call per session, each entry once.
        assert_eq!(s.record.session_metadata_assets, 0);
        assert_eq!(
            s.record.metadata_calls.len(),
            s.record.session_sizes.len(),
            "{:?} vs {:?}",
            s.record.metadata_calls,
            s.record.session_sizes
        );
        assert!(s.record.metadata_updates.values().all(|n| *n == 1));
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["counters"]["uploaded"], 30, "{stats}");
    assert_eq!(stats["counters"]["metadata_retried"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_5xx_and_a_passing_entry_error_only_the_metadata_is_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        s.faults.ignore_session_metadata = true;
        s.faults.metadata_5xx = 2;
        s.faults.metadata_entry_transient = 3;
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 20;
    cfg.batch_max_frames = 10;
    let (config, d) = run_to_end(&cfg, tmp.path()).await;
    assert_all_have_metadata(&server, 20, "after retries");
    // Each image went up exactly once: the retries carried metadata only.
    let puts = puts_per_file(&server);
    assert_eq!(puts.len(), 20);
    assert!(puts.values().all(|n| *n == 1), "{puts:?}");
    server.with(|s| assert!(s.record.duplicates.is_empty()));
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
    assert_eq!(stats["counters"]["uploaded"], 20, "{stats}");
    // The 5xx calls (two batches of 10 at most) plus the three entries: counted.
    let retried = stats["counters"]["metadata_retried"].as_u64().unwrap();
    assert!(retried >= 3, "{stats}");
    assert!(
        d.log_text().contains("attaching metadata"),
        "{}",
        d.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_the_platform_refuses_marks_the_frame_dead_and_names_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.metadata_refuse_keys = vec!["rig".into()]);
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    cfg.batch_max_frames = 10;
    let (config, d) = run_to_end(&cfg, tmp.path()).await;
    let stats = queue_stats(&config);
    assert_eq!(stats["dead"]["frames"], 10, "{stats}");
    assert_eq!(stats["counters"]["uploaded"], 0, "{stats}");
    let log = d.log_text();
    assert!(log.contains("refused this frame's metadata"), "{log}");
    assert!(log.contains("invalid metadata key rig"), "{log}");
    assert!(log.contains("\"rig\""), "the keys are named: {log}");
    // The images were uploaded once each and not again.
    let puts = puts_per_file(&server);
    assert!(puts.values().all(|n| *n == 1), "{puts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_session_mode_metadata_goes_in_the_session_request_and_no_bulk_call_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    cfg.extra_upload = "metadata_api = \"session\"\n".into();
    let (_config, _d) = run_to_end(&cfg, tmp.path()).await;
    assert_all_have_metadata(&server, 10, "session");
    server.with(|s| {
        assert_eq!(s.record.session_metadata_assets, 10);
        assert!(s.record.metadata_calls.is_empty());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_project_id_stops_uploads_with_one_error_and_no_session_while_capture_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.project_id = PROJECT.replace("cd06", "0000");
    cfg.stop_after_frames = 10;
    cfg.drain_on_stop_secs = 4;
    cfg.retry_max_secs = 1;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = d.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "{}", d.log_text());
    let log = d.log_text();
    let refusals = log
        .lines()
        .filter(|l| l.contains("the platform refuses edgecap's credentials or destination"))
        .count();
    assert_eq!(
        refusals, 1,
        "one ERROR, however often it is checked:\n{log}"
    );
    assert!(log.contains("check upload.project_id"), "{log}");
    server.with(|s| {
        assert!(s.record.session_attempts.is_empty());
        assert!(s.assets.is_empty());
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["committed"], 10, "{stats}");
    assert_eq!(stats["pending"]["frames"], 10, "{stats}");
}

/// Two cameras with different groups need separate sessions. With a limit of 4 sessions
/// per 8 s and a 1 s batch age, each set would want 8 sessions per window: the daemon
/// stretches the age to 4 s instead, so the sets share the budget and the limiter never
/// has to hold anything back; `config validate` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_sets_share_the_session_budget_instead_of_stalling_on_the_limiter() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 4.0;
    cfg.batch_max_frames = 500;
    cfg.batch_max_age_secs = 1;
    cfg.cameras.push((
        "cam1".into(),
        vec!["other".into()],
        "site = \"south\"\n".into(),
    ));
    cfg.extra_upload = "session_rate_limit = 4\nsession_rate_window_secs = 8\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let out = std::process::Command::new(crate::support::bin())
        .args(["config", "validate", "--config"])
        .arg(&config)
        .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("2 group set(s)") && said.contains("batches wait up to 4 s"),
        "{said}"
    );
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    tokio::time::sleep(Duration::from_secs(18)).await;
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).await.success());
    let log = d.log_text();
    assert!(log.contains("batch age stretched"), "{log}");
    assert!(
        !log.contains("session rate limit reached"),
        "the limiter had to hold batches back:\n{log}"
    );
    server.with(|s| {
        let t = &s.record.session_attempts;
        assert!(t.len() >= 6, "{} sessions", t.len());
        for (i, start) in t.iter().enumerate() {
            let in_window = t[i..]
                .iter()
                .filter(|x| **x - *start < Duration::from_secs(8))
                .count();
            assert!(in_window <= 4, "{in_window} sessions within 8 s");
        }
        // Both sets were served.
        let cams: std::collections::BTreeSet<String> = s
            .assets
            .values()
            .filter_map(|a| a.custom_metadata["camera"].as_str().map(String::from))
            .collect();
        assert_eq!(cams.len(), 2, "{cams:?}");
    });
}

/// An outage that outlasts a batch's operation timeout, during which the platform cannot
/// be asked about the batch's assets (503s on the lookups): the frames keep their session
/// and are asked about again, not put on the platform a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_platform_cannot_be_asked_about_are_asked_again_not_sent_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        // The operation never ends while the test runs; edgecap gives up on it after 1 s.
        s.faults.operation_delay = Some(Duration::from_secs(3600));
        s.faults.asset_lookup_5xx = 12;
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    cfg.batch_max_frames = 10;
    cfg.operation_timeout_secs = 1;
    let (config, d) = run_to_end(&cfg, tmp.path()).await;
    let log = d.log_text();
    assert_all_have_metadata(&server, 10, "after the outage");
    let puts = puts_per_file(&server);
    assert_eq!(puts.len(), 10, "{puts:?}");
    assert!(
        puts.values().all(|n| *n == 1),
        "a frame was PUT twice: {puts:?}\n{log}"
    );
    server.with(|s| {
        assert!(s.record.duplicates.is_empty(), "{:?}", s.record.duplicates);
        assert_eq!(
            s.record.asset_lookups_refused, 12,
            "every failing lookup was made"
        );
    });
    assert!(
        log.contains("they keep their session and are asked about before they are sent again"),
        "{log}"
    );
    assert!(
        log.contains("asked the platform about frames whose upload was not confirmed"),
        "{log}"
    );
    let stats = queue_stats(&config);
    let c = crate::support::counters::counters(&stats);
    assert_eq!(c["uploaded"], 10, "{stats}");
    assert_eq!(c["resent_after_error"], 0, "{stats}");
    assert_eq!(c["resent_after_crash"], 0, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}
