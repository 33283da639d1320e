//! The hand-over between a stream source's reader thread and the capture loop: a slot
//! holding only the newest frame.
//!
//! The reader (a child's stdout, a V4L2 device) runs at the stream's own rate and
//! overwrites the slot; the capture loop takes from it at the configured rate. Frames in
//! between are dropped here, so the producer never blocks on us (a blocked pipe would
//! stall `rpicam-vid`, a camera would run out of buffers). When the reader ends it leaves
//! the reason in the slot for the capture loop to report.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{CaptureError, SourceFrame, Stop};

#[derive(Debug, Default)]
struct Slot {
    frame: Option<SourceFrame>,
    ended: Option<String>,
    /// Frames overwritten before anyone took them.
    overwritten: u64,
}

/// The newest frame of a stream, shared by its reader and the capture loop.
#[derive(Debug, Default)]
pub struct Latest {
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Latest {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the held frame with a newer one.
    pub fn put(&self, frame: SourceFrame) {
        let mut s = self.lock();
        if s.frame.replace(frame).is_some() {
            s.overwritten += 1;
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Marks the stream as ended, with the reason.
    pub fn end(&self, why: String) {
        self.lock().ended.get_or_insert(why);
        self.cv.notify_all();
    }

    /// How many frames were dropped between two takes so far.
    pub fn overwritten(&self) -> u64 {
        self.lock().overwritten
    }

    /// Waits for a frame newer than the last one taken. `Ok(None)` when `stop` is set;
    /// an error when the stream ended or nothing came for `timeout`.
    pub fn take(
        &self,
        stop: &Stop,
        timeout: Duration,
        what: &str,
    ) -> Result<Option<SourceFrame>, CaptureError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(f) = s.frame.take() {
                return Ok(Some(f));
            }
            if let Some(why) = &s.ended {
                return Err(CaptureError::Device(why.clone()));
            }
            if stop.is_set() {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CaptureError::Device(format!(
                    "no frame from {what} for {} s",
                    timeout.as_secs()
                )));
            }
            // Short slices so that a stop is noticed quickly.
            let slice = (deadline - now).min(Duration::from_millis(100));
            s = match self.cv.wait_timeout(s, slice) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}
