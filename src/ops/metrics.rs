//! `/metrics`: the status [`Snapshot`] in the Prometheus exposition format (OpenMetrics
//! text, through the `prometheus-client` crate: its encoder does the escaping, `_total`
//! suffixes and `# EOF`). Every number of the snapshot is here, named the Prometheus way
//! (`edgecap_` prefix, base units, `_total` for counters, labels for cameras, queue states
//! and the uploader's state):
//!
//! - `edgecap_queue_<counter>_total`: the queue's lifetime counters (committed, uploaded,
//!   each kind of drop, re-sends, repairs …), never going back;
//! - `edgecap_queue_frames{state}` / `edgecap_queue_bytes{state}` (pending, inflight,
//!   dead), `edgecap_queue_oldest_pending_age_seconds`;
//! - `edgecap_uploader_state{state}` (1 for the current one), `edgecap_uploader_online`,
//!   `edgecap_uploader_last_success_timestamp_seconds`, `…_last_error_timestamp_seconds`,
//!   `…_until_timestamp_seconds`, the delivery rate over five minutes, the session rate
//!   the device allows itself and the 429s it got (`…_session_rate`,
//!   `…_rate_limited_total`);
//! - per camera (`camera` label): frames, errors, skipped, bad, dropped, restarts
//!   (counters), measured fps, last frame time, state;
//! - `edgecap_run_*_total` this run's totals; receipts; `edgecap_index_failed`,
//!   `edgecap_stalled`; `edgecap_build_info{version}`, `edgecap_device_info{device}` and
//!   the start time.
//!
//! The values are read when scraped: a collector over one snapshot, not a registry kept
//! in step with the code.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::snapshot::Snapshot;

/// The Content-Type of [`exposition`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The uploader's state words (each gets a series, 1 for the current one).
pub const UPLOADER_STATES: [&str; 11] = [
    "starting",
    "checking",
    "recovering",
    "idle",
    "uploading",
    "waiting",
    "backing off",
    "refused",
    "offline",
    "window closed",
    "budget spent",
];

/// A camera loop's state words.
pub const CAMERA_STATES: [&str; 5] = ["starting", "capturing", "reopening", "closed", "removed"];

/// The queue's lifetime counters with their help, by their name in the snapshot.
const QUEUE_COUNTERS: [(&str, &str); 17] = [
    (
        "committed",
        "Frames made durable in the queue (fsync'd and indexed).",
    ),
    (
        "uploaded",
        "Frames the platform accepted, removed from the queue.",
    ),
    (
        "dropped_budget",
        "Frames dropped by the disk budget (evicted or refused).",
    ),
    (
        "evicted",
        "Queued frames deleted to make room (part of dropped_budget).",
    ),
    ("purged", "Dead frames deleted by the operator."),
    (
        "dropped_write",
        "Frames lost because writing them failed (disk full, I/O error).",
    ),
    ("quarantined", "Damaged files moved to quarantine."),
    (
        "dead",
        "Frames the platform refused for good (kept in the queue).",
    ),
    ("interrupted", "Frames found in flight after a crash."),
    (
        "index_dropped",
        "Index entries dropped because their file was missing.",
    ),
    (
        "reindexed",
        "Files indexed again because their entry was missing.",
    ),
    (
        "metadata_retried",
        "Frames whose metadata alone was sent again.",
    ),
    (
        "recovered",
        "Frames found on the platform after a restart, not sent again.",
    ),
    (
        "resent_after_crash",
        "Frames sent again after a crash or stop left their fate unknown.",
    ),
    (
        "resent_after_error",
        "Frames sent again after a failed attempt.",
    ),
    (
        "index_repairs",
        "Times the queue index was rebuilt without a restart.",
    ),
    (
        "index_restarts",
        "Times the daemon restarted to rebuild a failed index.",
    ),
];

/// `s` as an exposition.
pub fn exposition(s: &Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One series per `(label value, value)`.
fn labelled<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    rows: Vec<(String, M)>,
) -> fmt::Result {
    let Some((_, first)) = rows.first() else {
        return Ok(());
    };
    let mut m = e.encode_descriptor(name, help, None, first.metric_type())?;
    for (value, metric) in &rows {
        metric.encode(m.encode_family(&[(label, value.as_str())])?)?;
    }
    Ok(())
}

