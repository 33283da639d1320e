//! The Picsellia sink against the fake Picsellia server (`fake_platform::picsellia`, §9 of
//! the protocol notes): frames land with their tags, source, size, standard and custom
//! metadata, through both storage styles; a storage refusal, a lost or failed registration,
//! a processing error, a schema refusal and a refused token each stay with their frame; a
//! crash between upload and registration leaves no duplicate (`kills.rs`); the datalake
//! commands, `verify` and config validation are in `ops.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use fake_platform::picsellia::{FakePicsellia, FileFault};
use serde_json::Value;

use crate::support::{Daemon, TestConfig, committed_filenames, queue_stats, run_to_end};

pub(super) fn config(tmp: &std::path::Path, server: &FakePicsellia, frames: u64) -> TestConfig {
    let mut cfg = TestConfig::picsellia(tmp, &server.endpoint());
    cfg.stop_after_frames = frames;
    cfg.batch_max_frames = 25;
    cfg
}

/// No protocol violation, no duplicate, and exactly `n` data.
pub(super) fn assert_clean(server: &FakePicsellia, n: usize) {
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert!(
            s.duplicates().is_empty(),
            "duplicates: {:?}",
            s.duplicates()
        );
        assert_eq!(s.data.len(), n, "data on the platform");
    });
}

