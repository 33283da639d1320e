//! Running as a service, with the real binary: the sd_notify protocol on a socket the test
//! binds itself (READY, STATUS, WATCHDOG, STOPPING), watchdog pings stopping when a camera
//! loop hangs, and `edgecap status` / `queue stats` against a live and a stopped daemon.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::bin;

fn config(dir: &Path, extra_daemon: &str) -> std::path::PathBuf {
    let text = format!(
        "[device]\nid = \"svc\"\n[daemon]\nsummary_interval_secs = 1\nstatus_file = {:?}\n{extra_daemon}\n\
         [[camera]]\nname = \"cam0\"\nfps = 5.0\n[camera.source]\ntype = \"test_pattern\"\nwidth = 64\nheight = 48\n\
         [queue]\ndir = {:?}\ncommit_window_ms = 50\n\
         [upload]\nsink = \"directory\"\npath = {:?}\nbatch_max_age_secs = 1\n",
        dir.join("status.json").display().to_string(),
        dir.join("queue").display().to_string(),
        dir.join("out").display().to_string(),
    );
    let p = dir.join("edgecap.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The daemon under a fake service manager: NOTIFY_SOCKET and WATCHDOG_USEC set.
fn start(config: &Path, sock: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", "1000000")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Datagrams received until `until`, each with its arrival time since `t0`.
fn collect(sock: &UnixDatagram, t0: Instant, until: Duration) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while t0.elapsed() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push((
                t0.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

fn edgecap(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn notify_protocol_status_file_and_status_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();

    // Not running yet, and no status file: exit 3 and a clear sentence.
    let (code, out) = edgecap(&["status"], &cfg);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("edgecap is not running"), "{out}");

    let t0 = Instant::now();
    let mut child = start(&cfg, &sock_path, &dir.path().join("log"), &[]);
    let msgs = collect(&sock, t0, Duration::from_secs(4));

    // While it runs: `status` and `queue stats` answer without touching the queue.
    let (code, out) = edgecap(&["status"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("edgecap is running: pid"), "{out}");
    assert!(out.contains("camera cam0:"), "{out}");
    let (code, json) = edgecap(&["status", "--json"], &cfg);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["status"]["state"], "running");
    assert_eq!(v["status"]["pid"], child.id());
    assert!(
        v["status"]["counters"]["committed"].as_u64().unwrap() > 0,
        "{json}"
    );
    let (code, out) = edgecap(&["queue", "stats"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("live, from the daemon's status file"), "{out}");

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let tail = collect(&sock, t0, Duration::from_secs(7));
    assert!(child.wait().unwrap().success());

    // READY first (with a STATUS line), then STATUS updates and watchdog pings.
    let first = &msgs.first().expect("no sd_notify message").1;
    assert!(first.contains("READY=1"), "{first}");
    assert!(
        first.contains("STATUS=") && first.contains("; committed 0, uploaded 0"),
        "{first}"
    );
    let pings = msgs
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count();
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 4 s (every 0.5 s expected)"
    );
    assert!(
        msgs.iter()
            .any(|(_, m)| m.contains("STATUS=uploading; committed") && m.contains("backlog")),
        "{msgs:?}"
    );
    assert!(
        tail.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{tail:?}"
    );

    // Stopped: exit 3, with the last status it wrote.
    let (code, out) = edgecap(&["status"], &cfg);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("edgecap is not running"), "{out}");
    assert!(out.contains("(stopped)"), "{out}");
}

/// Starts a daemon whose loop `stalled` hangs (`fault`: the injection's variable and
/// value, `announced`: its log line) and checks that the watchdog pings stop, the log
/// and `STATUS=` naming the loop.
fn a_hung_loop_stops_the_watchdog_pings(fault: (&str, &str), announced: &str, stalled: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "watchdog_stall_secs = 10");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let log = dir.path().join("log");
    let t0 = Instant::now();
    let mut child = start(&cfg, &sock_path, &log, &[fault]);
    let msgs = collect(&sock, t0, Duration::from_secs(17));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(announced),
        "the test needs `--features fault-injection` (scripts/test sets it):\n{text}"
    );
    let pings: Vec<Duration> = msgs
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    // The loop hangs within ~0.6 s; the stall counts after 10 s of that.
    assert!(
        pings
            .iter()
            .filter(|t| **t < Duration::from_secs(8))
            .count()
            >= 8,
        "pings while healthy: {pings:?}"
    );
    assert!(
        pings.iter().all(|t| *t < Duration::from_secs(13)),
        "pings went on after the stall: {pings:?}"
    );
    assert!(
        text.contains("a loop is stuck; watchdog pings stopped"),
        "{text}"
    );
    assert!(text.contains(stalled), "{text}");
    // STATUS= says so too.
    assert!(
        msgs.iter()
            .any(|(_, m)| m.contains(&format!("STALLED: {stalled}"))),
        "{msgs:?}"
    );
}

#[test]
fn a_hung_camera_loop_stops_the_watchdog_pings() {
    a_hung_loop_stops_the_watchdog_pings(
        ("EDGECAP_FAULT_STALL_CAMERA", "cam0"),
        "fault injection: this camera loop now hangs",
        "camera cam0",
    );
}

#[test]
fn a_hung_inbox_loop_stops_the_watchdog_pings() {
    a_hung_loop_stops_the_watchdog_pings(
        ("EDGECAP_FAULT_STALL_INBOX", "1"),
        "fault injection: the inbox loop now hangs",
        "inbox",
    );
}

/// A secret in the config file, a credential directory, and a series of upload errors
/// whose bodies echo the key: the key's value appears in no output at all, and the
/// world-readable config file holding it is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_appears_in_no_output_and_a_readable_config_is_warned_about() {
    use fake_platform::nexus::{FakeNexus, SECRET, Scripted};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| {
        let echo = format!(r#"{{"code":"InternalServerError","message":"bad key {SECRET}"}}"#);
        for status in [500, 502, 500] {
            s.faults
                .session_create
                .push_back(Scripted::status(status, &echo));
        }
    });
    let mut cfg = crate::support::TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 10;
    let text = cfg.render().replace(
        "secret_key_env = \"EDGECAP_TEST_SECRET\"",
        &format!("secret_key = \"{SECRET}\""),
    );
    assert!(text.contains(SECRET));
    let path = tmp.path().join("edgecap.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let validate = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(
        validate.contains("warning:") && validate.contains("chmod o-r"),
        "{validate}"
    );

    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("bad key ***"),
        "the server's text is logged, masked"
    );
    assert!(stderr.contains("chmod o-r"), "the warning reaches the log");
    let status_file = std::fs::read_to_string(cfg.status_file()).unwrap();
    let (_, status_json) = edgecap(&["status", "--json"], &path);
    let (_, stats) = edgecap(&["queue", "stats", "--json"], &path);
    for (what, text) in [
        ("validate", validate.as_str()),
        ("stdout", &String::from_utf8_lossy(&out.stdout)),
        ("stderr", stderr.as_str()),
        ("status file", status_file.as_str()),
        ("status --json", status_json.as_str()),
        ("queue stats", stats.as_str()),
    ] {
        assert!(!text.contains(SECRET), "the secret leaked into {what}");
        assert!(
            !text.contains(&SECRET[..16]),
            "part of the secret leaked into {what}"
        );
    }
    server.with(|s| assert_eq!(s.assets.len(), 10, "delivered after the errors"));

    // The same key as a systemd credential.
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("secret_key"), format!("{SECRET}\n")).unwrap();
    let text = text.replace(
        &format!("secret_key = \"{SECRET}\""),
        "secret_key_credential = \"secret_key\"",
    );
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
    // Outside systemd: `config validate` notes where the key comes from; `run` needs it.
    let out = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("provided by systemd at start"));
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CREDENTIALS_DIRECTORY is not set"));
}

