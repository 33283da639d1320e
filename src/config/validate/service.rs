//! `[device]`, `[daemon]` and `[queue]`: the process and its disk.

use std::path::PathBuf;
use std::time::Duration;

use super::{Seg, Validator, is_name_char, key};
use crate::config::raw::{RawDaemon, RawDevice, RawQueue};
use crate::config::types::{DaemonConfig, Deferred, QueueConfig};

impl Validator<'_> {
    /// `Some(None)`: no id configured, the host name is used (resolved later).
    pub(super) fn device_id(&mut self, d: RawDevice) -> Option<Option<String>> {
        match d.id {
            None => {
                self.deferred.push(Deferred::HostName);
                Some(None)
            }
            Some(id) => {
                let path = [key("device"), key("id")];
                if id.is_empty() || id.len() > 64 {
                    self.problem(&path, "must be 1 to 64 characters long");
                    None
                } else if let Some(bad) = id.chars().find(|c| !is_name_char(*c)) {
                    self.problem(
                        &path,
                        format!("character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"),
                    );
                    None
                } else {
                    Some(Some(id))
                }
            }
        }
    }

    pub(super) fn daemon(&mut self, d: RawDaemon) -> DaemonConfig {
        let stall = self.range(
            &[key("daemon"), key("watchdog_stall_secs")],
            d.watchdog_stall_secs,
            10,
            86_400,
        );
        if d.status_file.trim().is_empty() {
            self.problem(
                &[key("daemon"), key("status_file")],
                "must be a file path, e.g. \"/run/edgecap/status.json\"",
            );
        }
        let http_listen = d.http_listen.and_then(|a| {
            let path = [key("daemon"), key("http_listen")];
            match a.trim().parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.problem(
                        &path,
                        format!(
                            "must be an address and a port, like \"127.0.0.1:9187\" (got {a:?})"
                        ),
                    );
                    None
                }
            }
        });
        let metrics_textfile = d.metrics_textfile.and_then(|f| {
            let ok = f.ends_with(".prom") && !f.trim().is_empty();
            if !ok {
                self.problem(
                    &[key("daemon"), key("metrics_textfile")],
                    format!(
                        "must be a file ending in .prom (node_exporter's textfile collector reads only those), like \"/var/lib/node_exporter/textfile_collector/edgecap.prom\" (got {f:?})"
                    ),
                );
            }
            ok.then(|| PathBuf::from(f))
        });
        DaemonConfig {
            http_listen,
            metrics_textfile,
            stop_after_frames: (d.stop_after_frames > 0).then_some(d.stop_after_frames),
            drain_on_stop: Duration::from_secs(d.drain_on_stop_secs),
            summary_interval: (d.summary_interval_secs > 0)
                .then(|| Duration::from_secs(d.summary_interval_secs)),
            status_file: PathBuf::from(d.status_file),
            watchdog_stall: Duration::from_secs(stall),
        }
    }

    pub(super) fn range(&mut self, path: &[Seg], value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.problem(
                path,
                format!("must be between {min} and {max} (got {value})"),
            );
        }
        value.clamp(min, max)
    }

    pub(super) fn queue(&mut self, q: RawQueue) -> Option<QueueConfig> {
        let p = |k: &str| [key("queue"), key(k)];
        if q.dir.trim().is_empty() {
            self.problem(&p("dir"), "must not be empty");
        } else {
            self.defer_writable(&p("dir"), PathBuf::from(&q.dir), true);
        }
        let max_bytes = self.range(&p("max_bytes"), q.max_bytes, 1024 * 1024, u64::MAX);
        let max_frames = self.range(&p("max_frames"), q.max_frames, 1, 100_000_000);
        let window = self.range(&p("commit_window_ms"), q.commit_window_ms, 0, 10_000);
        let buffer = self.range(&p("buffer_frames"), q.buffer_frames, 1, 10_000);
        let cache = self.range(
            &p("index_cache_bytes"),
            q.index_cache_bytes,
            64 * 1024,
            1024 * 1024 * 1024,
        );
        let receipts = self.range(
            &p("receipts_max_bytes"),
            q.receipts_max_bytes,
            64 * 1024,
            1024 * 1024 * 1024,
        );
        Some(QueueConfig {
            dir: PathBuf::from(q.dir),
            max_bytes,
            max_frames,
            on_full: q.on_full,
            fsync: q.fsync,
            commit_window: Duration::from_millis(window),
            buffer_frames: usize::try_from(buffer).ok()?,
            index_cache_bytes: cache,
            receipts_max_bytes: receipts,
            keep_delivered_bytes: q.keep_delivered_bytes,
        })
    }
}
