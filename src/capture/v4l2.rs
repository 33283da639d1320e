//! The `v4l2` source: USB (UVC) webcams through Video4Linux, read with nokhwa.
//!
//! Opening a camera goes in three steps, all on the camera's reader thread (nokhwa's
//! camera handle is not `Send`):
//! 1. **Negotiate** with the `v4l` crate (nokhwa's own V4L2 layer): pick the pixel format
//!    (MJPEG, else YUYV, else NV12, or the configured one), the offered size nearest to the
//!    requested one, and a frame interval whose rate is a whole number, and set them on the
//!    device. Setting the interval first matters: nokhwa 0.10 refuses to open a device
//!    whose *current* interval has a numerator other than 1 ("Framerate not whole number:
//!    25 / 2"), and real cameras report such intervals.
//! 2. **Open** with nokhwa at exactly that format, so nokhwa changes nothing.
//! 3. If nokhwa still refuses (the device offers no whole-number rate, or another quirk),
//!    read the device **directly** with a `v4l` mmap stream instead, and say so in the log.
//!    `EDGECAP_V4L2_DIRECT=1` forces this path (a diagnostic switch, also used by the VM
//!    test to exercise it).
//!
//! MJPEG frames are cut at their end marker (drivers hand out whole buffers with stale
//! bytes after the image) and otherwise passed through untouched; YUYV/NV12 frames are
//! converted and encoded by the camera's processing stage, and only for the frames the
//! capture rate keeps. Finding and describing devices (`edgecap cameras`, the `device`
//! selector) is `v4l2_devices.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use tracing::{info, warn};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC, Fraction};

use super::mjpeg::JpegSplitter;
use super::stream::Latest;
use super::v4l2_devices::{dev_err, rate, resolve};
use super::{CaptureError, Pixels, RawFormat, Source, SourceFrame, Stop};
use crate::config::{CameraConfig, PixelFormat, SourceConfig};

const MJPG: [u8; 4] = *b"MJPG";
const YUYV: [u8; 4] = *b"YUYV";
const NV12: [u8; 4] = *b"NV12";

/// The format set on the device.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    fourcc: [u8; 4],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame interval (seconds per frame as a fraction).
    pub interval: Fraction,
}

impl Negotiated {
    /// The interval's rate, if a whole number.
    pub fn whole_fps(&self) -> Option<u32> {
        let Fraction {
            numerator: n,
            denominator: d,
        } = self.interval;
        (n > 0 && d % n == 0).then(|| d / n)
    }
}

fn nearest_size(dev: &Device, fourcc: FourCC, w: u32, h: u32) -> Option<(u32, u32)> {
    let dist = |(a, b): (u32, u32)| u64::from(a.abs_diff(w)) + u64::from(b.abs_diff(h));
    let mut best: Option<(u32, u32)> = None;
    for s in dev.enum_framesizes(fourcc).ok()? {
        let cand = match s.size {
            FrameSizeEnum::Discrete(d) => (d.width, d.height),
            FrameSizeEnum::Stepwise(st) => {
                let snap = |v: u32, lo: u32, hi: u32, step: u32| {
                    let v = v.clamp(lo, hi);
                    lo + (v - lo) / step.max(1) * step.max(1)
                };
                (
                    snap(w, st.min_width, st.max_width, st.step_width),
                    snap(h, st.min_height, st.max_height, st.step_height),
                )
            }
        };
        if best.is_none_or(|b| dist(cand) < dist(b)) {
            best = Some(cand);
        }
    }
    best
}

