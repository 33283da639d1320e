//! Camera sources and the capture loop.
//!
//! Each camera runs on its own OS thread: it paces itself to the configured interval,
//! asks its [`Source`] for a frame, runs it through its [`process::Processor`] (change
//! detection, transforms; nothing at all for plain JPEG passthrough) and hands it to the
//! commit thread through a bounded channel with `try_send`. Capture never waits on the disk
//! or the network: when the channel is full (the SD card stalls), the new frame is dropped
//! and counted. A source that fails is re-opened with backoff; its errors are logged once
//! per state change, not once per attempt, and other cameras are not affected.
//!
//! Stream sources (`v4l2`, `command`) are read continuously by a reader thread of their
//! own ([`stream::Latest`]) and the capture loop takes the newest frame at each tick, so
//! the frames in between are dropped and the pipe or camera never backs up. Outside the
//! camera's `active_hours` the source is closed.

pub mod command;
pub mod mjpeg;
pub mod process;
mod stats;
pub mod stream;
mod test_pattern;
pub mod v4l2;
pub mod v4l2_devices;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use tracing::{info, warn};

use crate::config::{CameraConfig, SourceConfig};
use crate::frame::CapturedFrame;
use crate::ops::health::Beat;
use crate::schedule::{Clock, SystemClock};
use process::{Processed, Processor};
pub use stats::{CameraState, CameraStats};
pub use test_pattern::TestPattern;

/// A source failed to deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] crate::encode::EncodeError),
    /// The device or process failed.
    #[error("{0}")]
    Device(String),
    /// A frame could not be processed.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

/// Uncompressed pixel layouts a camera may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// YUYV 4:2:2, packed.
    Yuyv,
    /// NV12 4:2:0, Y plane then interleaved UV.
    Nv12,
}

