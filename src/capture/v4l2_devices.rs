//! V4L2 devices: which nodes can capture (`list_devices`, for `edgecap cameras`), what
//! formats, sizes and rates each offers (`describe_formats`), and which node a camera's
//! `device` selector names (`resolve`: an index, a path, or a name matched against the
//! card names). Reading a device is `v4l2.rs`.

use std::path::{Path, PathBuf};

use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;
use v4l::{Device, Fraction};

use super::CaptureError;
use crate::config::DeviceSelector;

pub(super) fn dev_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Device(format!("{}: {what}: {e}", path.display()))
}

/// A device node that can capture video.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// `/dev/videoN`.
    pub path: PathBuf,
    /// N.
    pub index: usize,
    /// The driver's name for the camera.
    pub name: String,
    /// Driver and bus, e.g. `uvcvideo usb-0000:01:00.0-1.2`.
    pub bus: String,
}

/// One format with its sizes and rates, for `edgecap cameras`.
#[derive(Debug, Clone)]
pub struct FormatInfo {
    /// FourCC, e.g. `MJPG`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// `WxH` with the rates offered at that size, e.g. `30, 15, 12.5 fps`.
    pub sizes: Vec<(u32, u32, Vec<String>)>,
}

fn node_index(path: &Path) -> Option<usize> {
    path.file_name()?
        .to_str()?
        .strip_prefix("video")?
        .parse()
        .ok()
}

/// Capture-capable V4L2 device nodes, by index. (UVC cameras also create metadata nodes,
/// which offer no capture formats and are left out.)
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut out = Vec::new();
    let mut nodes: Vec<_> = v4l::context::enum_devices()
        .into_iter()
        .filter_map(|n| Some((node_index(n.path())?, n.path().to_path_buf())))
        .collect();
    nodes.sort();
    for (index, path) in nodes {
        let Ok(dev) = Device::with_path(&path) else {
            continue;
        };
        if dev.enum_formats().map(|f| f.is_empty()).unwrap_or(true) {
            continue;
        }
        let (name, bus) = match dev.query_caps() {
            Ok(c) => (c.card, format!("{} {}", c.driver, c.bus)),
            Err(_) => (String::from("?"), String::new()),
        };
        out.push(DeviceInfo {
            path,
            index,
            name,
            bus,
        });
    }
    out
}

pub(super) fn rate(f: Fraction) -> String {
    if f.numerator == 0 {
        return "?".into();
    }
    let fps = f64::from(f.denominator) / f64::from(f.numerator);
    if fps.fract() == 0.0 {
        format!("{fps:.0}")
    } else {
        format!("{fps:.2}")
    }
}

/// Formats, sizes and rates of a device.
pub fn describe_formats(path: &Path) -> Result<Vec<FormatInfo>, CaptureError> {
    let dev = Device::with_path(path).map_err(|e| dev_err("cannot open", path, e))?;
    let formats = dev
        .enum_formats()
        .map_err(|e| dev_err("cannot list formats", path, e))?;
    let mut out = Vec::new();
    for f in formats {
        let mut sizes = Vec::new();
        for s in dev.enum_framesizes(f.fourcc).unwrap_or_default() {
            let list: Vec<(u32, u32)> = match s.size {
                FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                FrameSizeEnum::Stepwise(st) => {
                    vec![(st.min_width, st.min_height), (st.max_width, st.max_height)]
                }
            };
            for (w, h) in list {
                let rates = dev
                    .enum_frameintervals(f.fourcc, w, h)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| match i.interval {
                        FrameIntervalEnum::Discrete(d) => rate(d),
                        FrameIntervalEnum::Stepwise(s) => {
                            format!("{}-{}", rate(s.max), rate(s.min))
                        }
                    })
                    .collect();
                sizes.push((w, h, rates));
            }
        }
        out.push(FormatInfo {
            fourcc: String::from_utf8_lossy(&f.fourcc.repr).into_owned(),
            description: f.description,
            sizes,
        });
    }
    Ok(out)
}

/// Finds the device a selector names.
pub fn resolve(sel: &DeviceSelector) -> Result<(usize, PathBuf), CaptureError> {
    match sel {
        DeviceSelector::Index(i) => Ok((*i as usize, PathBuf::from(format!("/dev/video{i}")))),
        DeviceSelector::Path(p) => {
            let real = std::fs::canonicalize(p)
                .map_err(|e| CaptureError::Device(format!("{}: {e}", p.display())))?;
            let i = node_index(&real).ok_or_else(|| {
                CaptureError::Device(format!(
                    "{} is {}, not a /dev/videoN device",
                    p.display(),
                    real.display()
                ))
            })?;
            Ok((i, real))
        }
        DeviceSelector::Name(n) => {
            let needle = n.to_lowercase();
            let all = list_devices();
            all.iter()
                .find(|d| d.name.to_lowercase().contains(&needle))
                .map(|d| (d.index, d.path.clone()))
                .ok_or_else(|| {
                    let names: Vec<String> = all
                        .iter()
                        .map(|d| format!("{} ({})", d.name, d.path.display()))
                        .collect();
                    CaptureError::Device(format!(
                        "no V4L2 camera's name contains \"{n}\"; connected: {}",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                })
        }
    }
}