/// Picks and sets format, size and rate.
pub fn negotiate(
    dev: &Device,
    path: &Path,
    want: PixelFormat,
    width: u32,
    height: u32,
    fps: u32,
) -> Result<Negotiated, CaptureError> {
    let offered: Vec<[u8; 4]> = dev
        .enum_formats()
        .map_err(|e| dev_err("cannot list formats", path, e))?
        .into_iter()
        .map(|f| f.fourcc.repr)
        .collect();
    let order: &[[u8; 4]] = match want {
        PixelFormat::Auto => &[MJPG, YUYV, NV12],
        PixelFormat::Mjpeg => &[MJPG],
        PixelFormat::Yuyv => &[YUYV],
        PixelFormat::Nv12 => &[NV12],
    };
    // The preferred format at the nearest size; a later format only if it is nearer.
    let mut pick: Option<([u8; 4], (u32, u32))> = None;
    let dist = |(a, b): (u32, u32)| u64::from(a.abs_diff(width)) + u64::from(b.abs_diff(height));
    for f in order.iter().filter(|f| offered.contains(f)) {
        if let Some(size) = nearest_size(dev, FourCC::new(f), width, height)
            && pick.is_none_or(|(_, s)| dist(size) < dist(s))
        {
            pick = Some((*f, size));
        }
    }
    let Some((fourcc, (w, h))) = pick else {
        let names: Vec<String> = offered
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        return Err(CaptureError::Device(format!(
            "{}: offers none of the formats asked for ({want:?}); it has {}",
            path.display(),
            names.join(", ")
        )));
    };
    let set = dev
        .set_format(&Format::new(w, h, FourCC::new(&fourcc)))
        .map_err(|e| dev_err("cannot set the format", path, e))?;
    // Whole-number rates offered at that size; the smallest one ≥ fps, else the largest.
    let mut whole: Vec<(u32, Fraction)> = Vec::new();
    let mut any: Option<Fraction> = None;
    for i in dev
        .enum_frameintervals(set.fourcc, set.width, set.height)
        .unwrap_or_default()
    {
        let fracs = match i.interval {
            FrameIntervalEnum::Discrete(d) => vec![d],
            FrameIntervalEnum::Stepwise(s) => vec![s.min, s.max],
        };
        for f in fracs {
            any.get_or_insert(f);
            if f.numerator > 0 && f.denominator % f.numerator == 0 {
                whole.push((f.denominator / f.numerator, f));
            }
        }
    }
    whole.sort_by_key(|(r, _)| *r);
    let chosen = whole
        .iter()
        .find(|(r, _)| *r >= fps)
        .or(whole.last())
        .map(|(r, _)| Fraction::new(1, *r))
        .or(any);
    let interval = match chosen {
        Some(f) => dev
            .set_params(&Parameters::new(f))
            .map(|p| p.interval)
            .map_err(|e| dev_err("cannot set the frame interval", path, e))?,
        None => dev
            .params()
            .map(|p| p.interval)
            .map_err(|e| dev_err("cannot read the frame interval", path, e))?,
    };
    Ok(Negotiated {
        fourcc: set.fourcc.repr,
        width: set.width,
        height: set.height,
        interval,
    })
}

fn frame_format(fourcc: [u8; 4]) -> Option<FrameFormat> {
    match &fourcc {
        b"MJPG" => Some(FrameFormat::MJPEG),
        b"YUYV" => Some(FrameFormat::YUYV),
        b"NV12" => Some(FrameFormat::NV12),
        _ => None,
    }
}

/// Turns one driver buffer into the frame we keep.
fn to_frame(n: &Negotiated, data: &[u8], splitter: &mut JpegSplitter) -> Option<SourceFrame> {
    let captured_at = SystemTime::now();
    let pixels = match &n.fourcc {
        b"MJPG" => {
            splitter.push(data);
            let jpeg = splitter.pop();
            splitter.finish();
            while splitter.pop().is_some() {}
            Pixels::Jpeg(jpeg?)
        }
        b"YUYV" | b"NV12" => Pixels::Raw {
            format: if n.fourcc == YUYV {
                RawFormat::Yuyv
            } else {
                RawFormat::Nv12
            },
            width: n.width,
            height: n.height,
            data: data.to_vec(),
        },
        _ => return None,
    };
    Some(SourceFrame {
        pixels,
        captured_at,
    })
}

/// A V4L2 camera being read by its reader thread.
pub struct V4l2Source {
    latest: Arc<Latest>,
    halt: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
    what: String,
}

/// How a camera was opened, reported back by the reader thread.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The format in use.
    pub format: Negotiated,
    /// Whether nokhwa reads it (false: the direct v4l path).
    pub via_nokhwa: bool,
}

