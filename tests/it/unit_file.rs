//! The systemd unit: the directives the daemon relies on are there, and
//! `systemd-analyze security --offline=yes` rates its exposure at 2.0 or better
//! (`systemd-analyze` comes from Debian's `systemd` package, which `scripts/test` installs).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/edgecap.service");

#[test]
fn the_unit_has_what_the_daemon_relies_on() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StartLimitBurst=",
        "ExecStartPre=/usr/bin/edgecap config validate",
        "StateDirectory=edgecap",
        "RuntimeDirectory=edgecap",
        "ConfigurationDirectory=edgecap",
        "SupplementaryGroups=video",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "User=edgecap",
        "\nLoadCredential=secret_key:/etc/edgecap/secret_key",
    ] {
        assert!(text.contains(line), "the unit lacks `{line}`");
    }
    // Devices: /dev/video* only.
    let allowed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DeviceAllow="))
        .collect();
    assert_eq!(allowed, ["DeviceAllow=char-video4linux rw"]);
    // The status file lives where RuntimeDirectory= puts it.
    assert!(edgecap_default_status_file().starts_with("/run/edgecap/"));
}

fn edgecap_default_status_file() -> String {
    let tpl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/edgecap.toml"))
        .unwrap();
    tpl.lines()
        .find_map(|l| l.strip_prefix("# status_file = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn systemd_analyze_rates_the_exposure_at_2_or_better() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", UNIT])
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for edgecap.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure score in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