/// `queue list|export|retry-dead|purge` against a live daemon (read-only ones answer from
/// the spool files; mutating ones refuse) and a stopped one (they repair).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_against_a_live_and_a_stopped_daemon() {
    use fake_platform::nexus::{FakeNexus, PutFault};
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    server.with(|s| s.faults.put.push(PutFault::new("-2.jpg", 400, None)));
    // Live: the platform is unreachable, frames pile up.
    let mut cfg = crate::support::TestConfig::nexus(tmp.path(), "http://127.0.0.1:1");
    cfg.fps = 10.0;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let mut d = crate::support::Daemon::start(&config, &tmp.path().join("log"));
    let t0 = Instant::now();
    while crate::support::queue_stats_live(&cfg).is_none_or(|n| n < 5) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no backlog");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out) = edgecap(&["queue", "list"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(live:"), "{out}");
    let export = tmp.path().join("export");
    let out = Command::new(bin())
        .args(["queue", "export", "--config"])
        .arg(&config)
        .arg(&export)
        .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jpgs: Vec<_> = std::fs::read_dir(&export)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .collect();
    assert!(jpgs.len() >= 5, "{} exported", jpgs.len());
    for j in &jpgs {
        image::load_from_memory(&std::fs::read(j.path()).unwrap()).unwrap();
        let meta = std::fs::read_to_string(j.path().with_extension("jpg.json")).unwrap();
        assert!(meta.contains("\"customMetadata\""), "{meta}");
    }
    for cmd in ["retry-dead", "purge"] {
        let out = Command::new(bin())
            .args(["queue", cmd, "--config"])
            .arg(&config)
            .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd} must refuse a live queue");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stop it first"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());

    // Stopped, against the fake platform that refuses frame -2 for good.
    let mut cfg2 = cfg.clone();
    cfg2.endpoint = Some(server.endpoint());
    cfg2.stop_after_frames = 5;
    cfg2.drain_on_stop_secs = 15;
    let config = cfg2.write(&tmp.path().join("edgecap.toml"));
    let mut d = crate::support::Daemon::start(&config, &tmp.path().join("log2"));
    assert!(d.wait(Duration::from_secs(60)).await.success());
    let (code, out) = edgecap(&["queue", "list", "--dead"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dead") && out.contains("-2.jpg") && out.contains("last error"),
        "{out}"
    );
    let dead_frames = || {
        crate::support::queue_stats(&config)["dead"]["frames"]
            .as_u64()
            .unwrap()
    };
    // A repair command says what it did and leaves no dead frame.
    let repair = |cmd: &str, said: String| {
        let (code, out) = edgecap(&["queue", cmd], &config);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&said), "{out}");
        assert_eq!(dead_frames(), 0, "after {cmd}");
    };
    let dead = dead_frames();
    assert!(dead >= 1);
    repair("retry-dead", format!("{dead} dead frame(s) are queued"));
    // Run again: the refused frames die again; then purge them.
    let mut d = crate::support::Daemon::start(&config, &tmp.path().join("log3"));
    assert!(d.wait(Duration::from_secs(60)).await.success());
    let dead = dead_frames();
    assert!(dead >= 1);
    repair("purge", format!("purged {dead} dead frame(s)"));
}
