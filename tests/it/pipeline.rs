//! End to end through the real binary: test pattern → durable queue → fake Nexus server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use crate::support::{Daemon, TestConfig, queue_stats, sequences_by_run};
use fake_platform::nexus::FakeNexus;
use serde_json::Value;

fn check_builtin_metadata(m: &Value, camera: &str) {
    for k in [
        "capture_time_ms",
        "capture_time",
        "clock_synced",
        "run_id",
        "sequence",
    ] {
        assert!(m.get(k).is_some(), "metadata lacks {k}: {m}");
    }
    assert_eq!(m["device"], "testdev");
    assert_eq!(m["camera"], camera);
    assert_eq!(m["width"], 160);
    assert_eq!(m["height"], 120);
    assert!(m["capture_time_ms"].as_i64().unwrap() > 1_600_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_frames_arrive_byte_identical_with_metadata_groups_and_unique_names() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 200;
    let (config, d) = crate::support::run_to_end(&cfg, tmp.path()).await;

    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert_eq!(
            s.assets.len(),
            200,
            "every frame arrives once, under a unique name"
        );
        assert!(s.record.duplicates.is_empty());
        // Batched: never one session per frame.
        let sessions = s.record.session_sizes.len();
        assert!(sessions <= 20, "{sessions} sessions for 200 frames");
        assert!(s.record.session_sizes.iter().any(|n| *n > 1));
        for a in s.assets.values() {
            assert!(a.filename.starts_with("testdev_cam0_") && a.filename.ends_with(".jpg"));
            assert_eq!(a.mime, "image/jpeg");
            assert_eq!(a.groups, vec!["main".to_string(), "field".to_string()]);
            let m = &a.custom_metadata;
            check_builtin_metadata(m, "cam0");
            assert_eq!(m["site"], "north");
            assert_eq!(m["rig"], 3);
            assert_eq!(m["label"], "testdev/cam0");
            let img = image::load_from_memory(&a.bytes).expect("a valid JPEG");
            assert_eq!((img.width(), img.height()), (160, 120));
        }
        let runs = sequences_by_run(s.assets.values().map(|a| &a.custom_metadata));
        assert_eq!(runs.len(), 1);
        let seqs = runs.values().next().unwrap();
        assert_eq!(*seqs, (0..200).collect::<Vec<i64>>(), "gap-free sequence");
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0);
    assert_eq!(stats["inflight"]["frames"], 0);
    assert_eq!(stats["dead"]["frames"], 0);
    assert_eq!(stats["counters"]["committed"], 200);
    assert_eq!(stats["counters"]["uploaded"], 200);
    let spool: Vec<_> = std::fs::read_dir(tmp.path().join("queue/spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "spool files left behind");
    let out = std::fs::read_to_string(&d.stdout).unwrap();
    assert!(
        out.contains("committed 200 frame(s) and delivered 200"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cameras_deliver_their_own_metadata_and_groups_with_per_frame_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 60;
    cfg.fps = 20.0;
    cfg.fsync = "per_frame".into();
    cfg.cameras = vec![
        (
            "gate".into(),
            vec!["entrance".into()],
            "side = \"left\"\n".into(),
        ),
        (
            "dock".into(),
            vec!["loading".into(), "night".into()],
            "side = \"right\"\nlane = 2\n".into(),
        ),
    ];
    let _ = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        assert_eq!(s.assets.len(), 60);
        let mut per_cam = std::collections::BTreeMap::<String, usize>::new();
        for a in s.assets.values() {
            let cam = a.custom_metadata["camera"].as_str().unwrap().to_string();
            check_builtin_metadata(&a.custom_metadata, &cam);
            match cam.as_str() {
                "gate" => {
                    assert_eq!(a.groups, vec!["entrance"]);
                    assert_eq!(a.custom_metadata["side"], "left");
                    assert!(a.filename.starts_with("testdev_gate_"));
                }
                "dock" => {
                    assert_eq!(a.groups, vec!["loading", "night"]);
                    assert_eq!(a.custom_metadata["side"], "right");
                    assert_eq!(a.custom_metadata["lane"], 2);
                }
                other => panic!("unexpected camera {other}"),
            }
            *per_cam.entry(cam).or_default() += 1;
        }
        assert_eq!(per_cam.len(), 2, "both cameras delivered: {per_cam:?}");
        for seqs in sequences_by_run(s.assets.values().map(|a| &a.custom_metadata)).values() {
            assert_eq!(*seqs, (0..seqs.len() as i64).collect::<Vec<_>>());
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_ten_seconds_and_keeps_unsent_frames_queued() {
    let tmp = tempfile::tempdir().unwrap();
    // No server: nothing can be delivered, so everything committed must stay queued.
    let port = crate::support::free_port();
    let cfg = TestConfig::nexus(tmp.path(), &format!("http://127.0.0.1:{port}"));
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.signal("TERM");
    let t = std::time::Instant::now();
    let st = d.wait(Duration::from_secs(10)).await;
    assert!(st.success(), "exit {st:?}: {}", d.log_text());
    assert!(t.elapsed() < Duration::from_secs(10));
    let committed = crate::support::committed_filenames(&d.log_text()).len() as u64;
    assert!(committed > 10, "capture ran: {committed}");
    let stats = queue_stats(&config);
    assert_eq!(
        stats["pending"]["frames"].as_u64().unwrap(),
        committed,
        "{stats}"
    );
    assert_eq!(stats["counters"]["committed"].as_u64().unwrap(), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_followed_in_the_background_while_the_next_batch_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.operation_delay = Some(Duration::from_secs(3)));
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 60;
    cfg.batch_max_frames = 10;
    let (config, _) = crate::support::run_to_end(&cfg, tmp.path()).await;
    server.with(|s| {
        assert_eq!(s.assets.len(), 60);
        let ops = &s.record.operations;
        assert!(ops.len() >= 6, "{} sessions", ops.len());
        // A session was created while an earlier session's operation was still running.
        let overlapped = ops.iter().any(|(created_i, finished_i)| {
            let finished_i = finished_i.expect("every operation finished");
            ops.iter()
                .any(|(created_j, _)| created_j > created_i && *created_j < finished_i)
        });
        assert!(
            overlapped,
            "operations were followed one after another: {ops:?}"
        );
    });
    assert_eq!(queue_stats(&config)["pending"]["frames"], 0);
}
