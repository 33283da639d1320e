//! `[[camera]]`: source, rate, schedule, transforms, change detection, groups, filename
//! template and custom metadata.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Seg, Validator, is_name_char, key};
use crate::config::raw::{RawCamera, RawSource, defaults};
use crate::config::types::{
    CameraConfig, ChangeDetection, DeviceSelector, Location, MetaValue, SourceConfig,
};
use crate::encode::{Rotate, Transform};

/// Names of the metadata keys edgecap can add to every frame itself (all of them by
/// default; a camera's `builtin_metadata` picks). A camera's own `metadata` may not use
/// the ones it keeps.
pub const BUILTIN_METADATA_KEYS: &[&str] = &[
    "capture_time_ms",
    "capture_time",
    "clock_synced",
    "device",
    "camera",
    "run_id",
    "sequence",
    "width",
    "height",
];

/// Placeholders a filename template may use.
pub const FILENAME_PLACEHOLDERS: &[&str] = &["device", "camera", "time", "date", "run", "seq"];

/// Checks a filename template; returns what is wrong with it.
pub(super) fn check_filename_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    let mut used = Vec::new();
    while let Some(open) = rest.find('{') {
        let literal = &rest[..open];
        if let Some(bad) = literal.chars().find(|c| !is_name_char(*c)) {
            return Err(format!(
                "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
            ));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("a '{' has no matching '}'".to_string());
        };
        let name = &rest[open + 1..open + close];
        if !FILENAME_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; known: {}",
                FILENAME_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        used.push(name);
        rest = &rest[open + close + 1..];
    }
    if let Some(bad) = rest.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    if !used.contains(&"run") || !used.contains(&"seq") {
        return Err(
            "must contain {run} and {seq}: together they keep names unique across restarts and clock jumps"
                .to_string(),
        );
    }
    Ok(())
}

