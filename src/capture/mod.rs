//! Camera sources and the capture loop.
//!
//! Each camera runs on its own OS thread: it paces itself to the configured interval,
//! asks its [`Source`] for a frame, and hands it to the commit thread through a bounded
//! channel with `try_send`. Capture never waits on the disk or the network: when the
//! channel is full (the SD card stalls), the new frame is dropped and counted. A source
//! that fails is re-opened with backoff; its errors are logged once per state change, not
//! once per attempt, and other cameras are not affected.

mod test_pattern;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::config::{CameraConfig, SourceConfig};
use crate::encode::EncodeError;
use crate::frame::CapturedFrame;
pub use test_pattern::TestPattern;

/// A source failed to deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The device or process failed.
    #[error("{0}")]
    Device(String),
}

/// One frame as a source delivers it.
#[derive(Debug)]
pub struct SourceFrame {
    /// JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Something that produces frames (blocking).
pub trait Source: Send {
    /// The next frame.
    fn next_frame(&mut self) -> Result<SourceFrame, CaptureError>;
}

/// Opens the source a camera is configured with.
pub fn open_source(cam: &CameraConfig) -> Result<Box<dyn Source>, CaptureError> {
    match &cam.source {
        SourceConfig::TestPattern {
            width,
            height,
            jpeg_quality,
        } => Ok(Box::new(TestPattern::new(
            &cam.name,
            *width,
            *height,
            *jpeg_quality,
        ))),
    }
}

/// Counters of one camera's capture loop.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// Frames the source delivered.
    pub produced: AtomicU64,
    /// Frames dropped because the commit channel was full.
    pub dropped_buffer: AtomicU64,
    /// Source errors.
    pub errors: AtomicU64,
}

/// A stop flag that sleeping threads can wait on.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// A new, unset flag.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }
    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Sleeps until `deadline` or until the flag is set; true if it is set.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut g = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *g {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = match self.cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Runs one camera until `stop` is set or the channel closes.
pub fn run_camera(
    index: usize,
    cam: CameraConfig,
    tx: SyncSender<CapturedFrame>,
    stop: Arc<Stop>,
    stats: Arc<CameraStats>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut source: Option<Box<dyn Source>> = None;
    let mut failing = false;
    let mut next = Instant::now();
    let mut buffer_full = false;
    while !stop.is_set() {
        if source.is_none() {
            match open_source(&cam) {
                Ok(s) => {
                    if failing {
                        info!(camera = %cam.name, "camera source is back");
                    }
                    source = Some(s);
                    failing = false;
                    backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(camera = %cam.name, error = %e, "cannot open camera source; retrying with backoff");
                        failing = true;
                    }
                    if stop.wait_until(Instant::now() + backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        if stop.wait_until(next) {
            break;
        }
        let now = Instant::now();
        // Pace to the interval; after a long stall start afresh instead of bursting.
        next = if now.duration_since(next) > cam.interval {
            now + cam.interval
        } else {
            next + cam.interval
        };
        let captured_at = SystemTime::now();
        let Some(src) = source.as_mut() else { continue };
        match src.next_frame() {
            Ok(f) => {
                stats.produced.fetch_add(1, Ordering::Relaxed);
                let frame = CapturedFrame {
                    camera: index,
                    captured_at,
                    jpeg: f.jpeg,
                    width: f.width,
                    height: f.height,
                };
                match tx.try_send(frame) {
                    Ok(()) => buffer_full = false,
                    Err(TrySendError::Full(_)) => {
                        stats.dropped_buffer.fetch_add(1, Ordering::Relaxed);
                        if !buffer_full {
                            warn!(camera = %cam.name,
                                "frame dropped: the disk is not keeping up and the capture buffer is full (counted in dropped_buffer)");
                            buffer_full = true;
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(camera = %cam.name, error = %e, "camera source failed; re-opening it");
                failing = true;
                source = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_full_channel_drops_new_frames_and_counts_them_without_stalling_capture() {
        let cam = CameraConfig {
            name: "cam0".into(),
            source: SourceConfig::TestPattern {
                width: 32,
                height: 32,
                jpeg_quality: 50,
            },
            interval: Duration::from_millis(5),
            groups: vec!["main".into()],
            filename_template: "{run}-{seq}".into(),
            metadata: BTreeMap::new(),
        };
        // Nobody reads: the disk side is stalled.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let stop = Stop::new();
        let stats = Arc::new(CameraStats::default());
        let (s2, st2) = (Arc::clone(&stop), Arc::clone(&stats));
        let h = std::thread::spawn(move || run_camera(0, cam, tx, s2, st2));
        std::thread::sleep(Duration::from_millis(400));
        stop.set();
        h.join().unwrap();
        let produced = stats.produced.load(Ordering::Relaxed);
        let dropped = stats.dropped_buffer.load(Ordering::Relaxed);
        assert!(produced >= 20, "capture kept its pace: {produced} frames");
        assert_eq!(
            dropped,
            produced - 2,
            "all but the two buffered frames were dropped"
        );
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn stop_wakes_a_sleeping_capture_thread_at_once() {
        let stop = Stop::new();
        let s2 = Arc::clone(&stop);
        let t = Instant::now();
        let h = std::thread::spawn(move || s2.wait_until(Instant::now() + Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        stop.set();
        assert!(h.join().unwrap());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
