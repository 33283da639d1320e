//! Test helper for the vivid VM test: presses vivid's "Disconnect" button control on a
//! V4L2 device, which makes the driver behave as if the camera were unplugged (the node
//! goes away, open handles fail) until every handle is closed. Not part of edgecap.
//!
//! usage: vivid_disconnect /dev/video0

#![allow(clippy::print_stderr, missing_docs, reason = "a test helper")]

use v4l::Device;
use v4l::control::{Control, Value};

fn main() -> std::process::ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/video0".to_string());
    let result = (|| -> std::io::Result<()> {
        let dev = Device::with_path(&path)?;
        let ctrl = dev
            .query_controls()?
            .into_iter()
            .find(|c| c.name == "Disconnect")
            .ok_or_else(|| std::io::Error::other("no Disconnect control (not vivid?)"))?;
        dev.set_control(Control {
            id: ctrl.id,
            value: Value::None,
        })
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vivid_disconnect {path}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
