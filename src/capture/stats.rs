//! What one camera's loop reports: its counters ([`CameraStats`]), its state
//! ([`CameraState`]), the time of its last frame, its measured rate over the last 30 s,
//! and its newest kept frame (served as `/snapshot/<camera>.jpg`). The loop writes them;
//! the status writer and the HTTP endpoint read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of one camera's capture loop.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// Frames the source delivered.
    pub produced: AtomicU64,
    /// Frames dropped because the commit channel was full.
    pub dropped_buffer: AtomicU64,
    /// Source errors.
    pub errors: AtomicU64,
    /// Frames change detection found unchanged and did not keep.
    pub skipped_unchanged: AtomicU64,
    /// Frames that could not be decoded or encoded (each is logged).
    pub bad_frames: AtomicU64,
    /// Times the source was opened again after a failure.
    pub restarts: AtomicU64,
    /// The loop's state ([`CameraState`] as a number).
    pub state: std::sync::atomic::AtomicU8,
    /// When the source last delivered a frame (Unix ms; 0: never).
    pub last_frame_ms: std::sync::atomic::AtomicI64,
    /// Times of the frames delivered in the last 30 s (for the measured rate).
    recent: Mutex<std::collections::VecDeque<Instant>>,
    /// The newest frame kept (the JPEG the queue got), for `/snapshot/<camera>.jpg`.
    latest: Mutex<Option<Arc<Vec<u8>>>>,
}

/// Where a camera loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CameraState {
    /// Not opened yet.
    Starting = 0,
    /// Delivering frames.
    Capturing = 1,
    /// Its source failed; opened again with backoff.
    Reopening = 2,
    /// Outside its active_hours: source closed.
    Closed = 3,
    /// Taken out of the config by a reload (its counters stay for this run's totals).
    Removed = 4,
}

/// How far back the measured rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(30);

impl CameraStats {
    /// Enters state `s`.
    pub fn set_state(&self, s: CameraState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The state's name.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            1 => "capturing",
            2 => "reopening",
            3 => "closed",
            4 => "removed",
            _ => "starting",
        }
    }

    /// Notes a frame delivered by the source now.
    pub(super) fn frame_now(&self) {
        let now = Instant::now();
        self.last_frame_ms.store(
            crate::frame::unix_ms(std::time::SystemTime::now()),
            Ordering::Relaxed,
        );
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.push_back(now);
        while r
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            r.pop_front();
        }
    }

    /// Frames per second over the last 30 s (or since the first of them).
    pub fn fps(&self) -> f64 {
        let now = Instant::now();
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let n = r
            .iter()
            .filter(|t| now.duration_since(**t) <= RATE_WINDOW)
            .count();
        match r.front() {
            Some(first) if n > 1 => {
                let span = now.duration_since(*first).min(RATE_WINDOW).as_secs_f64();
                if span > 0.0 { n as f64 / span } else { 0.0 }
            }
            _ => 0.0,
        }
    }

    /// The newest frame the camera delivered to the queue (JPEG), if any.
    pub fn latest(&self) -> Option<Arc<Vec<u8>>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn keep_latest(&self, jpeg: &[u8]) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(jpeg.to_vec()));
    }
}
