//! Config files through the real binary: the template, validation messages, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

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
fn each_malformed_config_exits_2_naming_the_key_and_its_line() {
    // (config text, key expected in the message, text on the expected line, words expected)
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (edit("[queue]", "[queue"), "queue", "[queue", "syntax error"),
        (
            edit("dir = \"QUEUE\"", "dir = \"/etc/hostname/queue\""),
            "queue.dir",
            "dir = ",
            "is not a directory",
        ),
        (
            edit("site = \"north\"", "site = null"),
            "camera.metadata.site",
            "site = null",
            "TOML has no null value",
        ),
        (
            edit(
                "interval_ms = 500",
                "interval_ms = 500\nbuiltin_metadata = [\"device\", \"nope\"]",
            ),
            "camera[0].builtin_metadata",
            "builtin_metadata",
            "not a built-in key",
        ),
        (
            edit("site = \"north\"", "device = \"pi-7\""),
            "camera[0].metadata.device",
            "device = ",
            "leave it out of builtin_metadata",
        ),
        (
            edit(
                "sink = \"nexus\"",
                "sink = \"nexus\"\nmetadata_api = \"webhook\"",
            ),
            "upload.metadata_api",
            "metadata_api",
            "is not one of",
        ),
        (
            edit("interval_ms = 500", "interval_ms = 500 ms"),
            "camera.interval_ms",
            "interval_ms = 500 ms",
            "syntax error",
        ),
        (
            format!("{BASE}\n[uplod]\nx = 1\n"),
            "uplod",
            "[uplod]",
            "unknown key",
        ),
        (
            edit("dir = ", "max_byte = 5\ndir = "),
            "queue.max_byte",
            "max_byte",
            "unknown key `",
        ),
        (
            edit("[queue]\n", "[queue]\nmax_frames = \"many\"\n"),
            "queue.max_frames",
            "max_frames",
            "must be a whole number",
        ),
        (
            edit("[queue]\n", "[queue]\nmax_bytes = -1\n"),
            "queue.max_bytes",
            "max_bytes",
            "must be a whole number, 0 or more",
        ),
        (
            edit("[queue]\n", "[queue]\nmax_bytes = 10\n"),
            "queue.max_bytes",
            "max_bytes",
            "between 1048576",
        ),
        (
            edit("[queue]\n", "[queue]\non_full = \"drop_random\"\n"),
            "queue.on_full",
            "on_full",
            "is not one of",
        ),
        (
            edit(
                "site = \"north\"",
                "site = \"north\"\n[camera.metadata.extra]\nx = 1",
            ),
            "camera[0].metadata.extra",
            "[camera.metadata.extra]",
            "nested tables are not allowed",
        ),
        (
            edit("site = \"north\"", "tags = [\"a\", \"b\"]"),
            "camera[0].metadata.tags",
            "tags",
            "arrays are not allowed",
        ),
        (
            edit("site = \"north\"", "when = 2024-01-01T00:00:00Z"),
            "camera[0].metadata.when",
            "when",
            "datetimes are not allowed",
        ),
        (
            edit("site = \"north\"", "device = \"x\""),
            "camera[0].metadata.device",
            "device = \"x\"",
            "set by edgecap itself",
        ),
        (
            edit(
                "sink = \"nexus\"\n",
                "sink = \"nexus\"\nbatch_max_frames = 0\n",
            ),
            "upload.batch_max_frames",
            "batch_max_frames",
            "between 1 and 5000",
        ),
        (
            edit(
                "sink = \"nexus\"\n",
                "sink = \"nexus\"\nbatch_max_frames = 6000\n",
            ),
            "upload.batch_max_frames",
            "batch_max_frames",
            "between 1 and 5000",
        ),
        (
            edit(
                "project_id = \"proj_cd067221d5a6e4007ccbb4afb5966535\"\n",
                "",
            ),
            "upload.project_id",
            "[upload]",
            "is required",
        ),
        (
            edit("secret_key = \"abc123\"\n", ""),
            "upload.secret_key",
            "[upload]",
            "secret key is required",
        ),
        (
            edit(
                "secret_key = \"abc123\"\n",
                "secret_key = \"abc123\"\nsecret_key_env = \"X\"\n",
            ),
            "upload.secret_key",
            "secret_key = ",
            "only one",
        ),
        (
            edit(
                "secret_key = \"abc123\"\n",
                "secret_key_file = \"/nonexistent/key\"\n",
            ),
            "upload.secret_key_file",
            "secret_key_file",
            "cannot read secret file",
        ),
        (
            edit(
                "secret_key = \"abc123\"\n",
                "secret_key_env = \"EDGECAP_UNSET_VAR\"\n",
            ),
            "upload.secret_key_env",
            "secret_key_env",
            "is not set",
        ),
        (
            edit(
                "sink = \"nexus\"\n",
                "sink = \"nexus\"\nendpoint = \"not a url\"\n",
            ),
            "upload.endpoint",
            "endpoint",
            "is not a URL",
        ),
        (
            edit(
                "sink = \"nexus\"",
                "sink = \"directory\"\npath = \"/tmp/x\"",
            ),
            "upload.project_id",
            "project_id",
            "only valid with sink = \"nexus\"",
        ),
        (
            edit("sink = \"nexus\"", "sink = \"ftp\""),
            "upload.sink",
            "sink = ",
            "is not one of",
        ),
        (
            edit("interval_ms = 500", "interval_ms = 500\nfps = 2.0"),
            "camera[0].fps",
            "fps",
            "not both",
        ),
        (
            edit("interval_ms = 500", "fps = 0.0"),
            "camera[0].fps",
            "fps",
            "greater than 0",
        ),
        (
            edit(
                "interval_ms = 500",
                "interval_ms = 500\nfilename_template = \"{device}_{run}\"",
            ),
            "camera[0].filename_template",
            "filename_template",
            "must contain {run} and {seq}",
        ),
        (
            edit(
                "interval_ms = 500",
                "interval_ms = 500\nfilename_template = \"{run}-{seq}-{lens}\"",
            ),
            "camera[0].filename_template",
            "filename_template",
            "unknown placeholder {lens}",
        ),
        (
            edit(
                "interval_ms = 500",
                "interval_ms = 500\nfilename_template = \"a/{run}-{seq}\"",
            ),
            "camera[0].filename_template",
            "filename_template",
            "not allowed",
        ),
        (
            edit("type = \"test_pattern\"", "type = \"webcam\""),
            "camera[0].source.type",
            "type = \"webcam\"",
            "is not one of",
        ),
        (
            edit(
                "[camera.source]\ntype = \"test_pattern\"\n",
                "[camera.source]\ntype = \"test_pattern\"\nwidth = 5\n",
            ),
            "camera[0].source.width",
            "width",
            "between 16 and 7680",
        ),
        (
            edit("id = \"pi1\"", "id = \"pi 1\""),
            "device.id",
            "id = \"pi 1\"",
            "not allowed",
        ),
        (
            format!(
                "{BASE}\n[[camera]]\nname = \"cam0\"\n[camera.source]\ntype = \"test_pattern\"\n"
            ),
            "camera[1].name",
            "name = \"cam0\"\n[camera.source]\ntype = \"test_pattern\"\n\n",
            "used twice",
        ),
        (
            edit("[[camera]]", "[camera]"),
            "camera",
            "[camera]",
            "array of tables",
        ),
        (
            edit("interval_ms = 500", "interval_ms = 500\ngroups = []"),
            "camera[0].groups",
            "groups",
            "at least one group",
        ),
        (
            edit(
                "interval_ms = 500",
                "interval_ms = 500\nactive_hours = [\"6-20\"]",
            ),
            "camera[0].active_hours",
            "active_hours",
            "is not a window",
        ),
        (
            edit(
                "type = \"test_pattern\"\n",
                "type = \"test_pattern\"\n[camera.transform]\nrotate_degrees = 45\n",
            ),
            "camera[0].transform.rotate_degrees",
            "rotate_degrees = 45",
            "must be 0, 90, 180 or 270",
        ),
        (
            edit(
                "type = \"test_pattern\"\n",
                "type = \"test_pattern\"\n[camera.change_detection]\nenabled = true\nthreshold_percent = 150.0\n",
            ),
            "camera[0].change_detection.threshold_percent",
            "threshold_percent",
            "between 0 and 100",
        ),
        (
            edit("type = \"test_pattern\"", "type = \"command\"\nargv = []"),
            "camera[0].source.argv",
            "argv",
            "must name a program",
        ),
        (
            edit("type = \"test_pattern\"", "type = \"webcam\""),
            "camera[0].source.type",
            "type = \"webcam\"",
            "v4l2",
        ),
        (
            edit(
                "type = \"test_pattern\"",
                "type = \"command\"\nargv = [\"x\"]\nwidth = 640",
            ),
            "camera[0].source.width",
            "width = 640",
            "unknown key `",
        ),
    ];
    assert!(cases.len() >= 15);
    for (text, key, line_text, words) in &cases {
        let (code, out) = validate(text);
        assert_eq!(code, 2, "exit 2 expected for {key}:\n{out}");
        assert!(out.contains(words), "expected {words:?} for {key}:\n{out}");
        for rust in [
            "u64",
            "u32",
            "f64",
            "i128",
            "usize",
            "a sequence",
            "invalid type",
            "struct Raw",
        ] {
            assert!(
                !out.contains(rust),
                "a Rust word ({rust}) in the message for {key}:\n{out}"
            );
        }
        assert!(!key.is_empty(), "every case names its key");
        assert!(
            out.contains(&format!(": {key}: ")),
            "expected key {key}:\n{out}"
        );
        let line = if *key == "camera[1].name" {
            text.rfind("name = \"cam0\"")
                .map(|at| text[..at].matches('\n').count() + 1)
                .unwrap()
        } else {
            line_of(text, line_text)
        };
        assert!(
            out.contains(&format!("line {line}: ")),
            "expected line {line} for {key}:\n{out}"
        );
    }
    crate::support::Figures {
        case: "malformed configs",
        runs: cases.len() as u64,
        notes: format!(
            "{} configs, each exits 2 naming key and line; `run` with a broken config creates nothing",
            cases.len()
        ),
        ..Default::default()
    }
    .report();
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
