//! A captured frame and its identity: the platform filename, the built-in metadata, and the
//! per-run sequence numbers.
//!
//! Names must never collide on the platform (a re-upload after a crash must *replace* the
//! same asset, and two different frames must never share a name). A Pi has no real-time
//! clock and its queue index can roll back after a power cut, so neither time nor a stored
//! counter is trusted alone: every daemon start draws a random 48-bit `run` id, and each
//! camera counts its frames from 0 within that run. `{run}` + `{seq}` are required in the
//! filename template. `seq` advances only when a frame was written to the queue, so the
//! committed frames of one run and camera form a gap-free run 0, 1, 2, …
//!
//! Whether the clock was synchronised (per `adjtimex`'s "unsynchronised" flag, as
//! `timedatectl` reports it) is recorded with the capture time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{CameraConfig, Location, MetaValue};
pub use crate::custom_meta::CustomMeta;

/// A frame as a source produced it, before it has a name.
#[derive(Debug)]
pub struct CapturedFrame {
    /// Index of the camera in the config.
    pub camera: usize,
    /// Wall-clock capture time.
    pub captured_at: SystemTime,
    /// Encoded JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// What the queue stores with every frame and what a sink sends with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Platform filename, extension included. Unique per frame.
    pub filename: String,
    /// MIME type of the image bytes.
    pub mime: String,
    /// Camera name.
    pub camera: String,
    /// Asset groups the frame joins.
    pub groups: Vec<String>,
    /// The full custom metadata: the camera's own plus the built-ins.
    pub custom: CustomMeta,
    /// Picsellia data tags (the camera's `tags`, templates expanded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Capture time, Unix milliseconds (absent in frames queued by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_ms: Option<i64>,
    /// The camera's position, when its config gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// Draws a random run id: 12 lowercase hex digits.
pub fn new_run_id() -> String {
    let v: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("{v:012x}")
}

/// Whether the kernel believes the system clock is synchronised (NTP/PTP): `adjtimex`
/// with `modes = 0` only reads, and `STA_UNSYNC` clear means synchronised.
#[allow(unsafe_code, reason = "adjtimex(2) has no safe wrapper in libc or std")]
pub fn clock_synced() -> bool {
    // SAFETY: `libc::timex` is a C struct of integers, for which all-zero is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is valid and exclusively borrowed; modes = 0 makes the call read-only.
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != libc::TIME_ERROR && state >= 0 && (tx.status & libc::STA_UNSYNC) == 0
}

/// Formats a time as `20261123T054606.123Z` (UTC, millisecond precision).
pub fn compact_utc(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Milliseconds since the Unix epoch (negative before it, which a Pi without RTC can show).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The cameras' configs by slot, as the commit thread names their frames: shared with
/// the daemon, which replaces a camera's entry on a reload (its next frame gets the new
/// metadata, groups and filename template) and appends a slot for a new camera. A removed
/// camera keeps its slot: frames of it may still be in the channel. `{device}` and
/// `{camera}` in string metadata and tags are expanded once, when an entry is set.
#[derive(Debug)]
pub struct CameraTable {
    device: String,
    slots: std::sync::RwLock<Vec<Arc<CameraConfig>>>,
}

impl CameraTable {
    /// The table of `cameras` (slot = position) for `device`.
    pub fn new(device: &str, cameras: &[CameraConfig]) -> Arc<Self> {
        let t = Self {
            device: device.to_string(),
            slots: Default::default(),
        };
        for c in cameras {
            t.push(c.clone());
        }
        Arc::new(t)
    }

    fn expand(&self, mut cam: CameraConfig) -> Arc<CameraConfig> {
        let device = &self.device;
        for t in &mut cam.tags {
            *t = t.replace("{device}", device).replace("{camera}", &cam.name);
        }
        for v in cam.metadata.values_mut() {
            if let MetaValue::Str(s) = v {
                *s = s.replace("{device}", device).replace("{camera}", &cam.name);
            }
        }
        Arc::new(cam)
    }

    /// Appends a camera; returns its slot.
    pub fn push(&self, cam: CameraConfig) -> usize {
        let cam = self.expand(cam);
        let mut g = self.slots.write().unwrap_or_else(|e| e.into_inner());
        g.push(cam);
        g.len() - 1
    }

    /// Replaces the camera in `slot`.
    pub fn set(&self, slot: usize, cam: CameraConfig) {
        let cam = self.expand(cam);
        if let Some(s) = self
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(slot)
        {
            *s = cam;
        }
    }

    /// The camera in `slot`.
    pub fn get(&self, slot: usize) -> Option<Arc<CameraConfig>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slot)
            .cloned()
    }
}

/// Gives frames their names and metadata, and keeps the per-camera sequence counters.
pub struct Namer {
    device: String,
    run_id: String,
    cameras: Arc<CameraTable>,
    next_seq: Vec<u64>,
    synced: bool,
    synced_checked: Option<std::time::Instant>,
}

