//! Metered links through the real binary: the bandwidth cap holds on the wire (a lower
//! bound on time, which no machine can beat), and a byte budget holds across kill -9.

use std::time::{Duration, Instant};

use fake_platform::nexus::FakeNexus;

use crate::support::{Daemon, TestConfig};

/// Image bytes the server received in successful PUTs, re-uploads included.
fn put_bytes(server: &FakeNexus) -> u64 {
    server.with(|s| {
        s.record
            .puts
            .iter()
            .filter(|(_, st)| *st < 300)
            .filter_map(|(name, _)| s.assets.get(name).map(|a| a.bytes.len() as u64))
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_cap_holds_for_the_bytes_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 60;
    cfg.fps = 60.0;
    cfg.batch_max_frames = 20;
    cfg.extra_upload = "max_upload_rate = \"400 kbit/s\"\nput_concurrency = 4\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let started = Instant::now();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    assert!(
        d.wait(Duration::from_secs(120)).await.success(),
        "{}",
        d.log_text()
    );
    let took = started.elapsed().as_secs_f64();
    let bytes = put_bytes(&server);
    assert_eq!(server.with(|s| s.assets.len()), 60);
    // 50 kB/s: the bytes cannot have gone faster than that, less the bucket's one chunk
    // per cap (16 KiB).
    let floor = (bytes as f64 - 16_384.0) / 50_000.0;
    assert!(
        took >= floor * 0.95,
        "{bytes} bytes in {took:.2} s: faster than the 400 kbit/s cap allows ({floor:.2} s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_holds_across_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 20.0;
    cfg.batch_max_frames = 5;
    cfg.batch_max_age_secs = 0;
    let budget = 80_000u64;
    cfg.extra_upload = format!("daily_budget = {budget}\n");
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let log = tmp.path().join("log");
    for _ in 0..8 {
        let mut d = Daemon::start(&config, &log);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        d.kill9();
    }
    let mut d = Daemon::start(&config, &log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).unwrap()).unwrap();
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    let bytes = put_bytes(&server);
    let largest = server.with(|s| {
        s.assets
            .values()
            .map(|a| a.bytes.len() as u64)
            .max()
            .unwrap_or(0)
    });
    assert!(bytes > budget / 2, "the budget was used: {bytes} bytes");
    assert!(
        bytes <= budget + largest,
        "{bytes} bytes sent over 9 runs and 8 kill -9s, budget {budget} (+ one frame {largest})"
    );
    assert_eq!(
        st["uploader"]["state"], "budget spent",
        "{}",
        st["uploader"]
    );
    assert!(
        st["backlog_frames"].as_u64().unwrap() > 0,
        "capture goes on: {st}"
    );
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.queue_dir.join("sent")).unwrap()).unwrap();
    assert!(ledger["day_bytes"].as_u64().unwrap() >= bytes, "{ledger}");
}