impl V4l2Source {
    /// Opens the camera `cam` configures.
    pub fn open(cam: &CameraConfig) -> Result<Self, CaptureError> {
        let SourceConfig::V4l2 {
            device,
            width,
            height,
            device_fps,
            format,
            frame_timeout,
        } = &cam.source
        else {
            return Err(CaptureError::Device("not a v4l2 source".into()));
        };
        let (index, path) = resolve(device)?;
        let fps = device_fps.unwrap_or_else(|| {
            // The capture rate rounded up: reading faster only burns CPU.
            (1.0 / cam.interval.as_secs_f64()).ceil().clamp(1.0, 240.0) as u32
        });
        let (want, w, h) = (*format, *width, *height);
        let latest = Arc::new(Latest::default());
        let halt = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<Opened, CaptureError>>();
        let (l2, h2, p2, name) = (
            Arc::clone(&latest),
            Arc::clone(&halt),
            path.clone(),
            cam.name.clone(),
        );
        let force_direct = std::env::var_os("EDGECAP_V4L2_DIRECT").is_some_and(|v| v == "1");
        let reader = std::thread::Builder::new()
            .name(format!("v4l2-{}", cam.name))
            .spawn(move || {
                read_device(
                    index,
                    &p2,
                    want,
                    w,
                    h,
                    fps,
                    force_direct,
                    &name,
                    &l2,
                    &h2,
                    tx,
                )
            })
            .map_err(|e| CaptureError::Device(format!("cannot start a thread: {e}")))?;
        let opened = match rx.recv() {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let _ = reader.join();
                return Err(e);
            }
            Err(_) => {
                let _ = reader.join();
                return Err(CaptureError::Device(format!(
                    "{}: the reader ended while opening",
                    path.display()
                )));
            }
        };
        let f = opened.format;
        info!(camera = %cam.name, device = %path.display(),
            format = %String::from_utf8_lossy(&f.fourcc), width = f.width, height = f.height,
            fps = %rate(f.interval), reader = if opened.via_nokhwa { "nokhwa" } else { "v4l direct" },
            "v4l2 camera opened");
        if (f.width, f.height) != (w, h) {
            info!(camera = %cam.name, asked_width = w, asked_height = h, width = f.width, height = f.height,
                "the camera does not offer the size asked for; using the nearest");
        }
        Ok(Self {
            latest,
            halt,
            reader: Some(reader),
            timeout: *frame_timeout,
            what: path.display().to_string(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn read_device(
    index: usize,
    path: &Path,
    want: PixelFormat,
    w: u32,
    h: u32,
    fps: u32,
    force_direct: bool,
    camera: &str,
    latest: &Latest,
    halt: &AtomicBool,
    ready: mpsc::Sender<Result<Opened, CaptureError>>,
) {
    let dev = match Device::new(index) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(dev_err("cannot open", path, e)));
            return;
        }
    };
    let n = match negotiate(&dev, path, want, w, h, fps) {
        Ok(n) => n,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut splitter = JpegSplitter::new(64 * 1024 * 1024);
    // Step 2: nokhwa at exactly the negotiated format.
    let nokhwa_cam = match (force_direct, frame_format(n.fourcc), n.whole_fps()) {
        (false, Some(ff), Some(rate)) => {
            let fmt = CameraFormat::new(Resolution::new(n.width, n.height), ff, rate);
            let formats = [ff];
            let req = RequestedFormat::with_formats(RequestedFormatType::Exact(fmt), &formats);
            match nokhwa::Camera::new(CameraIndex::Index(index as u32), req)
                .and_then(|mut c| c.open_stream().map(|()| c))
            {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(camera, device = %path.display(), error = %e,
                        "nokhwa cannot open this camera; reading it directly through v4l instead");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(mut cam) = nokhwa_cam {
        drop(dev);
        let _ = ready.send(Ok(Opened {
            format: n,
            via_nokhwa: true,
        }));
        while !halt.load(Ordering::SeqCst) {
            match cam.frame_raw() {
                Ok(data) => {
                    if let Some(f) = to_frame(&n, &data, &mut splitter) {
                        latest.put(f);
                    }
                }
                Err(e) => {
                    latest.end(format!("{}: reading a frame failed: {e}", path.display()));
                    break;
                }
            }
        }
        let _ = cam.stop_stream();
        return;
    }
    // Step 3: the direct path.
    let mut stream =
        match v4l::io::mmap::Stream::with_buffers(&dev, v4l::buffer::Type::VideoCapture, 4) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(dev_err("cannot start streaming", path, e)));
                return;
            }
        };
    // Wake up now and then to notice a stop even when the camera delivers nothing.
    stream.set_timeout(Duration::from_secs(1));
    let _ = ready.send(Ok(Opened {
        format: n,
        via_nokhwa: false,
    }));
    while !halt.load(Ordering::SeqCst) {
        match stream.next() {
            Ok((buf, meta)) => {
                let used = (meta.bytesused as usize).min(buf.len());
                let data = if used > 0 { &buf[..used] } else { buf };
                if let Some(f) = to_frame(&n, data, &mut splitter) {
                    latest.put(f);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => {
                latest.end(format!("{}: reading a frame failed: {e}", path.display()));
                break;
            }
        }
    }
}

impl Source for V4l2Source {
    fn next_frame(&mut self, stop: &Stop) -> Result<Option<SourceFrame>, CaptureError> {
        self.latest.take(stop, self.timeout, &self.what)
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::SeqCst);
        // A reader blocked in the driver wakes at its next frame; do not wait for a
        // camera that hangs (the capture loop must not wedge), let it finish on its own.
        if let Some(r) = self.reader.take() {
            for _ in 0..100 {
                if r.is_finished() {
                    let _ = r.join();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            warn!(device = %self.what, "the camera reader did not stop within 2 s; leaving it to finish on its own");
        }
    }
}