mod kills;
mod ops;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_frames_land_with_their_tags_source_size_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    let mut cfg = config(tmp.path(), &server, 200);
    cfg.camera_extra =
        "tags = [\"{device}\", \"site-a\"]\nlatitude = 48.25\nlongitude = 11.5".into();
    cfg.extra_picsellia =
        "data_source = \"{device}-feed\"\nupload_dir = \"edge\"\norganization = \"acme\"\ndatalake = \"default\"".into();
    let (config, d) = run_to_end(&cfg, tmp.path()).await;
    assert_clean(&server, 200);
    server.with(|s| {
        // Each tag and the source found missing once, created once, then cached.
        let mut created = s.record.tags_created.clone();
        created.sort();
        assert_eq!(created, ["site-a", "testdev"]);
        assert_eq!(s.record.sources_created, ["testdev-feed"]);
        let source = s.sources["testdev-feed"].clone();
        let want_tags: BTreeSet<&String> = [&s.tags["testdev"], &s.tags["site-a"]].into();
        for data in s.data.values() {
            let tags: BTreeSet<&String> = data.tags.iter().collect();
            assert_eq!(tags, want_tags, "{}", data.filename);
            assert_eq!(data.data_source_id, Value::from(source.clone()));
            assert_eq!(data.content_type, "image/jpeg");
            assert_eq!(data.meta["width"], 160, "{:?}", data.meta);
            assert_eq!(data.meta["height"], 120);
            assert!(
                data.object_name.starts_with("edge/"),
                "{}",
                data.object_name
            );
            let m = &data.metadata;
            assert_eq!(m["latitude"], 48.25, "{m}");
            assert_eq!(m["longitude"], 11.5, "{m}");
            let at = m["acquired_at"].as_str().unwrap();
            assert_eq!(at.len(), 19, "{at}");
            let c = &data.custom_metadata;
            assert_eq!(c["site"], "north", "{c}");
            assert_eq!(c["label"], "testdev/cam0", "{c}");
            assert_eq!(c["camera"], "cam0", "{c}");
            assert!(c["capture_time_ms"].as_i64().is_some(), "{c}");
            assert!(
                at.starts_with(&c["capture_time"].as_str().unwrap()[..19]),
                "{at} vs {c}"
            );
            // The bytes stored are a whole JPEG.
            let bytes = &s.objects[&data.object_name];
            assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
            assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
            assert_eq!(data.status, "DONE");
        }
        assert!(
            s.record
                .uploads
                .iter()
                .all(|(_, kind, st)| *kind == "form" && *st == 204)
        );
    });
    // Every committed frame is there once, by name.
    let names: BTreeSet<String> = committed_filenames(&d.log_text()).into_iter().collect();
    let have: BTreeSet<String> =
        server.with(|s| s.data.values().map(|d| d.filename.clone()).collect());
    assert_eq!(names, have);
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["uploaded"], 200, "{stats}");
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_storage_gets_a_block_blob_put_without_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("azure").await;
    let (config, _d) = run_to_end(&config(tmp.path(), &server, 30), tmp.path()).await;
    assert_clean(&server, 30);
    server.with(|s| {
        assert_eq!(s.record.uploads.len(), 30);
        assert!(
            s.record
                .uploads
                .iter()
                .all(|(_, kind, st)| *kind == "blob" && *st == 201)
        );
        for d in s.data.values() {
            assert!(s.objects.contains_key(&d.object_name));
        }
    });
    assert_eq!(queue_stats(&config)["counters"]["uploaded"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_403_holds_back_only_its_frame_which_goes_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| s.faults.storage_403 = vec![FileFault::new("-3.jpg", Some(2))]);
    let (config, d) = run_to_end(&config(tmp.path(), &server, 20), tmp.path()).await;
    assert_clean(&server, 20);
    server.with(|s| {
        let refused: Vec<&String> = s
            .record
            .uploads
            .iter()
            .filter(|u| u.2 == 403)
            .map(|u| &u.0)
            .collect();
        assert_eq!(refused.len(), 2, "{:?}", s.record.uploads);
        assert!(refused.iter().all(|o| o.ends_with("-3.jpg")));
        // The others went up once each.
        assert_eq!(s.record.uploads.iter().filter(|u| u.2 < 300).count(), 20);
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["uploaded"], 20, "{stats}");
    assert!(
        d.log_text().contains("storage upload failed"),
        "{}",
        d.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_lost_registration_is_looked_up_and_never_duplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| {
        // Twice refused with a 500 (nothing created) ...
        s.faults.register_5xx = vec![FileFault::new("-2.jpg", Some(2))];
        // ... and once created but answered 503 (the answer lost).
        s.faults.register_5xx_after_create = vec![FileFault::new("-5.jpg", Some(1))];
    });
    let (config, _d) = run_to_end(&config(tmp.path(), &server, 20), tmp.path()).await;
    assert_clean(&server, 20);
    server.with(|s| {
        assert!(s.record.lookups >= 2, "lookups: {}", s.record.lookups);
        // The lost answer was found by lookup: one registration of -5, never a second.
        let five = s
            .record
            .registrations
            .iter()
            .filter(|r| r.0.ends_with("-5.jpg"))
            .count();
        assert_eq!(five, 1, "{:?}", s.record.registrations);
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["uploaded"], 20, "{stats}");
    assert_eq!(stats["dead"]["frames"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_error_marks_only_that_frame_dead_with_the_platform_words() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| {
        s.faults.processing_error = vec![FileFault::new("-4.jpg", None)];
        s.faults.processing_reads = 2;
    });
    let (config, d) = run_to_end(&config(tmp.path(), &server, 12), tmp.path()).await;
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["uploaded"], 11, "{stats}");
    assert_eq!(stats["dead"]["frames"], 1, "{stats}");
    let log = d.log_text();
    assert!(log.contains("could not process this frame"), "{log}");
    let out = std::process::Command::new(crate::support::bin())
        .args(["queue", "list", "--dead", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ended in ERROR") && text.contains("-4.jpg"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_refusal_names_the_key_and_ends_dead_after_max_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| s.faults.schema_refuse_key = Some("rig".into()));
    let mut cfg = config(tmp.path(), &server, 5);
    cfg.extra_upload = "max_attempts = 2\n".into();
    let (config, d) = run_to_end(&cfg, tmp.path()).await;
    let stats = queue_stats(&config);
    assert_eq!(stats["dead"]["frames"], 5, "{stats}");
    assert_eq!(stats["counters"]["uploaded"], 0, "{stats}");
    let log = d.log_text();
    assert!(
        log.contains("refused this frame's metadata (keys: rig)"),
        "{log}"
    );
    assert!(log.contains("extra key not allowed"), "{log}");
    // Two registrations per frame: max_attempts.
    server.with(|s| {
        assert_eq!(
            s.record.registrations.len(),
            10,
            "{:?}",
            s.record.registrations
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_one_error_and_keeps_every_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    let mut cfg = config(tmp.path(), &server, 0);
    cfg.fps = 10.0;
    cfg.extra_picsellia = String::new();
    let text = cfg.render().replace(
        "api_token_env = \"EDGECAP_TEST_SECRET\"",
        "api_token_env = \"WRONG_TOKEN\"",
    );
    let path = tmp.path().join("edgecap.toml");
    std::fs::write(&path, text).unwrap();
    let mut d = Daemon::start_env(
        &path,
        &tmp.path().join("log"),
        &[("WRONG_TOKEN", "not-the-token")],
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    d.signal("TERM");
    let st = d.wait(Duration::from_secs(20)).await;
    assert!(st.success() || st.code() == Some(1), "{st:?}");
    let log = d.log_text();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("token is refused"))
        .count();
    assert_eq!(errors, 1, "{log}");
    assert!(!log.contains("not-the-token"), "the token leaked: {log}");
    server.with(|s| {
        assert!(s.data.is_empty());
        assert!(s.record.refused_tokens >= 1);
    });
    let stats = queue_stats(&path);
    let committed = stats["counters"]["committed"].as_u64().unwrap();
    assert!(committed > 0, "{stats}");
    assert_eq!(
        stats["pending"]["frames"].as_u64().unwrap(),
        committed,
        "{stats}"
    );

    // With the right token the same queue drains.
    let mut cfg2 = cfg.clone();
    cfg2.stop_after_frames = 1;
    let (config, _d) = run_to_end(&cfg2, tmp.path()).await;
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    assert_clean(&server, (committed + 1) as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_a_stale_lookup_and_endless_processing_still_deliver_each_frame_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    server.with(|s| {
        s.faults.hang = Duration::from_secs(4);
        // Two uploads stall past the stall timeout: retried within the frame.
        s.faults.storage_hang = 2;
        // A registration is created but its answer lost, and the lookup does not see it
        // yet: registered again with the same object, the platform answers 208.
        s.faults.register_5xx_after_create = vec![FileFault::new("-1.jpg", Some(1))];
        s.faults.find_stale = 1;
        // A data whose processing never ends.
        s.faults.processing_never = vec![FileFault::new("-2.jpg", None)];
    });
    let cfg = config(tmp.path(), &server, 6);
    let text = cfg
        .render()
        .replace("stall_timeout_secs = 5", "stall_timeout_secs = 1")
        .replace(
            "processing_timeout_secs = 10",
            "processing_timeout_secs = 2",
        );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = d.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "{st:?}: {}", d.log_text());
    assert_clean(&server, 6);
    server.with(|s| {
        let one: Vec<u16> = s
            .record
            .registrations
            .iter()
            .filter(|r| r.0.ends_with("-1.jpg"))
            .map(|r| r.1)
            .collect();
        assert_eq!(one, [503, 208], "{:?}", s.record.registrations);
        let two = s
            .data
            .values()
            .find(|d| d.filename.ends_with("-2.jpg"))
            .unwrap();
        assert_eq!(two.status, "PENDING");
    });
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["uploaded"], 6, "{stats}");
    let log = d.log_text();
    assert!(log.contains("already has this object"), "{log}");
    assert!(log.contains("has not finished processing"), "{log}");
}
