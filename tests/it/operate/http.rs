//! `[daemon] http_listen`: `/metrics` parsed with a Prometheus parser (`prometheus-parse`)
//! through a real HTTP client, `/status`, and a camera's newest frame served while it
//! captures; `/status` answered while the queue thread is busy.

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

use crate::support::{Daemon, TestConfig, bin, free_port};

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| value(&s.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_a_snapshot_are_served_while_capturing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(tmp.path().join("out"));
    cfg.fps = 10.0;
    let port = free_port();
    let text = cfg.render().replace(
        "[daemon]\n",
        &format!("[daemon]\nhttp_listen = \"127.0.0.1:{port}\"\n"),
    );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let base = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();

    // Until frames were delivered (the directory sink takes them within a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        if let Ok(r) = client.get(format!("{base}/metrics")).send().await {
            assert_eq!(r.status(), 200);
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            let body = r.text().await.unwrap();
            assert!(body.ends_with("# EOF\n"), "{body}");
            let s = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
            if sample(&s, "edgecap_queue_uploaded_total", &[]).unwrap_or(0.0) >= 5.0 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sample(&scrape, "edgecap_queue_committed_total", &[]).unwrap() >= 5.0);
    assert!(
        sample(
            &scrape,
            "edgecap_camera_frames_total",
            &[("camera", "cam0")]
        )
        .unwrap()
            >= 5.0
    );
    assert!(sample(&scrape, "edgecap_camera_fps", &[("camera", "cam0")]).unwrap() > 1.0);
    assert_eq!(
        sample(
            &scrape,
            "edgecap_camera_state",
            &[("camera", "cam0"), ("state", "capturing")]
        ),
        Some(1.0)
    );
    // Exactly one uploader state is current.
    let current: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "edgecap_uploader_state" && value(&s.value) == 1.0)
        .map(|s| s.labels.get("state").unwrap())
        .collect();
    assert_eq!(current.len(), 1, "{current:?}");
    assert!(["uploading", "idle"].contains(&current[0]), "{current:?}");
    assert_eq!(sample(&scrape, "edgecap_uploader_online", &[]), Some(1.0));
    assert!(sample(&scrape, "edgecap_start_time_seconds", &[]).unwrap() > 1.7e9);
    assert!(
        sample(
            &scrape,
            "edgecap_uploader_last_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        sample(
            &scrape,
            "edgecap_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Every metric has its help, and the counters carry `_total`.
    for s in &scrape.samples {
        assert!(s.metric.starts_with("edgecap_"), "{}", s.metric);
    }
    assert!(scrape.docs.len() > 30, "{:?}", scrape.docs.keys());

    let body = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(st["counters"]["committed"].as_u64().unwrap() >= 5, "{st}");
    assert_eq!(st["cameras"][0]["name"], "cam0");

    let r = client
        .get(format!("{base}/snapshot/cam0.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let jpeg = r.bytes().await.unwrap();
    let img = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (160, 120));
    let r = client
        .get(format!("{base}/snapshot/nope.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
}

/// `/status` does not wait for the queue thread's work: frames delivered show as uploaded
/// while their files are still being deleted (each deletion slowed to 1 s by fault
/// injection, as on an SD card that stalls), not only once all of them are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_delivery_while_the_queue_thread_still_deletes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..6u32 {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([i as u8 * 40, x as u8, y as u8]));
        img.save(folder.join(format!("img{i}.jpg"))).unwrap();
    }
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(tmp.path().join("out"));
    let port = free_port();
    // A camera that never delivers a frame: the queue holds only the six enqueued.
    let text = cfg
        .render()
        .replace(
            "[daemon]\n",
            &format!("[daemon]\nhttp_listen = \"127.0.0.1:{port}\"\n"),
        )
        .replace(
            "type = \"test_pattern\"\nwidth = 160\nheight = 120\n",
            "type = \"command\"\nargv = [\"sleep\", \"3600\"]\n",
        );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["enqueue", "--config"])
        .arg(&config)
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spool = cfg.queue_dir.join("spool");
    let files = || std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(files(), 6);

    let mut d = Daemon::start_env(
        &config,
        &tmp.path().join("log"),
        &[("EDGECAP_FAULT_SLOW_UNLINK_MS", "1000")],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        if let Ok(r) = client.get(&url).send().await {
            let st: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            if st["counters"]["uploaded"].as_u64() == Some(6) {
                break files();
            }
        }
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Six deletions take six seconds: the answer came before they were done.
    assert!(
        left >= 1,
        "status answered only after every file was deleted"
    );
    // And they are all deleted in the end.
    while files() > 0 {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jpg"))
        .count();
    assert_eq!(delivered, 6);
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
}
