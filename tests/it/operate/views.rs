//! The read-only views for a user who does not own the queue: root beside the service's
//! files, or a member of its group. They answer from the files and change nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{TestConfig, free_port, run_to_end};

/// Every file under `dir` with its size and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.modified().unwrap()));
        }
    }
    out
}

/// Makes `dir` not this user's to change: another owner when we are root (as the service's
/// queue is for root), no write permission otherwise.
fn make_foreign(dir: &Path) {
    let root = rustix::process::geteuid().is_root();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.metadata().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
        if root {
            std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
}

fn edgecap(args: &[&str], config: &Path) -> (i32, String) {
    super::edgecap(args, config, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_does_not_own_the_queue_reads_it_without_the_secret_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A platform that is not there: the frames stay queued.
    let mut cfg = TestConfig::nexus(tmp.path(), &format!("http://127.0.0.1:{}", free_port()));
    cfg.stop_after_frames = 12;
    cfg.drain_on_stop_secs = 0;
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    make_foreign(&cfg.queue_dir);
    let before = tree(&cfg.queue_dir);

    let (code, out) = edgecap(&["queue", "stats", "--json"], &config);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["read_only"], true, "{v}");
    assert_eq!(v["on_disk"]["frames"], 12, "{v}");
    assert_eq!(v["counters"]["committed"], 12, "{v}");
    let (code, out) = edgecap(&["queue", "stats"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("read-only view") && out.contains("12 frames"),
        "{out}"
    );

    let (code, out) = edgecap(&["queue", "list", "--json"], &config);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["frames"].as_array().unwrap().len(), 12, "{v}");

    let (code, out) = edgecap(&["status"], &config);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("edgecap is not running"), "{out}");

    // The file alone: no secret read (its variable is unset), no folder checked.
    let (code, out) = edgecap(&["config", "validate", "--offline"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the secret is not read (--offline)"), "{out}");
    // The full check still wants the secret.
    let (code, out) = edgecap(&["config", "validate"], &config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("EDGECAP_TEST_SECRET"), "{out}");

    // Changing it is refused, naming why.
    let (code, out) = edgecap(&["queue", "retry-dead"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("only that user may change it") || out.contains("not writable by this user"),
        "{out}"
    );
    assert_eq!(
        tree(&cfg.queue_dir),
        before,
        "a read-only view changed the queue"
    );
}

#[test]
fn a_systemd_credential_outside_the_service_is_noted_not_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = TestConfig::nexus(tmp.path(), "http://127.0.0.1:9");
    cfg.extra_upload = String::new();
    let text = cfg.render().replace(
        "secret_key_env = \"EDGECAP_TEST_SECRET\"",
        "secret_key_credential = \"secret_key\"",
    );
    let config = tmp.path().join("edgecap.toml");
    std::fs::write(&config, text).unwrap();
    let (code, out) = edgecap(&["config", "validate"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("provided by systemd at start"), "{out}");
    // `run` needs it now, and says where it comes from.
    let (code, out) = edgecap(&["run"], &config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("CREDENTIALS_DIRECTORY is not set"), "{out}");
}
