//! Validation: the raw sections (serde, `deny_unknown_fields`) checked into the types of
//! [`super::types`], every problem collected with its key and line.
//!
//! Pure: nothing here reads a file, the environment, the host name or a credential, or
//! asks the kernel about rights. What needs those is recorded as a
//! [`Deferred`](super::types::Deferred) check for [`super::resolve()`]. One file per area:
//! `service.rs` (`[device]`, `[daemon]`, `[queue]`), `upload.rs`, `camera.rs`.

mod camera;
mod service;
mod units;
mod upload;
mod words;

use std::path::PathBuf;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Problem;
use super::locate::{Locator, Seg, line_of, render_path};
use super::raw::{RawCamera, RawDaemon, RawDevice, RawQueue, RawUpload};
use super::types::{Config, Deferred, SinkConfig, Site};

pub use camera::{BUILTIN_METADATA_KEYS, FILENAME_PLACEHOLDERS};

/// Validates config text; every problem found is returned, not only the first.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            let key = line.map(|l| syntax_key(text, l)).unwrap_or_default();
            let null = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .is_some_and(|(_, v)| {
                    matches!(v.trim(), "null" | "nil" | "None" | "NULL" | "none" | "~")
                });
            let message = if null {
                "TOML has no null value: leave the key out (custom metadata must be a string, integer, float or bool)".to_string()
            } else {
                format!("TOML syntax error: {}", e.message().trim())
            };
            return Err(vec![Problem {
                key,
                line,
                message,
                file: None,
            }]);
        }
    };
    let loc = Locator::new(text, &doc);
    let mut v = Validator {
        loc: &loc,
        problems: Vec::new(),
        deferred: Vec::new(),
    };
    let cfg = v.config(doc.get_ref());
    match cfg {
        Some(cfg) if v.problems.is_empty() => Ok(cfg),
        _ => {
            let mut problems = v.problems;
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            problems.dedup();
            Err(problems)
        }
    }
}

/// The key a syntax error is about, read from its line and the table header above it:
/// `camera.metadata.tags` for `tags = [` under `[camera.metadata]`, `queue` for `[queue`.
fn syntax_key(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(this) = lines.get(line.saturating_sub(1)).map(|l| l.trim()) else {
        return String::new();
    };
    let header = |l: &str| {
        l.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    if this.starts_with('[') {
        return header(this);
    }
    let Some((k, _)) = this.split_once('=') else {
        return String::new();
    };
    let k = k.trim().trim_matches('"');
    let table = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(header);
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{k}"),
        _ => k.to_string(),
    }
}

/// At most this many problems are reported per section.
const MAX_PROBLEMS_PER_SECTION: usize = 32;

/// Takes the key at `path` (keys below a table) out of `value`; false if there is none.
fn remove_key(value: &mut toml::Spanned<DeValue<'_>>, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for k in parents {
        let DeValue::Table(t) = at.get_mut() else {
            return false;
        };
        let Some(next) = t.get_mut(*k) else {
            return false;
        };
        at = next;
    }
    match at.get_mut() {
        DeValue::Table(t) => t.remove(*last).is_some(),
        _ => false,
    }
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// Walks the document section by section, collecting every problem.
pub(super) struct Validator<'a> {
    loc: &'a Locator<'a>,
    problems: Vec<Problem>,
    deferred: Vec<Deferred>,
}

