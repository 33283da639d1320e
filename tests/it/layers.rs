//! Config layers through the real binary: drop-ins in `conf.d/` merged over the main file
//! in name order, environment overrides, errors naming the file and line that set the
//! value, `config print --effective`, and a daemon that runs on the merged config.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::process::{Command, Output};

use crate::support::bin;

const MAIN: &str = r#"[device]
id = "shared-image"

[[camera]]
name = "cam0"
interval_ms = 500

[camera.source]
type = "test_pattern"

[queue]
dir = "QUEUE"

[upload]
sink = "nexus"
project_id = "proj_cd067221d5a6e4007ccbb4afb5966535"
secret_key_env = "EDGECAP_TEST_SECRET"
batch_max_frames = 100
"#;

/// A config folder: the main file and the drop-ins given (name, text).
fn folder(dropins: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("edgecap.toml");
    let queue = tmp.path().join("q").display().to_string();
    std::fs::write(&main, MAIN.replace("QUEUE", &queue)).unwrap();
    let d = tmp.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    for (name, text) in dropins {
        std::fs::write(d.join(name), text.replace("QUEUE", &queue)).unwrap();
    }
    (tmp, main)
}

fn edgecap(main: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).arg("--config").arg(main);
    for k in [
        "EDGECAP_DEVICE_ID",
        "EDGECAP_HTTP_LISTEN",
        "EDGECAP_QUEUE_DIR",
        "EDGECAP_PROJECT_ID",
    ] {
        c.env_remove(k);
    }
    c.env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn drop_ins_merge_in_name_order_and_the_environment_wins_with_every_origin_shown() {
    let (tmp, main) = folder(&[
        // Named so that a plain listing order would put it first: name order decides.
        ("20-device.toml", "[upload]\nbatch_max_frames = 300\n"),
        (
            "10-site.toml",
            "[device]\nid = \"site-a\"\n\n[upload]\nbatch_max_frames = 200\nbatch_max_age_secs = 5\n",
        ),
        ("notes.txt", "not a drop-in: ignored\n"),
        (".hidden.toml", "garbage ["),
    ]);
    let o = edgecap(
        &main,
        &["config", "print", "--effective"],
        &[("EDGECAP_DEVICE_ID", "pi-007")],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let d = tmp.path().join("conf.d").display().to_string();
    // The later drop-in wins over the earlier; untouched keys keep their origin.
    assert!(
        out.contains(&format!("batch_max_frames = 300  # {d}/20-device.toml:2")),
        "{out}"
    );
    assert!(
        out.contains(&format!("batch_max_age_secs = 5  # {d}/10-site.toml:6")),
        "{out}"
    );
    assert!(
        out.contains(&format!("sink = \"nexus\"  # {}:15", main.display())),
        "{out}"
    );
    // The environment wins over every file.
    assert!(
        out.contains("id = \"pi-007\"  # $EDGECAP_DEVICE_ID"),
        "{out}"
    );
    assert!(out.contains("$EDGECAP_DEVICE_ID (sets device.id)"), "{out}");
    assert!(
        !out.contains("notes.txt") && !out.contains(".hidden"),
        "{out}"
    );
    // The merged config is the one that runs: validation sees the device id from the
    // environment.
    let o = edgecap(
        &main,
        &["config", "validate"],
        &[("EDGECAP_DEVICE_ID", "pi-007")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("device pi-007"), "{}", text(&o));
    // Without the override, the drop-in's id.
    let o = edgecap(&main, &["config", "validate"], &[]);
    assert!(text(&o).contains("device site-a"), "{}", text(&o));
}

#[test]
fn a_problem_in_a_drop_in_or_an_override_names_its_file_and_line_or_variable() {
    // An unknown key, a value out of range and a syntax error, each in its own file.
    let (_tmp, main) = folder(&[("10-typo.toml", "\n[upload]\nbatch_max_frame = 3\n")]);
    let o = edgecap(&main, &["config", "validate", "--offline"], &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("conf.d/10-typo.toml: line 3: upload.batch_max_frame: unknown key"),
        "{out}"
    );
    let (_tmp, main) = folder(&[("10-range.toml", "[upload]\nbatch_max_frames = 0\n")]);
    let out = text(&edgecap(&main, &["config", "validate", "--offline"], &[]));
    assert!(
        out.contains("conf.d/10-range.toml: line 2: upload.batch_max_frames:"),
        "{out}"
    );
    let (_tmp, main) = folder(&[
        ("10-ok.toml", "[upload]\nbatch_max_frames = 20\n"),
        ("20-broken.toml", "[upload\nbatch_max_frames = 20\n"),
    ]);
    let out = text(&edgecap(&main, &["config", "validate", "--offline"], &[]));
    assert!(
        out.contains("conf.d/20-broken.toml: line 1:") && out.contains("TOML syntax error"),
        "{out}"
    );
    // A bad value from the environment names the variable.
    let (_tmp, main) = folder(&[]);
    let o = edgecap(
        &main,
        &["config", "validate", "--offline"],
        &[("EDGECAP_DEVICE_ID", "no spaces allowed")],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("$EDGECAP_DEVICE_ID: device.id:"), "{out}");
    // A problem in the main file of a layered config names the main file.
    let (_tmp, main) = folder(&[("10-ok.toml", "[upload]\nbatch_max_frames = 20\n")]);
    let bad = std::fs::read_to_string(&main)
        .unwrap()
        .replace("interval_ms = 500", "interval_ms = 0");
    std::fs::write(&main, bad).unwrap();
    let out = text(&edgecap(&main, &["config", "validate", "--offline"], &[]));
    assert!(
        out.contains(&format!(
            "{}: line 6: camera[0].interval_ms",
            main.display()
        )),
        "{out}"
    );
}

#[test]
fn config_print_masks_secrets_wherever_they_were_set() {
    let secret = "a-very-secret-key-of-the-site-0123456789";
    let (_tmp, main) = folder(&[(
        "50-secret.toml",
        &format!("[upload]\nsecret_key = \"{secret}\"\n"),
    )]);
    // The main file names secret_key_env: take it out so that the drop-in's is the one.
    let m = std::fs::read_to_string(&main)
        .unwrap()
        .replace("secret_key_env = \"EDGECAP_TEST_SECRET\"\n", "");
    std::fs::write(&main, m).unwrap();
    for args in [
        &["config", "print", "--effective"][..],
        &["config", "print"][..],
        &["config", "validate"][..],
    ] {
        let o = edgecap(&main, args, &[]);
        let out = text(&o);
        assert!(o.status.success(), "{args:?}: {out}");
        assert!(!out.contains(secret), "{args:?} printed the secret: {out}");
    }
    let out = text(&edgecap(&main, &["config", "print", "--effective"], &[]));
    assert!(out.contains("secret_key = \"***\"  # "), "{out}");
}

/// A drop-in folder that cannot be listed (here a file in its place; an unreadable folder
/// is the same error) stops the command with its name, rather than running without the
/// values someone put there.
#[test]
fn a_drop_in_folder_that_cannot_be_listed_is_an_error_not_an_empty_folder() {
    let (tmp, main) = folder(&[]);
    let d = tmp.path().join("conf.d");
    std::fs::remove_dir(&d).unwrap();
    std::fs::write(&d, "[upload]\nbatch_max_frames = 20\n").unwrap();
    let o = edgecap(&main, &["config", "validate", "--offline"], &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("cannot read config file {}", d.display())),
        "{out}"
    );
    // No folder at all: no drop-ins, no error.
    std::fs::remove_file(&d).unwrap();
    let o = edgecap(&main, &["config", "validate", "--offline"], &[]);
    assert!(o.status.success(), "{}", text(&o));
}
