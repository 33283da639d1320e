//! `config validate --online` against the fake Nexus server: a wrong key, the right one, a
//! placeholder project, a short key, a command source whose program is missing.

use std::path::Path;

use fake_platform::nexus::{FakeNexus, SECRET};

use crate::support::TestConfig;

fn validate_online(config: &Path) -> (i32, String) {
    super::edgecap(&["config", "validate", "--online"], config, Some(SECRET))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_online_asks_the_platform_and_refuses_what_cannot_work() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    let config = tmp.path().join("edgecap.toml");
    let write = |text: String| std::fs::write(&config, text).unwrap();

    write(cfg.render());
    let (code, out) = validate_online(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("accepted the key") && out.contains("session budget"),
        "{out}"
    );

    let wrong = "ffffffffffffffffffffffffffffffffwrongkey";
    write(cfg.render().replace(
        "secret_key_env = \"EDGECAP_TEST_SECRET\"",
        &format!("secret_key = \"{wrong}\""),
    ));
    let (code, out) = validate_online(&config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("refused") && out.contains("403"), "{out}");
    assert!(!out.contains(wrong), "the key was printed: {out}");

    write(cfg.render().replace(
        "secret_key_env = \"EDGECAP_TEST_SECRET\"",
        "secret_key = \"short\"",
    ));
    let (code, out) = validate_online(&config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("only 5 characters"), "{out}");

    let mut placeholder = TestConfig::nexus(tmp.path(), &server.endpoint());
    placeholder.project_id = "proj_00000000000000000000000000000000".into();
    write(placeholder.render());
    let (code, out) = validate_online(&config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("placeholder"), "{out}");
    let before = server.with(|s| s.record.violations.len());
    assert_eq!(before, 0);

    write(cfg.render().replace(
        "[camera.source]\ntype = \"test_pattern\"\nwidth = 160\nheight = 120\n",
        "[camera.source]\ntype = \"command\"\nargv = [\"no-such-camera-program\", \"-o\", \"-\"]\n",
    ));
    let (code, out) = validate_online(&config);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("\"no-such-camera-program\" is not found on PATH"),
        "{out}"
    );
}