impl Validator<'_> {
    /// The key and line of `path`, for a check made later.
    fn site(&self, path: &[Seg]) -> Site {
        Site {
            file: None,
            key: render_path(path),
            line: self.loc.line_of_path(path),
        }
    }

    /// Leaves the check that `dir` is usable by this user to the resolve step (a problem
    /// when `required`, otherwise a warning).
    fn defer_writable(&mut self, path: &[Seg], dir: PathBuf, required: bool) {
        let site = self.site(path);
        self.deferred.push(Deferred::Writable {
            site,
            dir,
            required,
        });
    }

    /// Daily windows (a camera's `active_hours`, the uploader's `windows`), every bad one
    /// reported; `None` if any is bad.
    fn windows(&mut self, path: &[Seg], list: &[String]) -> Option<crate::schedule::ActiveHours> {
        let mut out = Vec::new();
        let mut ok = true;
        for w in list {
            match crate::schedule::Window::parse(w) {
                Ok(w) => out.push(w),
                Err(msg) => {
                    self.problem(path, msg);
                    ok = false;
                }
            }
        }
        ok.then(|| crate::schedule::ActiveHours::new(out))
    }

    fn problem(&mut self, path: &[Seg], message: impl Into<String>) {
        self.problems.push(Problem {
            key: render_path(path),
            line: self.loc.line_of_path(path),
            message: message.into(),
            file: None,
        });
    }

    /// Deserializes one section on its own; a serde error becomes a problem at the key its
    /// span points to, in plain words. serde stops at a section's first error, so the key
    /// at fault is taken out and the section read again, until it reads or nothing more
    /// can be taken out: every wrong key of a table is reported, not only the first.
    fn section<'de, T: Deserialize<'de>>(
        &mut self,
        value: &toml::Spanned<DeValue<'de>>,
        fallback: &[Seg],
    ) -> Option<T> {
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_PROBLEMS_PER_SECTION {
            let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(t) => return removed.is_empty().then_some(t),
                Err(e) => e,
            };
            // A key taken out earlier that the section needs: already reported.
            if let Some(rest) = e.message().strip_prefix("missing field `")
                && let Some((field, _)) = rest.split_once('`')
                && removed.iter().any(|r| r == field)
            {
                return None;
            }
            let (path, line) = self.error_site(&e, fallback);
            self.problems.push(Problem {
                key: render_path(&path),
                line,
                message: words::plain(e.message()),
                file: None,
            });
            // The key inside this section to take out: the path below the section, up to
            // its first list index.
            let below: Vec<&str> = match path.strip_prefix(fallback) {
                Some(rest) => rest
                    .iter()
                    .map_while(|s| match s {
                        Seg::Key(k) => Some(k.as_str()),
                        Seg::Index(_) => None,
                    })
                    .collect(),
                None => Vec::new(),
            };
            if below.is_empty() || !remove_key(&mut value, &below) {
                return None;
            }
            removed.push(below[0].to_string());
            if let Some(last) = below.last() {
                removed.push((*last).to_string());
            }
        }
        None
    }

    /// The key and line a serde error is about.
    fn error_site(&self, e: &toml::de::Error, fallback: &[Seg]) -> (Vec<Seg>, Option<usize>) {
        let (path, line) = match e.span() {
            Some(s) => {
                let p = self.loc.path_at(s.start);
                let p = if p.len() >= fallback.len() {
                    p
                } else {
                    fallback.to_vec()
                };
                (p, Some(self.loc.line_of(s.start)))
            }
            None => (fallback.to_vec(), self.loc.line_of_path(fallback)),
        };
        // Internally tagged tables (`[camera.source]`) are buffered by serde, so an
        // unknown key's span is the whole table: point at the key itself.
        match e
            .message()
            .strip_prefix("unknown field `")
            .and_then(|m| m.split_once('`'))
        {
            Some((field, _)) => {
                let mut deeper = path.clone();
                deeper.push(key(field));
                match self.loc.line_of_path(&deeper) {
                    Some(l) if path.last() != Some(&key(field)) => (deeper, Some(l)),
                    _ => (path, line),
                }
            }
            None => (path, line),
        }
    }

    fn config(&mut self, root: &DeTable<'_>) -> Option<Config> {
        let mut device = Some(RawDevice::default());
        let mut daemon = Some(RawDaemon::default());
        let mut queue = Some(RawQueue::default());
        let mut upload: Option<RawUpload> = None;
        let mut upload_seen = false;
        let mut cameras: Vec<Option<RawCamera>> = Vec::new();
        for (k, value) in root.iter() {
            let name: &str = k.get_ref().as_ref();
            let path = [key(name)];
            match name {
                "device" => device = self.section(value, &path),
                "daemon" => daemon = self.section(value, &path),
                "queue" => queue = self.section(value, &path),
                "upload" => {
                    upload_seen = true;
                    upload = self.section(value, &path);
                }
                "camera" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            cameras.push(self.section(item, &[key("camera"), Seg::Index(i)]));
                        }
                    }
                    _ => self.problem(
                        &path,
                        "must be an array of tables: write each camera as [[camera]]",
                    ),
                },
                other => self.problem(
                    &path,
                    format!(
                        "unknown key `{other}`, expected one of `device`, `daemon`, `camera`, `queue`, `upload`"
                    ),
                ),
            }
        }
        if !upload_seen {
            self.problem(
                &[],
                "missing [upload] section (sink = \"nexus\", \"picsellia\" or \"directory\")",
            );
        }
        if cameras.is_empty() && !root.iter().any(|(k, _)| k.get_ref().as_ref() == "camera") {
            self.problem(&[], "no [[camera]] configured: add at least one");
        }

        let device_id = device.map(|d| self.device_id(d));
        let daemon = daemon.map(|d| self.daemon(d));
        let queue = queue.map(|q| self.queue(q));
        let upload = upload.and_then(|u| self.upload(u));
        let mut seen_names: Vec<String> = Vec::new();
        let mut checked_cameras = Vec::new();
        for (i, cam) in cameras.into_iter().enumerate() {
            let Some(cam) = cam else { continue };
            let base = [key("camera"), Seg::Index(i)];
            if seen_names.contains(&cam.name) {
                self.problem(
                    &[key("camera"), Seg::Index(i), key("name")],
                    format!(
                        "camera name `{}` is used twice; names must be unique",
                        cam.name
                    ),
                );
            }
            seen_names.push(cam.name.clone());
            if let Some(c) = self.camera(cam, &base) {
                checked_cameras.push(c);
            }
        }
        let mut config = Config {
            device_id: device_id??,
            daemon: daemon?,
            cameras: checked_cameras,
            queue: queue??,
            upload: upload?,
            deferred: std::mem::take(&mut self.deferred),
            warnings: Vec::new(),
        };
        config.warnings.extend(session_budget_warning(&config));
        if let Some(addr) = config.daemon.http_listen.filter(|a| !a.ip().is_loopback()) {
            config.warnings.push(format!(
                "daemon.http_listen = \"{addr}\" serves the status and the cameras' newest frames (no password) beyond this machine; use 127.0.0.1 unless the network is trusted"
            ));
        }
        if !matches!(config.upload.sink, SinkConfig::Picsellia(_)) {
            for (i, c) in config.cameras.iter().enumerate() {
                if !c.tags.is_empty() {
                    let line = self
                        .loc
                        .line_of_path(&[key("camera"), Seg::Index(i), key("tags")]);
                    config.warnings.push(format!(
                        "camera.tags (line {}): only the picsellia sink sends tags; the {} sink ignores them (it has groups)",
                        line.map_or("?".to_string(), |l| l.to_string()),
                        config.upload.sink.name()
                    ));
                }
            }
        }
        self.problems.is_empty().then_some(config)
    }
}