impl Namer {
    /// A namer for one daemon run over the cameras of `cameras`.
    pub fn new(device: String, run_id: String, cameras: Arc<CameraTable>) -> Self {
        Self {
            device,
            run_id,
            cameras,
            next_seq: Vec::new(),
            synced: false,
            synced_checked: None,
        }
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn synced(&mut self) -> bool {
        let stale = self
            .synced_checked
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if stale {
            self.synced = clock_synced();
            self.synced_checked = Some(std::time::Instant::now());
        }
        self.synced
    }

    /// The metadata the next frame of `frame.camera` gets. Call [`Namer::advance`] once it
    /// was written, so a frame that was never written leaves no gap.
    pub fn peek(&mut self, frame: &CapturedFrame) -> Option<FrameMeta> {
        let synced = self.synced();
        let cam = self.cameras.get(frame.camera)?;
        if self.next_seq.len() <= frame.camera {
            self.next_seq.resize(frame.camera + 1, 0);
        }
        let seq = self.next_seq[frame.camera];
        let time = compact_utc(frame.captured_at);
        let stem = cam
            .filename_template
            .replace("{device}", &self.device)
            .replace("{camera}", &cam.name)
            .replace("{time}", &time)
            .replace("{date}", &time[..8])
            .replace("{run}", &self.run_id)
            .replace("{seq}", &seq.to_string());
        let mut custom = cam.metadata.clone();
        let builtins = [
            (
                "capture_time_ms",
                MetaValue::Int(unix_ms(frame.captured_at)),
            ),
            (
                "capture_time",
                MetaValue::Str(rfc3339_utc(frame.captured_at)),
            ),
            ("clock_synced", MetaValue::Bool(synced)),
            ("device", MetaValue::Str(self.device.clone())),
            ("camera", MetaValue::Str(cam.name.clone())),
            ("run_id", MetaValue::Str(self.run_id.clone())),
            (
                "sequence",
                MetaValue::Int(i64::try_from(seq).unwrap_or(i64::MAX)),
            ),
            ("width", MetaValue::Int(i64::from(frame.width))),
            ("height", MetaValue::Int(i64::from(frame.height))),
        ];
        for (k, v) in builtins {
            if cam.builtin_metadata.iter().any(|b| b == k) {
                custom.insert(k.to_string(), v);
            }
        }
        Some(FrameMeta {
            filename: format!("{stem}.jpg"),
            mime: "image/jpeg".to_string(),
            camera: cam.name.clone(),
            groups: cam.groups.clone(),
            custom: CustomMeta::from_map(&custom),
            tags: cam.tags.clone(),
            captured_ms: Some(unix_ms(frame.captured_at)),
            location: cam.location,
        })
    }

    /// Marks the frame last peeked for `camera` as written.
    pub fn advance(&mut self, camera: usize) {
        if let Some(s) = self.next_seq.get_mut(camera) {
            *s += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn camera(extra: &str) -> CameraConfig {
        let cfg = crate::config::parse(&format!(
            "[[camera]]\nname = \"c\"\n{extra}\n[camera.source]\ntype = \"test_pattern\"\n[camera.metadata]\nsite = \"{{device}}-{{camera}}\"\n[upload]\nsink = \"directory\"\npath = \"/tmp\"\n"
        ))
        .unwrap();
        cfg.cameras[0].clone()
    }

    fn frame() -> CapturedFrame {
        CapturedFrame {
            camera: 0,
            captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            jpeg: vec![0xff, 0xd8],
            width: 4,
            height: 2,
        }
    }

    #[test]
    fn every_built_in_key_goes_by_default_and_templates_are_expanded() {
        let mut n = Namer::new(
            "dev1".into(),
            "run1".into(),
            CameraTable::new("dev1", &[camera("")]),
        );
        let m = n.peek(&frame()).unwrap();
        let keys = m.custom.keys();
        for k in crate::config::BUILTIN_METADATA_KEYS {
            assert!(keys.iter().any(|x| x == k), "{k} missing: {keys:?}");
        }
        assert_eq!(m.custom.to_map()["site"], MetaValue::Str("dev1-c".into()));
        assert_eq!(m.custom.to_map()["sequence"], MetaValue::Int(0));
        assert_eq!(m.custom.to_map()["width"], MetaValue::Int(4));
    }

    #[test]
    fn builtin_metadata_picks_the_keys_edgecap_adds() {
        let cam = camera("builtin_metadata = [\"capture_time\", \"camera\"]");
        let mut n = Namer::new(
            "dev1".into(),
            "run1".into(),
            CameraTable::new("dev1", &[cam]),
        );
        let m = n.peek(&frame()).unwrap();
        let keys = m.custom.keys();
        assert_eq!(keys, ["camera", "capture_time", "site"]);
        assert_eq!(
            m.custom.to_map()["capture_time"],
            MetaValue::Str("2023-11-14T22:13:20.000Z".into())
        );
    }
}