fn seconds(ms: Option<i64>) -> f64 {
    ms.map_or(0.0, |ms| ms as f64 / 1000.0)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let e = &mut e;
        labelled(
            e,
            "edgecap_build_info",
            "edgecap's version.",
            "version",
            vec![(s.version.clone(), ConstGauge::new(1))],
        )?;
        labelled(
            e,
            "edgecap_device_info",
            "The device's id (device.id): join on it to name a fleet's devices in dashboards.",
            "device",
            vec![(s.device.clone(), ConstGauge::new(1))],
        )?;
        let started = s
            .started_at
            .parse::<jiff::Timestamp>()
            .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
        gauge(
            e,
            "edgecap_start_time_seconds",
            "When the daemon started (Unix time).",
            started,
        )?;
        let counters = serde_json::to_value(s.counters).unwrap_or_default();
        for (field, help) in QUEUE_COUNTERS {
            let v = counters[field].as_u64().unwrap_or(0);
            counter(e, &format!("edgecap_queue_{field}"), help, v)?;
        }
        let states = [
            ("pending", s.pending),
            ("inflight", s.inflight),
            ("dead", s.dead),
        ];
        labelled(
            e,
            "edgecap_queue_frames",
            "Frames in the queue, by state.",
            "state",
            states
                .iter()
                .map(|(n, t)| (n.to_string(), ConstGauge::new(t.frames as f64)))
                .collect(),
        )?;
        labelled(
            e,
            "edgecap_queue_bytes",
            "Bytes in the queue, by state.",
            "state",
            states
                .iter()
                .map(|(n, t)| (n.to_string(), ConstGauge::new(t.bytes as f64)))
                .collect(),
        )?;
        gauge(
            e,
            "edgecap_queue_oldest_pending_age_seconds",
            "Age of the oldest frame waiting for upload (0: none).",
            s.oldest_pending_age_secs.unwrap_or(0) as f64,
        )?;
        let u = &s.uploader;
        let word = if u.state.is_empty() {
            "starting"
        } else {
            u.state.as_str()
        };
        labelled(
            e,
            "edgecap_uploader_state",
            "The uploader's state: 1 for the current one.",
            "state",
            UPLOADER_STATES
                .iter()
                .map(|st| (st.to_string(), ConstGauge::new(i64::from(*st == word))))
                .collect(),
        )?;
        gauge(
            e,
            "edgecap_uploader_online",
            "1 when the platform answered the uploader's last call.",
            f64::from(u8::from(s.online)),
        )?;
        gauge(
            e,
            "edgecap_uploader_state_since_timestamp_seconds",
            "Since when the uploader is in its state (Unix time).",
            u.since_ms as f64 / 1000.0,
        )?;
        gauge(
            e,
            "edgecap_uploader_until_timestamp_seconds",
            "Until when the uploader waits or backs off (Unix time; 0: it does not).",
            seconds(u.until_ms),
        )?;
        gauge(
            e,
            "edgecap_uploader_last_success_timestamp_seconds",
            "When the platform last accepted frames (Unix time; 0: not yet).",
            seconds(u.last_success_ms),
        )?;
        gauge(
            e,
            "edgecap_uploader_last_error_timestamp_seconds",
            "When the uploader last met an error (Unix time; 0: never).",
            seconds(u.last_error_ms),
        )?;
        gauge(
            e,
            "edgecap_uploader_frames_per_minute",
            "Frames delivered per minute over the last five minutes.",
            u.frames_per_min,
        )?;
        gauge(
            e,
            "edgecap_uploader_bytes_per_minute",
            "Image bytes delivered per minute over the last five minutes.",
            u.bytes_per_min,
        )?;
        gauge(
            e,
            "edgecap_link_sent_today_bytes",
            "Bytes counted against the daily budget today (bodies and overhead).",
            u.sent_today_bytes as f64,
        )?;
        gauge(
            e,
            "edgecap_link_sent_month_bytes",
            "Bytes counted against the monthly budget this budget month.",
            u.sent_month_bytes as f64,
        )?;
        if let Some(left) = u.budget_left_bytes {
            gauge(
                e,
                "edgecap_link_budget_left_bytes",
                "Bytes the byte budgets still allow.",
                left as f64,
            )?;
        }
        gauge(
            e,
            "edgecap_link_next_window_timestamp_seconds",
            "When the next upload window opens (Unix time; 0: inside one or none set).",
            seconds(u.next_window_ms),
        )?;
        gauge(
            e,
            "edgecap_link_rate_cap_bytes_per_second",
            "The configured cap on bytes sent per second (0: none).",
            u.rate_cap_bytes_per_sec.unwrap_or(0) as f64,
        )?;
        gauge(
            e,
            "edgecap_link_goodput_bytes_per_second",
            "The link's measured goodput (0: not measured yet).",
            u.link_bytes_per_sec.unwrap_or(0.0),
        )?;
        if let Some(rate) = u.session_rate {
            gauge(
                e,
                "edgecap_uploader_session_rate",
                "Upload sessions per session_rate_window the device allows itself now (learnt from the platform's 429s).",
                rate,
            )?;
        }
        counter(
            e,
            "edgecap_uploader_rate_limited",
            "429s on creating an upload session (the project's shared session limit) since start.",
            u.rate_limited,
        )?;
        let cams = &s.cameras;
        let per_camera = |f: fn(&super::snapshot::CameraSnapshot) -> u64| {
            cams.iter()
                .map(|c| (c.name.clone(), ConstCounter::new(f(c))))
                .collect::<Vec<_>>()
        };
        labelled(
            e,
            "edgecap_camera_frames",
            "Frames the camera's source delivered this run.",
            "camera",
            per_camera(|c| c.produced),
        )?;
        labelled(
            e,
            "edgecap_camera_errors",
            "Source failures this run.",
            "camera",
            per_camera(|c| c.errors),
        )?;
        labelled(
            e,
            "edgecap_camera_skipped_unchanged",
            "Frames change detection skipped this run.",
            "camera",
            per_camera(|c| c.skipped_unchanged),
        )?;
        labelled(
            e,
            "edgecap_camera_bad_frames",
            "Frames that could not be processed this run.",
            "camera",
            per_camera(|c| c.bad_frames),
        )?;
        labelled(
            e,
            "edgecap_camera_dropped_buffer",
            "Frames dropped because the disk did not keep up, this run.",
            "camera",
            per_camera(|c| c.dropped_buffer),
        )?;
        labelled(
            e,
            "edgecap_camera_restarts",
            "Times the source was opened again after a failure, this run.",
            "camera",
            per_camera(|c| c.restarts),
        )?;
        labelled(
            e,
            "edgecap_camera_fps",
            "Frames per second the source delivered over the last 30 s.",
            "camera",
            cams.iter()
                .map(|c| (c.name.clone(), ConstGauge::new(c.fps)))
                .collect(),
        )?;
        labelled(
            e,
            "edgecap_camera_last_frame_timestamp_seconds",
            "When the source last delivered a frame (Unix time; 0: never).",
            "camera",
            cams.iter()
                .map(|c| (c.name.clone(), ConstGauge::new(seconds(c.last_frame_ms))))
                .collect(),
        )?;
        // Two labels: one family per camera state.
        if !cams.is_empty() {
            let g = ConstGauge::new(0);
            let mut m = e.encode_descriptor(
                "edgecap_camera_state",
                "The camera loop's state: 1 for the current one.",
                None,
                g.metric_type(),
            )?;
            for c in cams {
                let now = if c.state.is_empty() {
                    "starting"
                } else {
                    c.state.as_str()
                };
                for st in CAMERA_STATES {
                    ConstGauge::new(i64::from(st == now))
                        .encode(m.encode_family(&[("camera", c.name.as_str()), ("state", st)])?)?;
                }
            }
        }
        let r = &s.run;
        for (name, help, v) in [
            (
                "produced",
                "Frames the sources delivered this run.",
                r.produced,
            ),
            (
                "dropped_buffer",
                "Frames dropped before the disk this run.",
                r.dropped_buffer,
            ),
            (
                "skipped_unchanged",
                "Frames change detection skipped this run.",
                r.skipped_unchanged,
            ),
            (
                "bad_frames",
                "Frames that could not be processed this run.",
                r.bad_frames,
            ),
            (
                "camera_errors",
                "Camera source failures this run.",
                r.camera_errors,
            ),
        ] {
            counter(e, &format!("edgecap_run_{name}"), help, v)?;
        }
        gauge(
            e,
            "edgecap_receipts_last_timestamp_seconds",
            "When the last receipt (proof of delivery) was written (Unix time; 0: none).",
            seconds(s.receipts.last_ms),
        )?;
        gauge(
            e,
            "edgecap_receipts_last_hour",
            "Frames receipted in the last hour.",
            s.receipts.last_hour as f64,
        )?;
        gauge(
            e,
            "edgecap_receipts_last_day",
            "Frames receipted in the last 24 hours.",
            s.receipts.last_day as f64,
        )?;
        gauge(
            e,
            "edgecap_index_failed",
            "1 while the queue index has failed and waits for its repair.",
            f64::from(u8::from(s.index_failed.is_some())),
        )?;
        gauge(
            e,
            "edgecap_stalled",
            "1 while a loop is stuck past the stall limit (the watchdog stopped pinging).",
            f64::from(u8::from(s.stalled.is_some())),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn every_lifetime_counter_is_exported() {
        let v = serde_json::to_value(crate::queue::Counters::default()).unwrap();
        for k in v.as_object().unwrap().keys() {
            if k == "committed_through" || k == "next_seq" {
                continue; // sequence numbers, not counts
            }
            assert!(
                QUEUE_COUNTERS.iter().any(|(n, _)| n == k),
                "the counter {k} is missing from /metrics"
            );
        }
    }

    #[test]
    fn the_uploader_state_words_are_the_ones_the_uploader_uses() {
        let src = [
            include_str!("../upload/uploader/mod.rs"),
            include_str!("../upload/uploader/start.rs"),
            include_str!("../upload/uploader/report.rs"),
            include_str!("../upload/uploader/send.rs"),
            include_str!("../upload/uploader/link.rs"),
        ]
        .concat();
        // Every word but `starting` (the state before the uploader's first step, the
        // status's default) is set by the uploader.
        for word in UPLOADER_STATES.iter().filter(|w| **w != "starting") {
            assert!(
                src.contains(&format!("\"{word}\"")),
                "{word} is not set by the uploader"
            );
        }
    }
}
