//! Config files through the real binary: the template, validation messages, exit codes.
//! `malformed.rs` holds the table of broken configs and the message each must give.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod malformed;

use std::process::Command;

use crate::support::bin;

const BASE: &str = r#"[device]
id = "pi1"

[[camera]]
name = "cam0"
interval_ms = 500

[camera.source]
type = "test_pattern"

[camera.metadata]
site = "north"

[queue]
dir = "QUEUE"

[upload]
sink = "nexus"
project_id = "proj_cd067221d5a6e4007ccbb4afb5966535"
secret_key = "abc123"
"#;

fn validate(text: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let text = text.replace("QUEUE", &tmp.path().join("q").display().to_string());
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env_remove("EDGECAP_UNSET_VAR")
        .output()
        .unwrap();
    assert!(
        !tmp.path().join("q").exists(),
        "validation must not create anything"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// `BASE` with `find` replaced by `replace`.
fn edit(find: &str, replace: &str) -> String {
    assert!(BASE.contains(find), "{find}");
    BASE.replacen(find, replace, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in {text}"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn the_base_config_of_these_tests_is_valid() {
    let (code, out) = validate(BASE);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (1 camera(s), device pi1)"), "{out}");
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let text = edit("interval_ms = 500", "fps = 500.0")
        .replace("site = \"north\"", "tags = [1]")
        .replace(
            "sink = \"nexus\"\n",
            "sink = \"nexus\"\nbatch_max_frames = 0\nput_concurrency = 0\n",
        );
    let (code, out) = validate(&text);
    assert_eq!(code, 2);
    for k in [
        "camera[0].fps",
        "camera[0].metadata.tags",
        "upload.batch_max_frames",
        "upload.put_concurrency",
    ] {
        assert!(out.contains(k), "{k} missing:\n{out}");
    }
    assert!(out.contains("4 problem(s)"), "{out}");
}

#[test]
fn print_default_is_the_shipped_template_byte_for_byte_and_it_validates() {
    let out = Command::new(bin())
        .args(["config", "print-default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let shipped =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgecap.toml")).unwrap();
    assert_eq!(out.stdout, shipped);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("edgecap.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let v = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("EDGECAP_SECRET_KEY", "k")
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn the_demo_config_validates() {
    let v = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn run_with_a_broken_config_exits_2_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let text = edit(
        "sink = \"nexus\"\n",
        "sink = \"nexus\"\nbatch_max_frames = 0\n",
    )
    .replace("QUEUE", &tmp.path().join("q").display().to_string());
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upload.batch_max_frames"));
    assert!(!tmp.path().join("q").exists());
}

#[test]
fn a_missing_config_file_or_bad_usage_exits_2() {
    let out = Command::new(bin())
        .args(["run", "--config", "/nonexistent/edgecap.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/edgecap.toml"));
    let out = Command::new(bin()).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_secret_never_appears_in_validation_output() {
    let text = edit(
        "secret_key = \"abc123\"",
        "secret_key = \"abc123 with space\"",
    );
    let (code, out) = validate(&text);
    assert_eq!(code, 2);
    assert!(!out.contains("abc123"), "{out}");
}

/// Runs `edgecap ARGS` with no `--config`, `EDGECAP_CONFIG` set to `env` (or unset).
fn without_config_flag(args: &[&str], env: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("EDGECAP_CONFIG");
    if let Some(p) = env {
        cmd.env("EDGECAP_CONFIG", p);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn without_config_the_commands_read_the_packaged_path_or_edgecap_config() {
    // The default is the packaged config, for every command.
    let (code, help) = without_config_flag(&["status", "--help"], None);
    assert_eq!(code, 0, "{help}");
    assert!(
        help.contains("[env: EDGECAP_CONFIG=]")
            && help.contains("[default: /etc/edgecap/edgecap.toml]"),
        "{help}"
    );
    if !std::path::Path::new("/etc/edgecap/edgecap.toml").exists() {
        let (code, out) = without_config_flag(&["queue", "stats"], None);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("cannot read config file /etc/edgecap/edgecap.toml"),
            "{out}"
        );
    }
    // EDGECAP_CONFIG names another file; `status` and `queue stats` need no secret: the
    // key's environment variable is not set, and they still answer.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    let text = BASE
        .replace("QUEUE", &tmp.path().join("q").display().to_string())
        .replace(
            "secret_key = \"abc123\"",
            "secret_key_env = \"EDGECAP_TEST_UNSET_KEY\"",
        )
        .replace(
            "[queue]",
            &format!(
                "[daemon]\nstatus_file = {:?}\n\n[queue]",
                tmp.path().join("status.json")
            ),
        );
    std::fs::write(&path, text).unwrap();
    let (code, out) = without_config_flag(&["status"], Some(&path));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("edgecap is not running"), "{out}");
    let (code, out) = without_config_flag(&["queue", "stats", "--json"], Some(&path));
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "idle");
    assert_eq!(v["counters"]["committed"], 0);
    // The commands that send need the key, and say which key is missing.
    let (code, out) = without_config_flag(&["config", "validate"], Some(&path));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("EDGECAP_TEST_UNSET_KEY"), "{out}");
}

#[test]
fn a_built_in_key_left_out_of_builtin_metadata_may_be_set_by_the_camera() {
    let text = edit(
        "interval_ms = 500",
        "interval_ms = 500\nbuiltin_metadata = [\"capture_time\", \"camera\"]",
    )
    .replace("site = \"north\"", "device = \"pi-7\"");
    let (code, out) = validate(&text);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_sink_folder_that_cannot_be_written_is_a_warning_not_a_failure() {
    // It may become writable after start (a mount, a permission fixed); the queue folder
    // on the other hand is required.
    let text = edit(
        "sink = \"nexus\"",
        "sink = \"directory\"\npath = \"/proc/version/out\"",
    )
    .replace(
        "project_id = \"proj_cd067221d5a6e4007ccbb4afb5966535\"\n",
        "",
    )
    .replace("secret_key = \"abc123\"\n", "");
    let (code, out) = validate(&text);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: upload.path (line"), "{out}");
    assert!(out.contains("is not a directory"), "{out}");
    assert!(out.contains("edgecap starts anyway"), "{out}");
}

#[test]
fn every_wrong_key_of_a_table_is_reported_and_a_non_utf8_file_names_line_and_byte() {
    let (code, out) = validate(&BASE.replace(
        "[queue]\n",
        "[queue]\nmax_frames = \"many\"\nmax_bytes = -1\nfsync = \"sometimes\"\n",
    ));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
    for k in ["queue.max_frames", "queue.max_bytes", "queue.fsync"] {
        assert!(
            out.contains(&format!(": {k}: ")),
            "{k} not reported:\n{out}"
        );
    }
    let (code, out) = validate(&BASE.replace("interval_ms = 500", "fps = \"2\""));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("camera[0].fps: must be a number, like 2 or 0.5 (got the string \"2\")"),
        "{out}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    let mut bytes = b"[daemon]\nstatus_file = \"caf".to_vec();
    bytes.extend_from_slice(&[0xe9, b'"', b'\n']);
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args(["config", "validate", "--offline", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("line 2: byte 19 of this line (0xe9) is not UTF-8"),
        "{text}"
    );
}