/// A frame's pixels as the source delivers them.
#[derive(Debug)]
pub enum Pixels {
    /// A complete JPEG (stored byte-identical when no transform is asked for).
    Jpeg(Vec<u8>),
    /// Decoded RGB8 pixels.
    Rgb(RgbImage),
    /// Uncompressed camera pixels.
    Raw {
        /// Layout.
        format: RawFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// One frame as a source delivers it.
#[derive(Debug)]
pub struct SourceFrame {
    /// The pixels.
    pub pixels: Pixels,
    /// When the frame was read from the device or pipe.
    pub captured_at: SystemTime,
}

/// Something that produces frames (blocking).
pub trait Source: Send {
    /// The next frame; `Ok(None)` when `stop` was set while waiting.
    fn next_frame(&mut self, stop: &Stop) -> Result<Option<SourceFrame>, CaptureError>;
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
        SourceConfig::Command {
            argv,
            max_frame_bytes,
            frame_timeout,
        } => Ok(Box::new(command::CommandSource::spawn(
            &cam.name,
            argv,
            *max_frame_bytes,
            *frame_timeout,
        )?)),
        SourceConfig::V4l2 { .. } => Ok(Box::new(v4l2::V4l2Source::open(cam)?)),
    }
}

/// Captures one frame of `cam` through its source and transforms (`edgecap snapshot`).
/// Change detection and `active_hours` do not apply.
pub fn snapshot(cam: &CameraConfig) -> Result<process::Ready, CaptureError> {
    let mut src = open_source(cam)?;
    let stop = Stop::default();
    let frame = src
        .next_frame(&stop)?
        .ok_or_else(|| CaptureError::Device("stopped".into()))?;
    let mut cam = cam.clone();
    cam.change_detection = None;
    match Processor::new(&cam).process(frame.pixels, Instant::now())? {
        Processed::Keep(r) => Ok(r),
        Processed::Unchanged => Err(CaptureError::Device("no frame kept".into())),
    }
}

/// A stop flag that sleeping threads can wait on. A [`Stop::child`] is set with its
/// parent (one camera stops on its own when a reload removes it, all with the daemon);
/// [`Stop::nudge`] ends the current wait early without stopping (a reload's new config is
/// applied at once, not after a long interval).
#[derive(Debug, Default)]
pub struct Stop {
    /// (set, nudged)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
    children: Mutex<Vec<std::sync::Weak<Stop>>>,
}

impl Stop {
    /// A new, unset flag.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// A flag set when this one is (or by itself).
    pub fn child(&self) -> Arc<Self> {
        let c = Self::new();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&c));
        // Set before the child was registered: the child starts set.
        if self.is_set() {
            c.set();
        }
        c
    }
    /// Sets the flag (and its children's) and wakes every waiter.
    pub fn set(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        self.cv.notify_all();
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for c in children.iter().filter_map(std::sync::Weak::upgrade) {
            c.set();
        }
    }
    /// Ends the current (or next) wait early, without setting the flag.
    pub fn nudge(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    /// Sleeps until `deadline`, until the flag is set (true), or until nudged (false).
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.0 {
                return true;
            }
            if g.1 {
                g.1 = false;
                return false;
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

/// One camera's loop: where its frames go and how it is steered.
pub struct CameraLoop {
    /// The camera's slot in the [`crate::frame::CameraTable`] (frames carry it).
    pub index: usize,
    /// Its config at start.
    pub cam: CameraConfig,
    /// The commit thread's channel.
    pub tx: SyncSender<CapturedFrame>,
    /// Set: the loop ends.
    pub stop: Arc<Stop>,
    /// Its counters and state.
    pub stats: Arc<CameraStats>,
    /// A new config (a reload), applied before the next frame: a changed source is
    /// opened again; rate, schedule, transforms and change detection change in place.
    pub updates: std::sync::mpsc::Receiver<CameraConfig>,
}

/// Runs one camera until `stop` is set or the channel closes. `beat` is marked busy
/// around every call that could hang (opening, reading, processing).
pub fn run_camera(l: CameraLoop, beat: Arc<Beat>) {
    run_camera_with_clock(l, &beat, &SystemClock);
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// [`run_camera`] with the time of day taken from `clock` (for `active_hours`).
pub fn run_camera_with_clock(l: CameraLoop, beat: &Beat, clock: &dyn Clock) {
    let CameraLoop {
        index,
        mut cam,
        tx,
        stop,
        stats,
        updates,
    } = l;
    let mut backoff = BACKOFF_START;
    let mut source: Option<Box<dyn Source>> = None;
    let mut processor = Processor::new(&cam);
    // Set while the source fails; cleared (and "back" logged) at the first good frame.
    let mut failing = false;
    let mut bad_frame_logged = false;
    let mut next = Instant::now();
    let mut buffer_full = false;
    let mut inactive_logged = false;
    while !stop.is_set() {
        while let Ok(new) = updates.try_recv() {
            if new.source != cam.source {
                info!(camera = %cam.name, "source changed by a reload: opening it again");
                let _busy = beat.busy("closing the source");
                source = None;
                backoff = BACKOFF_START;
            }
            if new.transform != cam.transform || new.change_detection != cam.change_detection {
                processor = Processor::new(&new);
            }
            if new.interval != cam.interval {
                info!(camera = %cam.name, interval_ms = new.interval.as_millis() as u64, "capture rate changed by a reload");
                next = Instant::now();
            }
            cam = new;
        }
        if let Some(wait) = cam.active_hours.until_active(&clock.now()) {
            stats.set_state(CameraState::Closed);
            if source.take().is_some() || !inactive_logged {
                info!(camera = %cam.name, next_in_secs = wait.as_secs(),
                    "outside active_hours: camera source closed until the next window");
                inactive_logged = true;
            }
            // Re-check at least every minute (the clock may be set by NTP meanwhile).
            if stop.wait_until(Instant::now() + wait.min(Duration::from_secs(60))) {
                break;
            }
            continue;
        }
        if inactive_logged {
            info!(camera = %cam.name, "active_hours window open: capturing");
            inactive_logged = false;
            next = Instant::now();
        }
        if source.is_none() {
            let opened = {
                let _busy = beat.busy("opening the source");
                open_source(&cam)
            };
            match opened {
                Ok(s) => source = Some(s),
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.set_state(CameraState::Reopening);
                    if !failing {
                        warn!(camera = %cam.name, error = %e, "cannot open camera source; retrying with backoff");
                        failing = true;
                    }
                    if stop.wait_until(Instant::now() + backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
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
        #[cfg(feature = "fault-injection")]
        if std::env::var("EDGECAP_FAULT_STALL_CAMERA").is_ok_and(|v| v == cam.name)
            && stats.produced.load(Ordering::Relaxed) >= 3
        {
            warn!(camera = %cam.name, "fault injection: this camera loop now hangs");
            let _busy = beat.busy("an injected stall (fault-injection build)");
            while !stop.wait_until(Instant::now() + Duration::from_millis(200)) {}
            break;
        }
        let Some(src) = source.as_mut() else { continue };
        let next = {
            let _busy = beat.busy("waiting for a frame");
            src.next_frame(&stop)
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                stats.set_state(CameraState::Reopening);
                if !failing {
                    warn!(camera = %cam.name, error = %e, "camera source failed; re-opening it with backoff");
                    failing = true;
                }
                // Close it (a child is stopped, a device released) before waiting.
                {
                    let _busy = beat.busy("closing the source");
                    source = None;
                }
                if stop.wait_until(Instant::now() + backoff) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if failing {
            info!(camera = %cam.name, "camera source is back");
            failing = false;
        }
        backoff = BACKOFF_START;
        stats.produced.fetch_add(1, Ordering::Relaxed);
        stats.set_state(CameraState::Capturing);
        stats.frame_now();
        let processed = {
            let _busy = beat.busy("processing a frame");
            processor.process(frame.pixels, Instant::now())
        };
        let out = match processed {
            Ok(Processed::Keep(out)) => {
                bad_frame_logged = false;
                out
            }
            Ok(Processed::Unchanged) => {
                stats.skipped_unchanged.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                if !bad_frame_logged {
                    warn!(camera = %cam.name, error = %e,
                        "frame dropped: it could not be processed (counted in bad_frames; logged once until a good frame)");
                    bad_frame_logged = true;
                }
                continue;
            }
        };
        stats.keep_latest(&out.jpeg);
        let frame = CapturedFrame {
            camera: index,
            captured_at: frame.captured_at,
            jpeg: out.jpeg,
            width: out.width,
            height: out.height,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small test-pattern camera capturing every `interval`.
    fn pattern_camera(interval: Duration) -> CameraConfig {
        CameraConfig {
            name: "cam0".into(),
            source: SourceConfig::TestPattern {
                width: 32,
                height: 32,
                jpeg_quality: 50,
            },
            interval,
            groups: vec!["main".into()],
            tags: Vec::new(),
            location: None,
            filename_template: "{run}-{seq}".into(),
            metadata: BTreeMap::new(),
            builtin_metadata: Vec::new(),
            active_hours: Default::default(),
            transform: Default::default(),
            change_detection: None,
        }
    }

    #[test]
    fn a_full_channel_drops_new_frames_and_counts_them_without_stalling_capture() {
        let cam = pattern_camera(Duration::from_millis(5));
        // Nobody reads: the disk side is stalled.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let stop = Stop::new();
        let stats = Arc::new(CameraStats::default());
        let (s2, st2) = (Arc::clone(&stop), Arc::clone(&stats));
        let h = std::thread::spawn(move || {
            run_camera(looped(cam, tx, s2, st2), Arc::new(Beat::new("c")))
        });
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

    /// The loop of camera slot 0 (no updates come).
    fn looped(
        cam: CameraConfig,
        tx: SyncSender<CapturedFrame>,
        stop: Arc<Stop>,
        stats: Arc<CameraStats>,
    ) -> CameraLoop {
        CameraLoop {
            index: 0,
            cam,
            tx,
            stop,
            stats,
            updates: std::sync::mpsc::channel().1,
        }
    }

    #[test]
    fn a_nudge_ends_a_wait_early_and_a_child_stops_with_its_parent() {
        let parent = Stop::new();
        let child = parent.child();
        let far = Instant::now() + Duration::from_secs(60);
        child.nudge();
        assert!(!child.wait_until(far), "nudged: the wait ends, not stopped");
        parent.set();
        assert!(child.wait_until(far));
        assert!(parent.child().is_set(), "a child of a set flag starts set");
    }

    /// A clock stuck at one local time.
    struct Fixed(jiff::Zoned);
    impl Clock for Fixed {
        fn now(&self) -> jiff::Zoned {
            self.0.clone()
        }
    }

    #[test]
    fn outside_active_hours_the_loop_captures_nothing_and_inside_it_does() {
        let mut cam = pattern_camera(Duration::from_millis(10));
        cam.active_hours = crate::schedule::ActiveHours::new(vec![
            crate::schedule::Window::parse("06:00-20:00").unwrap(),
        ]);
        let run = |at: &str| {
            let clock = Fixed(at.parse().unwrap());
            let (tx, rx) = std::sync::mpsc::sync_channel(1000);
            let stop = Stop::new();
            let stats = Arc::new(CameraStats::default());
            let (s2, st2, cam2) = (Arc::clone(&stop), Arc::clone(&stats), cam.clone());
            let h = std::thread::spawn(move || {
                run_camera_with_clock(looped(cam2, tx, s2, st2), &Beat::new("c"), &clock)
            });
            std::thread::sleep(Duration::from_millis(300));
            stop.set();
            h.join().unwrap();
            (
                stats.produced.load(Ordering::Relaxed),
                rx.try_iter().count(),
            )
        };
        assert_eq!(run("2026-06-10T03:00:00[UTC]"), (0, 0), "night: nothing");
        let (produced, sent) = run("2026-06-10T12:00:00[UTC]");
        assert!(
            produced >= 10 && sent as u64 == produced,
            "day: {produced} frames"
        );
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
