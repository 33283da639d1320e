//! Proof of delivery: receipts written for every delivered frame (across faults and a
//! `kill -9`), `edgecap verify` finding what the platform lost, and the `edgecap nexus`
//! asset commands against the fake server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_platform::nexus::{FakeNexus, PutFault, Scripted};
use serde_json::Value;

use crate::support::{Daemon, TestConfig, bin, queue_stats, run_to_end};

/// `edgecap <args> --config <config>`: (exit code, stdout, stderr); the key never shows.
fn edgecap(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!o.contains(fake_platform::nexus::SECRET) && !e.contains(fake_platform::nexus::SECRET));
    (out.status.code().unwrap_or(-1), o, e)
}

/// The receipts in the queue directory, newest per filename.
fn receipts(queue: &Path) -> BTreeMap<String, edgecap::queue::Receipt> {
    edgecap::queue::read_receipts(queue)
        .into_iter()
        .map(|r| (r.filename.clone(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_match_the_platform_after_faults_and_a_crash_and_verify_finds_every_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        s.faults
            .session_create
            .push_back(Scripted::status(503, "{}"));
        s.faults.put.push(PutFault::new("-3.jpg", 503, Some(1)));
        s.faults.operation_delay = Some(Duration::from_millis(300));
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 10;
    let path = cfg.write(&tmp.path().join("edgecap.toml"));
    // A kill while frames are out with the platform ...
    let mut d = Daemon::start(&path, &tmp.path().join("log1"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.kill9();
    // ... then a run to the end.
    let mut last = cfg.clone();
    last.stop_after_frames = 20;
    let (config, _d) = run_to_end(&last, tmp.path()).await;
    let stats = queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 0, "{stats}");
    let got = receipts(&cfg.queue_dir);
    server.with(|s| {
        let assets: BTreeSet<&String> = s.assets.keys().collect();
        let receipted: BTreeSet<&String> = got.keys().collect();
        assert_eq!(receipted, assets, "one receipt per asset on the platform");
        for (name, r) in &got {
            let a = &s.assets[name];
            assert_eq!(r.bytes, a.size, "{name}");
            assert_eq!(r.crc32c, crc32c::crc32c(&a.bytes), "{name}");
            assert_eq!(r.sink, "nexus");
            assert!(r.session.is_some() && r.operation.is_some(), "{r:?}");
            assert!(r.captured_ms.is_some_and(|c| c <= r.delivered_ms), "{r:?}");
        }
    });
    assert_eq!(
        got.len() as u64,
        stats["counters"]["uploaded"].as_u64().unwrap(),
        "{stats}"
    );

    // A clean platform: verify says so.
    let (code, out, err) = edgecap(&config, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{} ok, 0 missing", got.len())),
        "{out}"
    );

    // The platform loses three frames' worth: one asset deleted, one's metadata dropped,
    // one never there.
    let names: Vec<String> = got.keys().cloned().collect();
    let (deleted, bare, never) = (&names[0], &names[1], &names[2]);
    let (code, _, err) = edgecap(&config, &["nexus", "assets", "delete", deleted, "--yes"]);
    assert_eq!(code, 0, "{err}");
    server.with(|s| {
        s.assets.get_mut(bare).unwrap().custom_metadata = Value::Null;
        s.assets.remove(never);
    });
    let (code, out, _) = edgecap(&config, &["verify", "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let gaps: BTreeMap<String, String> = v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["filename"].as_str().unwrap().to_string(),
                g["finding"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        (deleted.clone(), "missing".to_string()),
        (bare.clone(), "metadata_missing".to_string()),
        (never.clone(), "missing".to_string()),
    ]
    .into();
    assert_eq!(gaps, want);
    // A sample and a window select fewer frames.
    let (_, out, _) = edgecap(&config, &["verify", "--sample", "5", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checked"], 5, "{v}");
    let (code, out, _) = edgecap(&config, &["verify", "--since", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 frame(s) checked"), "{out}");
    // `status` names the last receipt.
    let out = Command::new(bin())
        .args(["queue", "stats", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // A frame receipted just before a kill and delivered again has two receipts.
    let hour: usize = text
        .split(" in the last hour")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(hour >= got.len(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asset_commands_page_get_update_delete_and_count_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 25;
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    assert_eq!(server.with(|s| s.assets.len()), 25);

    // Three pages of 10, followed to the end.
    let lists = server.with(|s| s.record.asset_lists);
    let (code, out, err) = edgecap(
        &config,
        &[
            "nexus", "assets", "list", "--limit", "10", "--all", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["assets"].as_array().unwrap().len(), 25);
    assert!(v["nextPage"].is_null());
    assert_eq!(server.with(|s| s.record.asset_lists) - lists, 3);
    // One page, with the cursor to go on.
    let (_, out, _) = edgecap(&config, &["nexus", "assets", "list", "--limit", "10"]);
    assert!(out.contains("10 asset(s); next page: --page "), "{out}");
    let cursor = out.rsplit("--page ").next().unwrap().trim().to_string();
    let (_, out, _) = edgecap(
        &config,
        &[
            "nexus", "assets", "list", "--limit", "10", "--page", &cursor, "--group", "field",
        ],
    );
    assert!(out.contains("10 asset(s)"), "{out}");

    let name = server.with(|s| s.assets.keys().next().unwrap().clone());
    let (code, out, _) = edgecap(&config, &["nexus", "assets", "get", &name, "--json"]);
    assert_eq!(code, 0);
    let a: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["filename"], Value::from(name.clone()));
    assert_eq!(a["metadata"]["customMetadata"]["site"], "north");
    let id = a["id"].as_str().unwrap().to_string();

    let (code, out, err) = edgecap(
        &config,
        &[
            "nexus",
            "assets",
            "update",
            &id,
            "--status",
            "Review",
            "--metadata",
            "rig=7",
            "--metadata",
            "checked=true",
            "--metadata",
            "who=ops",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Review"), "{out}");
    server.with(|s| {
        let a = &s.assets[&name];
        assert_eq!(a.status, "Review");
        assert_eq!(
            a.custom_metadata,
            serde_json::json!({"rig": 7, "checked": true, "who": "ops"})
        );
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
    });
    let (code, out, err) = edgecap(&config, &["nexus", "groups", "field", "--json"]);
    assert_eq!(code, 0, "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g[0]["group"], "field");
    assert_eq!(g[0]["statistic"]["totalAssets"], 25);
    assert_eq!(g[0]["statistic"]["reviewedAssets"], 1);

    // Delete asks first; a 404 names the asset.
    let (code, _, err) = edgecap(&config, &["nexus", "assets", "delete", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    let (code, _, err) = edgecap(&config, &["nexus", "assets", "delete", &name, "--yes"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = edgecap(&config, &["nexus", "assets", "get", &name]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no asset \"{name}\"")), "{err}");
    assert_eq!(server.with(|s| s.assets.len()), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_folder_sink_by_size_checksum_and_metadata_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(out_dir.clone());
    cfg.stop_after_frames = 8;
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    let (code, out, _) = edgecap(&config, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("8 frame(s) checked: 8 ok"), "{out}");
    let mut jpgs: Vec<std::path::PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    jpgs.sort();
    // One file changed by someone, one metadata file gone.
    let mut bytes = std::fs::read(&jpgs[0]).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&jpgs[0], bytes).unwrap();
    std::fs::remove_file(jpgs[1].with_extension("jpg.json")).unwrap();
    let (code, out, _) = edgecap(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("6 ok, 0 missing, 1 without metadata, 1 mismatched"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_sends_lost_frames_again_from_the_kept_delivered_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    let write = |cfg: &TestConfig, keep: u64| {
        let text = cfg.render().replace(
            "commit_window_ms = 50\n",
            &format!("commit_window_ms = 50\nkeep_delivered_bytes = {keep}\n"),
        );
        let path = cfg.queue_dir.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: &Path, log: &str| {
        let mut d = Daemon::start(path, &tmp.path().join(log));
        async move {
            let st = d.wait(Duration::from_secs(60)).await;
            assert!(st.success(), "{}", d.log_text());
        }
    };
    // Without kept frames (a queue of its own), repair can only say why not.
    let mut bare = cfg.clone();
    bare.queue_dir = tmp.path().join("bare-queue");
    let config = write(&bare, 0);
    run(&config, "log0").await;
    let name = server.with(|s| s.assets.keys().next().unwrap().clone());
    server.with(|s| s.assets.remove(&name));
    let (code, out, _) = edgecap(&config, &["verify", "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("keep_delivered_bytes = 0"), "{out}");

    // With them: two frames lost by the platform are queued again and delivered.
    let config = write(&cfg, 50_000_000);
    run(&config, "log1").await;
    // Two of this queue's frames (the server also has the first queue's).
    let lost: Vec<String> = receipts(&cfg.queue_dir).into_keys().take(2).collect();
    server.with(|s| {
        for n in &lost {
            assert!(s.assets.remove(n).is_some(), "{n}");
        }
    });
    let (code, out, err) = edgecap(&config, &["verify", "--repair"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("2 frame(s) queued again"), "{out}");
    for n in &lost {
        assert!(out.contains(&format!("queued again      {n}")), "{out}");
    }
    let mut again = cfg.clone();
    again.stop_after_frames = 1;
    let config = write(&again, 50_000_000);
    run(&config, "log2").await;
    server.with(|s| {
        for n in &lost {
            assert!(s.assets.contains_key(n), "{n} delivered again");
        }
    });
    // A second verify is clean.
    let (code, out, _) = edgecap(&config, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 11 ok, 0 missing"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_delivered_frames_give_way_before_a_captured_frame_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    let _fs = crate::support::Tmpfs::mount(&disk, "16m");
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(tmp.path().join("out"));
    cfg.queue_dir = disk.join("queue");
    cfg.fps = 100.0;
    cfg.stop_after_frames = 2500;
    // Far more kept than the disk holds.
    let text = cfg.render().replace(
        "commit_window_ms = 50\n",
        "commit_window_ms = 50\nkeep_delivered_bytes = 1000000000\n",
    );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = d.wait(Duration::from_secs(90)).await;
    assert!(st.success(), "{}", d.log_text());
    let stats = queue_stats(&config);
    assert_eq!(stats["counters"]["committed"], 2500, "{stats}");
    assert_eq!(stats["counters"]["uploaded"], 2500, "{stats}");
    assert_eq!(stats["counters"]["dropped_write"], 0, "{stats}");
    let log = d.log_text();
    assert!(log.contains("deleted kept delivered frames"), "{log}");
    let kept = std::fs::read_dir(disk.join("queue").join("delivered"))
        .unwrap()
        .count();
    assert!(kept > 0 && kept < 2500, "{kept} kept");
}
