//! Each malformed config, through `edgecap config validate`: exit code 2 and a message in
//! plain words naming the key and its line (never a Rust type name).

use super::{BASE, edit, line_of, validate};

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
