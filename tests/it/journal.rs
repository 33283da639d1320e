//! journald output, captured for real: the test re-runs itself inside a private mount
//! namespace (`unshare --mount`, root), mounts a tmpfs on `/run/systemd`, binds the
//! journal's datagram socket at `/run/systemd/journal/socket`, and runs edgecap with its
//! stderr registered as the journal stream (`JOURNAL_STREAM`), as systemd would. Each
//! datagram is parsed with the native protocol (`KEY=value` lines, or `KEY\n<u64 length>
//! <bytes>\n`) and the priorities and fields are checked.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const HELPER_ENV: &str = "EDGECAP_JOURNAL_HELPER_OUT";

/// Parses one native-protocol datagram.
fn parse(d: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < d.len() {
        let end = d[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(d.len(), |p| i + p);
        let line = &d[i..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            i = end + 1;
        } else {
            // KEY\n, little-endian u64 length, value, \n
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap()) as usize;
            let v = &d[end + 9..end + 9 + len];
            out.insert(key, String::from_utf8_lossy(v).into_owned());
            i = end + 9 + len + 1;
        }
    }
    out
}

/// Inside the namespace: fake journald, run edgecap, write what arrived as JSON lines.
/// Not a test of its own: the test below runs it (with `--ignored`) under `unshare`.
#[test]
#[ignore = "a helper that the journald test runs inside a private mount namespace"]
fn journal_helper_inside_a_mount_namespace() {
    let out = std::env::var_os(HELPER_ENV).expect("run by the journald test");
    let out = Path::new(&out);
    std::fs::create_dir_all("/run/systemd").unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", "/run/systemd"])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on /run/systemd");
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let sock = UnixDatagram::bind("/run/systemd/journal/socket").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stderr_path = out.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = Command::new(crate::support::bin())
        .args(["run", "--config"])
        .arg(out.join("edgecap.toml"))
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info,edgecap::daemon::commit=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            // The client's connection check is an empty datagram (journald discards it).
            if n > 0 {
                lines.push(serde_json::to_string(&parse(&buf[..n])).unwrap());
            }
        } else if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    child.wait().unwrap();
    std::fs::write(out.join("journal.jsonl"), lines.join("\n")).unwrap();
}

#[test]
fn under_systemd_logs_go_to_journald_with_priorities_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An offline Nexus (a closed port) and a tiny budget: frames pile up and the budget
    // drops some (ERROR for the first); a camera whose program does not exist (WARN).
    let cfg = format!(
        "[device]\nid = \"jr\"\n[daemon]\nstop_after_frames = 8\ndrain_on_stop_secs = 1\nsummary_interval_secs = 1\nstatus_file = {:?}\n\
         [[camera]]\nname = \"cam0\"\nfps = 10.0\n[camera.source]\ntype = \"test_pattern\"\nwidth = 64\nheight = 48\n\
         [[camera]]\nname = \"broken\"\n[camera.source]\ntype = \"command\"\nargv = [\"/nonexistent/rpicam-vid\"]\n\
         [queue]\ndir = {:?}\nmax_frames = 3\ncommit_window_ms = 50\n\
         [upload]\nsink = \"nexus\"\nendpoint = \"http://127.0.0.1:1\"\nproject_id = {:?}\nsecret_key = {:?}\nconnect_timeout_secs = 1\n",
        d.join("status.json").display().to_string(),
        d.join("queue").display().to_string(),
        fake_platform::nexus::PROJECT,
        fake_platform::nexus::SECRET,
    );
    std::fs::write(d.join("edgecap.toml"), cfg).unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&me)
        .args([
            "--exact",
            "journal::journal_helper_inside_a_mount_namespace",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, d)
        .output()
        .expect("unshare (util-linux)");
    assert!(
        out.status.success(),
        "the helper failed (needs root for unshare --mount):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(d.join("journal.jsonl")).unwrap();
    let entries: Vec<BTreeMap<String, String>> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() > 10, "{} journal entries", entries.len());
    // Everything went to the journal, nothing to stderr.
    let stderr = std::fs::read_to_string(d.join("stderr")).unwrap();
    assert!(stderr.trim().is_empty(), "stderr got: {stderr}");
    let find = |msg: &str| {
        entries
            .iter()
            .find(|e| e.get("MESSAGE").is_some_and(|m| m.contains(msg)))
            .unwrap_or_else(|| panic!("no journal entry with {msg:?}:\n{text}"))
    };
    for e in &entries {
        assert_eq!(
            e.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("edgecap"),
            "{e:?}"
        );
        assert!(e.contains_key("PRIORITY") && e.contains_key("CODE_FILE"));
        assert!(!e.values().any(|v| v.contains(fake_platform::nexus::SECRET)));
    }
    // INFO → 5 (notice), with structured fields.
    let summary = find("summary");
    assert_eq!(summary["PRIORITY"], "5");
    for f in [
        "PRODUCED",
        "COMMITTED",
        "UPLOADED",
        "QUEUE_DEPTH",
        "BACKLOG_BYTES",
        "ONLINE",
        "DEAD",
    ] {
        assert!(summary.contains_key(f), "summary lacks {f}: {summary:?}");
    }
    // WARN → 4, with the camera and the error as fields of their own.
    let cam = find("cannot open camera source");
    assert_eq!(cam["PRIORITY"], "4");
    assert_eq!(cam["CAMERA"], "broken");
    assert!(cam["ERROR"].contains("/nonexistent/rpicam-vid"), "{cam:?}");
    // ERROR → 3: the first frame the budget dropped.
    assert!(
        entries.iter().any(|e| e["PRIORITY"] == "3"),
        "no ERROR entry:\n{text}"
    );
    // DEBUG → 6, one per frame, with its sequence number.
    let committed = find("frame committed");
    assert_eq!(committed["PRIORITY"], "6");
    assert!(committed.contains_key("FRAME_SEQ"), "{committed:?}");
}
