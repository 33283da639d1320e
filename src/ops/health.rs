//! Liveness of the daemon's blocking loops, for the systemd watchdog.
//!
//! Every loop that can hang (a camera thread in a driver call, the commit thread in an
//! fsync, the uploader in a queue call) holds a [`Beat`]. It marks the beat busy around each
//! such call with [`Beat::busy`]; waiting for the next tick is not busy. The watchdog pings
//! systemd only while no beat has been busy for longer than the stall limit, so a loop stuck
//! in the kernel (a wedged UVC driver, an SD card that stopped answering) gets the service
//! restarted, while a camera that sleeps an hour between frames does not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One loop's busy marker.
#[derive(Debug)]
pub struct Beat {
    name: String,
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 when the current call started; 0 when idle.
    busy_since: AtomicU64,
    /// What the loop is doing while busy (for the log).
    doing: Mutex<&'static str>,
}

/// Marks a beat idle again when dropped.
#[must_use = "the beat is busy only while the guard lives"]
pub struct Busy<'a>(&'a Beat);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Ordering::Relaxed);
    }
}

impl Beat {
    /// A beat named `name` (a camera name, `commit`, `upload`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            doing: Mutex::new(""),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Marks the loop busy with `doing` until the guard is dropped.
    pub fn busy(&self, doing: &'static str) -> Busy<'_> {
        *self.doing.lock().unwrap_or_else(|e| e.into_inner()) = doing;
        self.busy_since.store(self.now_ms(), Ordering::Relaxed);
        Busy(self)
    }

    /// How long the current call has been running, if any.
    pub fn busy_for(&self) -> Option<Duration> {
        let since = self.busy_since.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(self.now_ms().saturating_sub(since)))
    }
}

/// A stalled loop, as the watchdog reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The beat's name.
    pub name: String,
    /// What it was doing.
    pub doing: &'static str,
    /// For how long.
    pub for_secs: u64,
}

/// All beats of a daemon and the stall limit.
#[derive(Debug)]
pub struct Health {
    beats: Mutex<Vec<Arc<Beat>>>,
    limit: Duration,
}

impl Health {
    /// A registry whose loops count as stalled after `limit` in one call.
    pub fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            beats: Mutex::new(Vec::new()),
            limit,
        })
    }

    /// Registers and returns a new beat.
    pub fn beat(&self, name: &str) -> Arc<Beat> {
        let b = Arc::new(Beat::new(name));
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&b));
        b
    }

    /// The first loop busy for longer than the limit, if any.
    pub fn stalled(&self) -> Option<Stall> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.iter().find_map(|b| {
            let t = b.busy_for()?;
            (t > self.limit).then(|| Stall {
                name: b.name.clone(),
                doing: *b.doing.lock().unwrap_or_else(|e| e.into_inner()),
                for_secs: t.as_secs(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_busy_call_is_a_stall_and_idle_time_is_not() {
        let h = Health::new(Duration::from_millis(50));
        let cam = h.beat("cam0");
        let _commit = h.beat("commit");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(h.stalled(), None, "idle for 80 ms is fine");
        {
            let _g = cam.busy("next_frame");
            std::thread::sleep(Duration::from_millis(80));
            let s = h.stalled().unwrap();
            assert_eq!((s.name.as_str(), s.doing), ("cam0", "next_frame"));
        }
        assert_eq!(h.stalled(), None, "the call returned");
    }
}