impl Validator<'_> {
    pub(super) fn camera(&mut self, c: RawCamera, base: &[Seg]) -> Option<CameraConfig> {
        let p = |k: &str| {
            let mut v = base.to_vec();
            v.push(key(k));
            v
        };
        let mut ok = true;
        if c.name.is_empty() || c.name.len() > 64 || !c.name.chars().all(is_name_char) {
            self.problem(
                &p("name"),
                "must be 1 to 64 characters of letters, digits, '.', '_' and '-'",
            );
            ok = false;
        }
        let interval = match (c.interval_ms, c.fps) {
            (Some(_), Some(_)) => {
                self.problem(&p("fps"), "set either interval_ms or fps, not both");
                None
            }
            (Some(ms), None) => Some(Duration::from_millis(self.range(
                &p("interval_ms"),
                ms,
                1,
                86_400_000,
            ))),
            (None, Some(fps)) => {
                if !(fps.is_finite() && fps > 0.0 && fps <= 120.0) {
                    self.problem(
                        &p("fps"),
                        format!("must be greater than 0 and at most 120 (got {fps})"),
                    );
                    None
                } else {
                    Some(Duration::from_secs_f64(1.0 / fps))
                }
            }
            (None, None) => Some(Duration::from_millis(defaults::interval_ms())),
        };
        let s = |k: &str| {
            let mut v = p("source");
            v.push(key(k));
            v
        };
        let source = match c.source {
            RawSource::TestPattern {
                width,
                height,
                jpeg_quality,
            } => {
                let w = self.range(&s("width"), u64::from(width), 16, 7680);
                let h = self.range(&s("height"), u64::from(height), 16, 4320);
                let q = self.range(&s("jpeg_quality"), u64::from(jpeg_quality), 1, 100);
                SourceConfig::TestPattern {
                    width: u32::try_from(w).ok()?,
                    height: u32::try_from(h).ok()?,
                    jpeg_quality: u8::try_from(q).ok()?,
                }
            }
            RawSource::V4l2 {
                device,
                width,
                height,
                device_fps,
                format,
                frame_timeout_secs,
            } => {
                let w = self.range(&s("width"), u64::from(width), 16, 7680);
                let h = self.range(&s("height"), u64::from(height), 16, 4320);
                let fps = device_fps.map(|f| self.range(&s("device_fps"), u64::from(f), 1, 240));
                let t = self.range(&s("frame_timeout_secs"), frame_timeout_secs, 1, 3600);
                let d = device.trim();
                let device = if d.is_empty() {
                    self.problem(
                        &s("device"),
                        "must be an index (\"0\"), a path (\"/dev/video0\") or part of the camera's name",
                    );
                    ok = false;
                    DeviceSelector::Index(0)
                } else if let Ok(i) = d.parse::<u32>() {
                    DeviceSelector::Index(i)
                } else if d.starts_with('/') {
                    DeviceSelector::Path(PathBuf::from(d))
                } else {
                    DeviceSelector::Name(d.to_string())
                };
                SourceConfig::V4l2 {
                    device,
                    width: u32::try_from(w).ok()?,
                    height: u32::try_from(h).ok()?,
                    device_fps: fps.and_then(|f| u32::try_from(f).ok()),
                    format,
                    frame_timeout: Duration::from_secs(t),
                }
            }
            RawSource::Command {
                argv,
                max_frame_bytes,
                frame_timeout_secs,
            } => {
                if argv.first().is_none_or(|a| a.trim().is_empty()) {
                    self.problem(
                        &s("argv"),
                        "must name a program, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"--nopreview\", \"-o\", \"-\"]",
                    );
                    ok = false;
                }
                let m = self.range(
                    &s("max_frame_bytes"),
                    max_frame_bytes,
                    1024,
                    256 * 1024 * 1024,
                );
                let t = self.range(&s("frame_timeout_secs"), frame_timeout_secs, 1, 3600);
                SourceConfig::Command {
                    argv,
                    max_frame_bytes: usize::try_from(m).ok()?,
                    frame_timeout: Duration::from_secs(t),
                }
            }
        };
        let windows = self.windows(&p("active_hours"), &c.active_hours);
        ok &= windows.is_some();
        let tr = |k: &str| {
            let mut v = p("transform");
            v.push(key(k));
            v
        };
        let t = &c.transform;
        let rotate = match t.rotate_degrees {
            0 => Rotate::None,
            90 => Rotate::Cw90,
            180 => Rotate::Cw180,
            270 => Rotate::Cw270,
            other => {
                self.problem(
                    &tr("rotate_degrees"),
                    format!("must be 0, 90, 180 or 270 (got {other})"),
                );
                ok = false;
                Rotate::None
            }
        };
        let max_width = t
            .max_width
            .map(|v| self.range(&tr("max_width"), u64::from(v), 16, 7680))
            .and_then(|v| u32::try_from(v).ok());
        let max_height = t
            .max_height
            .map(|v| self.range(&tr("max_height"), u64::from(v), 16, 4320))
            .and_then(|v| u32::try_from(v).ok());
        let jpeg_quality = t
            .jpeg_quality
            .map(|v| self.range(&tr("jpeg_quality"), u64::from(v), 1, 100))
            .and_then(|v| u8::try_from(v).ok());
        let transform = Transform {
            max_width,
            max_height,
            rotate,
            flip: t.flip,
            jpeg_quality,
        };
        let cd = &c.change_detection;
        let cdp = |k: &str| {
            let mut v = p("change_detection");
            v.push(key(k));
            v
        };
        if !(cd.threshold_percent.is_finite() && (0.0..=100.0).contains(&cd.threshold_percent)) {
            self.problem(
                &cdp("threshold_percent"),
                format!("must be between 0 and 100 (got {})", cd.threshold_percent),
            );
            ok = false;
        }
        let gap = self.range(&cdp("max_gap_secs"), cd.max_gap_secs, 1, 86_400);
        let change_detection = cd.enabled.then(|| ChangeDetection {
            threshold_percent: cd.threshold_percent,
            max_gap: Duration::from_secs(gap),
        });
        if c.groups.is_empty() {
            self.problem(&p("groups"), "must name at least one group");
            ok = false;
        }
        for g in &c.groups {
            if g.trim().is_empty() {
                self.problem(&p("groups"), "group names must not be blank");
                ok = false;
            }
        }
        for t in &c.tags {
            if t.trim().is_empty() || t.chars().any(char::is_control) {
                self.problem(
                    &p("tags"),
                    "tag names must not be blank or hold control characters",
                );
                ok = false;
            }
        }
        let location = match (c.latitude, c.longitude) {
            (None, None) => None,
            (Some(lat), Some(lon)) => {
                if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                    self.problem(&p("latitude"), format!("must be -90 to 90 (got {lat})"));
                    ok = false;
                }
                if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                    self.problem(&p("longitude"), format!("must be -180 to 180 (got {lon})"));
                    ok = false;
                }
                Some(Location {
                    latitude: lat,
                    longitude: lon,
                })
            }
            (Some(_), None) => {
                self.problem(&p("latitude"), "set longitude too: they go together");
                ok = false;
                None
            }
            (None, Some(_)) => {
                self.problem(&p("longitude"), "set latitude too: they go together");
                ok = false;
                None
            }
        };
        if let Err(msg) = check_filename_template(&c.filename_template) {
            self.problem(&p("filename_template"), msg);
            ok = false;
        }
        let mut builtins: Vec<String> = Vec::new();
        for k in &c.builtin_metadata {
            if !BUILTIN_METADATA_KEYS.contains(&k.as_str()) {
                self.problem(
                    &p("builtin_metadata"),
                    format!(
                        "`{k}` is not a built-in key; they are {}",
                        BUILTIN_METADATA_KEYS.join(", ")
                    ),
                );
                ok = false;
            } else if builtins.contains(k) {
                self.problem(&p("builtin_metadata"), format!("`{k}` is listed twice"));
                ok = false;
            } else {
                builtins.push(k.clone());
            }
        }
        // Kept in the canonical order, whatever order the file lists them in.
        builtins.sort_by_key(|k| BUILTIN_METADATA_KEYS.iter().position(|b| b == k));
        let mut metadata = BTreeMap::new();
        for (k, v) in &c.metadata {
            let mut path = p("metadata");
            path.push(key(k));
            if k.trim().is_empty() {
                self.problem(&path, "metadata keys must not be empty");
                ok = false;
                continue;
            }
            if builtins.contains(k) {
                self.problem(
                    &path,
                    format!(
                        "`{k}` is set by edgecap itself; leave it out of builtin_metadata to set it here (built-in keys: {})",
                        BUILTIN_METADATA_KEYS.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
            let value = match v {
                toml::Value::String(s) => Some(MetaValue::Str(s.clone())),
                toml::Value::Integer(i) => Some(MetaValue::Int(*i)),
                toml::Value::Float(f) if f.is_finite() => Some(MetaValue::Float(*f)),
                toml::Value::Float(_) => {
                    self.problem(&path, "NaN and infinite floats are not allowed");
                    None
                }
                toml::Value::Boolean(b) => Some(MetaValue::Bool(*b)),
                toml::Value::Datetime(_) => {
                    self.problem(
                        &path,
                        "datetimes are not allowed; write it as a quoted string",
                    );
                    None
                }
                toml::Value::Array(_) => {
                    self.problem(
                        &path,
                        "arrays are not allowed: custom metadata must be flat (string, integer, float or bool)",
                    );
                    None
                }
                toml::Value::Table(_) => {
                    self.problem(
                        &path,
                        "nested tables are not allowed: custom metadata must be flat (string, integer, float or bool)",
                    );
                    None
                }
            };
            match value {
                Some(v) => {
                    metadata.insert(k.clone(), v);
                }
                None => ok = false,
            }
        }
        Some(CameraConfig {
            name: c.name,
            source,
            interval: interval?,
            groups: c.groups,
            tags: c.tags,
            location,
            filename_template: c.filename_template,
            metadata,
            builtin_metadata: builtins,
            active_hours: windows.unwrap_or_default(),
            transform,
            change_detection,
        })
        .filter(|_| ok)
    }
}
