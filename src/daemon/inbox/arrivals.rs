//! Waking the taker when an item lands in the inbox: an inotify watch on the folder for
//! renames into it (the protocol's last step; hidden files being written do not wake it),
//! so that a hand-over's groups are
//! taken as they land instead of up to [`POLL`](super::POLL) later (measured: a 1000-file
//! `enqueue` waited ~150 ms per group for the next poll). Polling stays as the fallback:
//! without inotify (no watches left, a filesystem without it) the taker polls as before,
//! and a missed or overflowed event costs one poll interval, never an item.
//!
//! Hand-written over rustix's inotify and poll rather than the `notify` crate: one watch
//! on one folder, waited for on the taker's own thread with a timeout, is two system
//! calls; `notify` brings a thread and a channel of its own for it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::inotify;
use tracing::debug;

use crate::capture::Stop;

/// How often a wait looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The inbox's inotify watch, if one could be set up.
pub(super) struct Arrivals {
    fd: Option<OwnedFd>,
}

impl Arrivals {
    /// Watches `inbox`; without inotify the waits are plain timeouts.
    pub(super) fn new(inbox: &Path) -> Self {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .and_then(|fd| {
                inotify::add_watch(&fd, inbox, inotify::WatchFlags::MOVED_TO).map(|_| fd)
            });
        match fd {
            Ok(fd) => Self { fd: Some(fd) },
            Err(e) => {
                debug!(inbox = %inbox.display(), error = %e,
                    "no inotify watch on the inbox; polling it");
                Self { fd: None }
            }
        }
    }

    /// Waits until something lands in the inbox, `wait` has passed, or `stop` is set;
    /// true when stopped.
    pub(super) fn wait(&self, stop: &Stop, wait: Duration) -> bool {
        let Some(fd) = &self.fd else {
            return stop.wait_until(Instant::now() + wait);
        };
        let end = Instant::now() + wait;
        loop {
            if stop.is_set() {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let slice = rustix::event::Timespec::try_from(left.min(STOP_CHECK)).ok();
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            match poll(&mut fds, slice.as_ref()) {
                Ok(0) | Err(rustix::io::Errno::INTR) => {}
                Ok(_) => {
                    drain(fd);
                    return stop.is_set();
                }
                Err(_) => return stop.wait_until(end),
            }
        }
    }
}

/// Reads the pending events (their content does not matter: the taker lists the folder).
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_rename_into_the_inbox_ends_the_wait_and_nothing_else_does() {
        let tmp = tempfile::tempdir().unwrap();
        let arrivals = Arrivals::new(tmp.path());
        assert!(arrivals.fd.is_some(), "inotify is there on Linux");
        let stop = Stop::new();
        // Nothing lands: the whole wait passes.
        let t = Instant::now();
        assert!(!arrivals.wait(&stop, Duration::from_millis(150)));
        assert!(t.elapsed() >= Duration::from_millis(150));
        // A hidden file written (no wake-up), then renamed in, from another thread.
        let dir = tmp.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(dir.join(".x.jpg"), b"x").unwrap();
            std::fs::rename(dir.join(".x.jpg"), dir.join("x.jpg")).unwrap();
        });
        let t = Instant::now();
        assert!(!arrivals.wait(&stop, Duration::from_secs(60)));
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "woken by the arrival"
        );
        writer.join().unwrap();
        // Set stop: the wait ends as stopped.
        stop.set();
        assert!(arrivals.wait(&stop, Duration::from_secs(60)));
    }
}
