//! The Picsellia sink against the fake Picsellia server (`fake_platform::picsellia`, §9 of
//! the protocol notes): frames land with their tags, source, size, standard and custom
//! metadata, through both storage styles; a storage refusal, a lost or failed registration,
//! a processing error, a schema refusal and a refused token each stay with their frame; a
//! crash between upload and registration leaves no duplicate.

use std::collections::BTreeSet;
use std::time::Duration;

use fake_platform::picsellia::{FakePicsellia, FileFault};
use serde_json::Value;

use crate::support::{Daemon, Figures, TestConfig, committed_filenames, queue_stats, run_to_end};

fn config(tmp: &std::path::Path, server: &FakePicsellia, frames: u64) -> TestConfig {
    let mut cfg = TestConfig::picsellia(tmp, &server.endpoint());
    cfg.stop_after_frames = frames;
    cfg.batch_max_frames = 25;
    cfg
}

/// No protocol violation, no duplicate, and exactly `n` data.
fn assert_clean(server: &FakePicsellia, n: usize) {
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

/// `edgecap <args> --config <config>` with the test token; (exit code, stdout, stderr).
fn edgecap(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(crate::support::bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("EDGECAP_TEST_SECRET", fake_platform::picsellia::TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !o.contains(fake_platform::picsellia::TOKEN)
            && !e.contains(fake_platform::picsellia::TOKEN)
    );
    (out.status.code().unwrap_or(-1), o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datalake_commands_list_get_tag_and_delete_from_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    let mut cfg = config(tmp.path(), &server, 6);
    cfg.camera_extra = "tags = [\"site-a\"]".into();
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    assert_clean(&server, 6);
    // A data of another camera, without the tag.
    server.with(|s| {
        let mut other = s.data.values().next().unwrap().clone();
        other.id = "01890000-0000-7000-8000-0000000fffff".into();
        other.filename = "other.jpg".into();
        other.object_name = "data/x-other.jpg".into();
        other.tags.clear();
        s.data.insert(other.id.clone(), other);
    });

    let (code, out, err) = edgecap(&config, &["picsellia", "data", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 7);
    let (code, out, err) = edgecap(
        &config,
        &[
            "picsellia",
            "data",
            "list",
            "--tag",
            "site-a",
            "--limit",
            "4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 data") && !out.contains("other.jpg"),
        "{out}"
    );

    let name = server.with(|s| {
        s.data
            .values()
            .find(|d| !d.tags.is_empty())
            .unwrap()
            .filename
            .clone()
    });
    let (code, out, err) = edgecap(&config, &["picsellia", "data", "get", &name, "--json"]);
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["filename"], Value::from(name.clone()));
    assert_eq!(got["tags"], serde_json::json!(["site-a"]));
    assert_eq!(got["custom_metadata"]["site"], "north");
    let id = got["id"].as_str().unwrap().to_string();

    let (code, out, err) = edgecap(
        &config,
        &["picsellia", "data", "tag", &name, "reviewed", "site-a"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reviewed") && out.contains("site-a"), "{out}");
    server.with(|s| {
        assert_eq!(s.data[&id].tags.len(), 2, "{:?}", s.data[&id].tags);
        assert!(s.tags.contains_key("reviewed"));
    });

    // Delete asks; without a terminal and without --yes nothing is deleted.
    let (code, _, err) = edgecap(&config, &["picsellia", "data", "delete", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    assert!(server.with(|s| s.data.contains_key(&id)));
    let (code, out, err) = edgecap(&config, &["picsellia", "data", "delete", &id, "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    assert!(!server.with(|s| s.data.contains_key(&id)));
    let (code, _, err) = edgecap(&config, &["picsellia", "data", "get", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("no data"), "{err}");
}

/// `config validate` of `text`: (exit code, output).
fn validate(text: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    std::fs::write(
        &path,
        text.replace("QUEUE", &tmp.path().join("q").display().to_string()),
    )
    .unwrap();
    let (code, o, e) = edgecap(&path, &["config", "validate"]);
    (code, o + &e)
}

const BASE: &str = r#"[device]
id = "pi1"

[[camera]]
name = "cam0"
tags = ["{device}", "gate"]
latitude = 48.1
longitude = 11.5
[camera.source]
type = "test_pattern"

[queue]
dir = "QUEUE"

[upload]
sink = "picsellia"

[upload.picsellia]
api_token_env = "EDGECAP_TEST_SECRET"
organization = "acme"
"#;

#[test]
fn config_validate_checks_the_picsellia_keys_naming_key_and_line() {
    let (code, out) = validate(BASE);
    assert_eq!(code, 0, "{out}");
    let cases = [
        (BASE.replace("\n[upload.picsellia]\napi_token_env = \"EDGECAP_TEST_SECRET\"\norganization = \"acme\"\n", "\n"), "upload.picsellia", "table is required"),
        (BASE.replace("api_token_env = \"EDGECAP_TEST_SECRET\"\n", ""), "upload.picsellia.api_token", "the Picsellia API token is required"),
        (BASE.replace("organization = \"acme\"", "organization = \" \""), "line 20: upload.picsellia.organization", "must not be blank"),
        (BASE.replace("longitude = 11.5\n", ""), "line 7: camera[0].latitude", "set longitude too"),
        (BASE.replace("latitude = 48.1", "latitude = 91.0"), "camera[0].latitude", "must be -90 to 90"),
        (BASE.replace("organization = \"acme\"", "organisation = \"acme\""), "line 20: upload.picsellia.organisation", "unknown field"),
        (BASE.replace("sink = \"picsellia\"", "sink = \"directory\"\npath = \"/tmp/x\""), "upload.picsellia", "only valid with sink = \"picsellia\""),
        (BASE.replace("api_token_env = \"EDGECAP_TEST_SECRET\"", "api_token_env = \"EDGECAP_NOT_SET_ANYWHERE\""), "upload.picsellia.api_token_env", "is not set"),
    ];
    for (text, key, words) in cases {
        let (code, out) = validate(&text);
        assert_eq!(code, 2, "{key}: {out}");
        assert!(
            out.contains(key) && out.contains(words),
            "expected `{key}` and `{words}` in:\n{out}"
        );
    }
    // Tags with another sink: a warning, not a failure.
    let nexus = BASE.replace(
        "sink = \"picsellia\"\n\n[upload.picsellia]\napi_token_env = \"EDGECAP_TEST_SECRET\"\norganization = \"acme\"\n",
        "sink = \"nexus\"\nproject_id = \"proj_cd067221d5a6e4007ccbb4afb5966535\"\nsecret_key_env = \"EDGECAP_TEST_SECRET\"\n",
    );
    let (code, out) = validate(&nexus);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("only the picsellia sink sends tags"), "{out}");
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
        committed.len() > 50,
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