/// Whether the cameras' group sets and the batch age would need more Nexus sessions than
/// the limit allows (then the daemon stretches the batch age; see
/// [`super::platform::session_plan`]).
fn session_budget_warning(c: &Config) -> Option<String> {
    let SinkConfig::Nexus(n) = &c.upload.sink else {
        return None;
    };
    let sets = c.group_sets();
    if sets < 2 {
        return None;
    }
    let plan = super::platform::session_plan(
        sets,
        c.upload.batch.max_age,
        n.session_rate_limit,
        n.session_rate_window,
    );
    (plan.per_window > u64::from(n.session_rate_limit)).then(|| {
        format!(
            "{sets} group set(s) among the cameras with batch_max_age_secs = {} would need up to {} upload sessions per {} s, more than session_rate_limit = {}: batches wait up to {} s instead so that every set gets its share (set batch_max_age_secs to at least that, or give the cameras the same groups)",
            c.upload.batch.max_age.as_secs(),
            if plan.per_window == u64::MAX { "unbounded".to_string() } else { plan.per_window.to_string() },
            n.session_rate_window.as_secs(),
            n.session_rate_limit,
            plan.batch_age.as_secs(),
        )
    })
}

/// Characters allowed in device ids, camera names and rendered filenames.
pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::camera::check_filename_template;

    #[test]
    fn filename_templates_need_run_and_seq_and_safe_characters() {
        assert!(check_filename_template("{device}_{camera}_{time}_{run}-{seq}").is_ok());
        assert!(check_filename_template("{run}{seq}").is_ok());
        assert!(check_filename_template("{time}_{seq}").is_err());
        assert!(check_filename_template("{run}-{seq}/x").is_err());
        assert!(check_filename_template("{run}-{seq}-{nope}").is_err());
        assert!(check_filename_template("{run-{seq}").is_err());
    }
}
