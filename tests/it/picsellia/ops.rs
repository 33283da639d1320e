//! The Picsellia operator side: the datalake commands, `verify` against the datalake, and
//! `config validate` of the Picsellia keys.

use fake_platform::picsellia::FakePicsellia;
use serde_json::Value;

use super::{assert_clean, config};
use crate::support::run_to_end;

fn edgecap(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(crate::support::bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("EDGECAP_TEST_SECRET", fake_platform::picsellia::TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !o.contains(fake_platform::picsellia::TOKEN)
            && !e.contains(fake_platform::picsellia::TOKEN)
    );
    (out.status.code().unwrap_or(-1), o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datalake_commands_list_get_tag_and_delete_from_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakePicsellia::start("aws").await;
    let mut cfg = config(tmp.path(), &server, 6);
    cfg.camera_extra = "tags = [\"site-a\"]".into();
    let (config, _d) = run_to_end(&cfg, tmp.path()).await;
    assert_clean(&server, 6);
    // A data of another camera, without the tag.
    server.with(|s| {
        let mut other = s.data.values().next().unwrap().clone();
        other.id = "01890000-0000-7000-8000-0000000fffff".into();
        other.filename = "other.jpg".into();
        other.object_name = "data/x-other.jpg".into();
        other.tags.clear();
        s.data.insert(other.id.clone(), other);
    });

    let (code, out, err) = edgecap(&config, &["picsellia", "data", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 7);
    let (code, out, err) = edgecap(
        &config,
        &[
            "picsellia",
            "data",
            "list",
            "--tag",
            "site-a",
            "--limit",
            "4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 data") && !out.contains("other.jpg"),
        "{out}"
    );

    let name = server.with(|s| {
        s.data
            .values()
            .find(|d| !d.tags.is_empty())
            .unwrap()
            .filename
            .clone()
    });
    let (code, out, err) = edgecap(&config, &["picsellia", "data", "get", &name, "--json"]);
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["filename"], Value::from(name.clone()));
    assert_eq!(got["tags"], serde_json::json!(["site-a"]));
    assert_eq!(got["custom_metadata"]["site"], "north");
    let id = got["id"].as_str().unwrap().to_string();

    let (code, out, err) = edgecap(
        &config,
        &["picsellia", "data", "tag", &name, "reviewed", "site-a"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reviewed") && out.contains("site-a"), "{out}");
    server.with(|s| {
        assert_eq!(s.data[&id].tags.len(), 2, "{:?}", s.data[&id].tags);
        assert!(s.tags.contains_key("reviewed"));
    });

    // Receipts name each frame's object name: verify finds them all, then the deleted one.
    let (code, out, err) = edgecap(&config, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("6 frame(s) checked: 6 ok"), "{out}");

    // Delete asks; without a terminal and without --yes nothing is deleted.
    let (code, _, err) = edgecap(&config, &["picsellia", "data", "delete", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    assert!(server.with(|s| s.data.contains_key(&id)));
    let (code, out, err) = edgecap(&config, &["picsellia", "data", "delete", &id, "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    assert!(!server.with(|s| s.data.contains_key(&id)));
    let (code, _, err) = edgecap(&config, &["picsellia", "data", "get", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("no data"), "{err}");
    let (code, out, _) = edgecap(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("5 ok, 1 missing") && out.contains(&name),
        "{out}"
    );
}

/// `config validate` of `text`: (exit code, output).
fn validate(text: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    std::fs::write(
        &path,
        text.replace("QUEUE", &tmp.path().join("q").display().to_string()),
    )
    .unwrap();
    let (code, o, e) = edgecap(&path, &["config", "validate"]);
    (code, o + &e)
}

const BASE: &str = r#"[device]
id = "pi1"

[[camera]]
name = "cam0"
tags = ["{device}", "gate"]
latitude = 48.1
longitude = 11.5
[camera.source]
type = "test_pattern"

[queue]
dir = "QUEUE"

[upload]
sink = "picsellia"

[upload.picsellia]
api_token_env = "EDGECAP_TEST_SECRET"
organization = "acme"
"#;

#[test]
fn config_validate_checks_the_picsellia_keys_naming_key_and_line() {
    let (code, out) = validate(BASE);
    assert_eq!(code, 0, "{out}");
    let cases = [
        (BASE.replace("\n[upload.picsellia]\napi_token_env = \"EDGECAP_TEST_SECRET\"\norganization = \"acme\"\n", "\n"), "upload.picsellia", "table is required"),
        (BASE.replace("api_token_env = \"EDGECAP_TEST_SECRET\"\n", ""), "upload.picsellia.api_token", "the Picsellia API token is required"),
        (BASE.replace("organization = \"acme\"", "organization = \" \""), "line 20: upload.picsellia.organization", "must not be blank"),
        (BASE.replace("longitude = 11.5\n", ""), "line 7: camera[0].latitude", "set longitude too"),
        (BASE.replace("latitude = 48.1", "latitude = 91.0"), "camera[0].latitude", "must be -90 to 90"),
        (BASE.replace("organization = \"acme\"", "organisation = \"acme\""), "line 20: upload.picsellia.organisation", "unknown key `"),
        (BASE.replace("sink = \"picsellia\"", "sink = \"directory\"\npath = \"/tmp/x\""), "upload.picsellia", "only valid with sink = \"picsellia\""),
        (BASE.replace("api_token_env = \"EDGECAP_TEST_SECRET\"", "api_token_env = \"EDGECAP_NOT_SET_ANYWHERE\""), "upload.picsellia.api_token_env", "is not set"),
    ];
    for (text, key, words) in cases {
        let (code, out) = validate(&text);
        assert_eq!(code, 2, "{key}: {out}");
        assert!(
            out.contains(key) && out.contains(words),
            "expected `{key}` and `{words}` in:\n{out}"
        );
    }
    // Tags with another sink: a warning, not a failure.
    let nexus = BASE.replace(
        "sink = \"picsellia\"\n\n[upload.picsellia]\napi_token_env = \"EDGECAP_TEST_SECRET\"\norganization = \"acme\"\n",
        "sink = \"nexus\"\nproject_id = \"proj_cd067221d5a6e4007ccbb4afb5966535\"\nsecret_key_env = \"EDGECAP_TEST_SECRET\"\n",
    );
    let (code, out) = validate(&nexus);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("only the picsellia sink sends tags"), "{out}");
}
