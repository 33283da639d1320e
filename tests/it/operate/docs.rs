//! The man pages and completions come from the command-line definition itself.

#[test]
fn edgecap_docs_writes_a_man_page_per_command_and_three_completions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecap-docs"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = |name: &str| std::fs::read_to_string(tmp.path().join("man").join(name)).unwrap();
    let top = man("edgecap.1");
    assert!(
        top.contains("SIGHUP") && top.contains("edgecap\\-status(1)"),
        "{top}"
    );
    assert!(man("edgecap-status.1").contains("\\-\\-watch"));
    assert!(man("edgecap-config-validate.1").contains("\\-\\-online"));
    let bash = std::fs::read_to_string(tmp.path().join("completions/edgecap.bash")).unwrap();
    assert!(
        bash.contains("retry-dead") && bash.contains("--watch"),
        "{bash}"
    );
    for f in ["_edgecap", "edgecap.fish"] {
        let text = std::fs::read_to_string(tmp.path().join("completions").join(f)).unwrap();
        assert!(text.contains("picsellia"), "{f}");
    }
}
