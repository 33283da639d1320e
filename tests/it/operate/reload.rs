//! SIGHUP: the config read again while capturing. A changed rate and metadata take effect
//! without a gap in the frames, a new camera starts, a broken file is refused and the
//! daemon keeps the config it had.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, TestConfig};

/// Every delivered frame's metadata in `out`, by camera, in sequence order.
fn delivered(out: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_cam: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            by_cam
                .entry(v["camera"].as_str().unwrap().to_string())
                .or_default()
                .push(v);
        }
    }
    for v in by_cam.values_mut() {
        v.sort_by_key(|m| m["customMetadata"]["sequence"].as_i64().unwrap());
    }
    by_cam
}

fn status(cfg: &TestConfig) -> Value {
    serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).unwrap_or_default())
        .unwrap_or(Value::Null)
}

/// Waits until `what` holds of the status file.
async fn wait_status(cfg: &TestConfig, d: &Daemon, what: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(cfg);
        if ok(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; status: {st}\nlog:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_rate_and_metadata_adds_a_camera_and_refuses_a_broken_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(out.clone());
    cfg.fps = 2.0;
    cfg.batch_max_age_secs = 1;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    wait_status(&cfg, &d, "first frames", |s| {
        s["counters"]["committed"].as_u64().unwrap_or(0) >= 3
    })
    .await;

    // A faster camera with other metadata, and a second camera.
    let mut faster = TestConfig {
        fps: 20.0,
        ..cfg.clone()
    };
    faster.cameras[0].2 = "site = \"south\"\nrig = 3\nlabel = \"{device}/{camera}\"\n".into();
    faster.cameras.push((
        "cam1".into(),
        vec!["main".into()],
        "site = \"east\"\n".into(),
    ));
    faster.write(&config);
    d.signal("HUP");
    wait_status(&cfg, &d, "the new rate", |s| {
        s["cameras"][0]["fps"].as_f64().unwrap_or(0.0) > 10.0
            && s["cameras"][1]["name"] == "cam1"
            && s["cameras"][1]["produced"].as_u64().unwrap_or(0) > 5
    })
    .await;
    assert!(d.log_text().contains("config reloaded"), "{}", d.log_text());

    // A broken file: refused, logged, and capture goes on with the config it had.
    std::fs::write(&config, "[[camera]]\nname = \"cam0\"\nfps = \"fast\"\n").unwrap();
    let before = status(&cfg)["counters"]["committed"].as_u64().unwrap();
    d.signal("HUP");
    wait_status(&cfg, &d, "capture after the refused reload", |s| {
        s["counters"]["committed"].as_u64().unwrap_or(0) > before + 40
    })
    .await;
    let log = d.log_text();
    assert!(log.contains("the new config is refused"), "{log}");
    assert!(log.contains("fps"), "the refusal names the key: {log}");
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );

    // cam1 taken out, then back: its frames go on numbering where they stopped, so no
    // filename repeats within the run.
    let mut without = faster.clone();
    without.cameras.pop();
    without.write(&config);
    d.signal("HUP");
    wait_status(&cfg, &d, "cam1 removed", |s| {
        s["cameras"][1]["state"] == "removed"
    })
    .await;
    faster.write(&config);
    d.signal("HUP");
    let produced = status(&cfg)["cameras"][1]["produced"].as_u64().unwrap();
    wait_status(&cfg, &d, "cam1 back", |s| {
        s["cameras"][1]["state"] == "capturing"
            && s["cameras"][1]["produced"].as_u64().unwrap_or(0) > produced + 5
    })
    .await;
    assert_eq!(status(&cfg)["cameras"].as_array().unwrap().len(), 2);

    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    let frames = delivered(&out);
    let cam0 = &frames["cam0"];
    // No gap: the sequence numbers of the one run run from 0 without a hole.
    for (i, m) in cam0.iter().enumerate() {
        assert_eq!(
            m["customMetadata"]["sequence"], i as i64,
            "cam0 frame {i}: {m}"
        );
    }
    let sites: Vec<&str> = cam0
        .iter()
        .map(|m| m["customMetadata"]["site"].as_str().unwrap())
        .collect();
    let switch = sites
        .iter()
        .position(|s| *s == "south")
        .expect("new metadata");
    assert!(switch >= 3, "{sites:?}");
    assert!(
        sites[switch..].iter().all(|s| *s == "south"),
        "once reloaded, every frame has the new metadata: {sites:?}"
    );
    assert!(frames["cam1"].len() > 10);
    for (i, m) in frames["cam1"].iter().enumerate() {
        assert_eq!(
            m["customMetadata"]["sequence"], i as i64,
            "cam1 frame {i}: {m}"
        );
    }
    assert!(
        frames["cam1"]
            .iter()
            .all(|m| m["customMetadata"]["site"] == "east")
    );
}
