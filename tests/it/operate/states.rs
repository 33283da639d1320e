//! The uploader's state in one word and its reason, as `status`, `status --json` and the
//! status file show it: the session limit, a refused key, an outage.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fake_platform::nexus::FakeNexus;
use serde_json::Value;

use crate::support::{Daemon, TestConfig, bin, free_port};

/// `edgecap status --json`'s snapshot.
fn status_json(config: &Path) -> Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["status"].clone()
}

/// `edgecap status`'s text.
fn status_text(config: &Path) -> String {
    let out = Command::new(bin())
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the uploader's state is `word`; returns the snapshot.
async fn wait_for_state(config: &Path, d: &Daemon, word: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status_json(config);
        if st["uploader"]["state"] == word {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "no `{word}` state in 30 s; last: {}\nlog:\n{}",
            st["uploader"],
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ms() -> i64 {
    edgecap::frame::unix_ms(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_shows_as_waiting_until_a_time_with_the_last_success() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 20.0;
    cfg.batch_max_frames = 5;
    cfg.batch_max_age_secs = 1;
    cfg.extra_upload = "session_rate_limit = 1\nsession_rate_window_secs = 120\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = wait_for_state(&config, &d, "waiting").await;
    let u = &st["uploader"];
    assert_eq!(u["reason"], "session limit", "{u}");
    let until = u["until_ms"].as_i64().unwrap();
    assert!(until > now_ms() + 60_000, "{u}");
    assert!(u["last_success_ms"].as_i64().is_some(), "{u}");
    assert!(u["frames_per_min"].as_f64().unwrap() > 0.0, "{u}");
    assert_eq!(st["online"], true, "{st}");
    let text = status_text(&config);
    assert!(
        text.contains("uploader: waiting: session limit until "),
        "{text}"
    );
    assert!(text.contains("camera cam0: capturing, "), "{text}");
    let cam = &st["cameras"][0];
    assert!(cam["fps"].as_f64().unwrap() > 5.0, "{cam}");
    assert!(
        cam["last_frame_ms"].as_i64().unwrap() > now_ms() - 10_000,
        "{cam}"
    );
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_shows_as_refused_since_with_the_error_and_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    let wrong = "ffffffffffffffffffffffffffffffffwrongkey";
    let text = cfg.render().replace(
        "secret_key_env = \"EDGECAP_TEST_SECRET\"",
        &format!("secret_key = \"{wrong}\""),
    );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = wait_for_state(&config, &d, "refused").await;
    let u = &st["uploader"];
    assert_eq!(u["reason"], "key or project (403)", "{u}");
    assert!(u["last_error"].as_str().unwrap().contains("403"), "{u}");
    // The platform answered: online, but refused.
    assert_eq!(st["online"], true, "{st}");
    let text = status_text(&config);
    assert!(
        text.contains("uploader: refused: ") && text.contains(" since "),
        "{text}"
    );
    let file = std::fs::read_to_string(cfg.status_file()).unwrap();
    assert!(
        !text.contains(wrong) && !file.contains(wrong),
        "the key leaked: {text}"
    );
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_as_offline_since_and_heals_to_uploading() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = TestConfig::nexus(tmp.path(), &format!("http://127.0.0.1:{port}"));
    cfg.fps = 10.0;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let st = wait_for_state(&config, &d, "offline").await;
    assert_eq!(st["online"], false, "{st}");
    assert!(st["uploader"]["last_success_ms"].is_null(), "{st}");
    let text = status_text(&config);
    assert!(
        text.contains("uploader: offline: ") && text.contains(" since "),
        "{text}"
    );
    assert!(text.contains("last success: none yet"), "{text}");
    // The platform comes up on that port: the uploader gets there by itself.
    let server = FakeNexus::start_on(port, Default::default()).await;
    let st = wait_for_state(&config, &d, "uploading").await;
    assert_eq!(st["online"], true, "{st}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.with(|s| s.assets.len()) == 0 {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).await.success());
}
