//! Operating a device: the views that need no secret and no write access, `config
//! validate --offline/--online`, the uploader's state in the status, signals, and the
//! HTTP endpoint (`/metrics`, `/status`, `/snapshot`).

mod docs;
mod http;
mod reload;
mod states;
mod validate;
mod views;

use std::path::Path;
use std::process::Command;

/// Runs `edgecap ARGS --config CONFIG` with the secret's variable set to `secret` (unset
/// for `None`) and no systemd credentials; its exit code and its stdout then stderr.
fn edgecap(args: &[&str], config: &Path, secret: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(crate::support::bin());
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY");
    match secret {
        Some(s) => cmd.env("EDGECAP_TEST_SECRET", s),
        None => cmd.env_remove("EDGECAP_TEST_SECRET"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
