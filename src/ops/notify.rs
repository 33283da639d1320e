//! `sd_notify` for `Type=notify` units: `READY=1` once the queue is open and reconciled,
//! `STATUS=` with the backlog, `WATCHDOG=1` only while no loop is stalled
//! ([`super::health`]), `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not under
//! systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// The service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A watchdog ping.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping: half the unit's `WatchdogSec=`, or `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
