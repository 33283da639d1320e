//! Log output. Under systemd, when stderr is the journal stream (`JOURNAL_STREAM` matches
//! it), events go to journald natively through `systemd-journal-logger`: the level becomes
//! `PRIORITY`, and every structured field becomes a journal field of its own (`camera` →
//! `CAMERA`, `sequence` → `FRAME_SEQ`, `backlog_frames` → `QUEUE_DEPTH`, `error` → `ERROR`,
//! others upper-cased), so `journalctl -u edgecap CAMERA=door` works. The `MESSAGE` keeps
//! the fields too, as `key=value`, for plain `journalctl` reading. Anywhere else, plain
//! stderr (ANSI colours only on a terminal and without `NO_COLOR`).
//!
//! `RUST_LOG` filters in both cases (default `info`).

use std::fmt::{self, Write as _};

use log::kv::{Key, Source, Value, VisitSource};
use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// The journal field a tracing field is stored under.
pub fn journal_field(name: &str) -> String {
    match name {
        "camera" => "CAMERA".into(),
        "sequence" | "seq" => "FRAME_SEQ".into(),
        "backlog_frames" => "QUEUE_DEPTH".into(),
        "error" => "ERROR".into(),
        other => {
            let mut f: String = other
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            // Fields must start with a letter; '_' is reserved for journald itself.
            if !f.starts_with(|c: char| c.is_ascii_uppercase()) {
                f.insert_str(0, "F_");
            }
            f
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((field.name(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((field.name(), format!("{value:?}")));
        }
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl Source for Pairs<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for (k, v) in self.0 {
            visitor.visit_pair(Key::from_str(k), Value::from(v.as_str()))?;
        }
        Ok(())
    }
    fn count(&self) -> usize {
        self.0.len()
    }
}

/// A tracing layer that writes each event to journald.
pub struct JournalLayer {
    journal: JournalLog,
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut message = fields.message;
        for (k, v) in &fields.pairs {
            let _ = write!(message, " {k}={v}");
        }
        let pairs: Vec<(String, String)> = fields
            .pairs
            .into_iter()
            .map(|(k, v)| (journal_field(k), v.trim_matches('"').to_string()))
            .collect();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let kv = Pairs(&pairs);
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kv)
                .build(),
        );
    }
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Where logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Native journald.
    Journal,
    /// Plain stderr.
    Stderr,
}

/// Installs the global subscriber: journald when stderr is the journal, else stderr.
pub fn init() -> Output {
    if systemd_journal_logger::connected_to_journal()
        && let Ok(journal) = JournalLog::new()
    {
        let journal = journal.with_syslog_identifier("edgecap".to_string());
        let ok = tracing_subscriber::registry()
            .with(filter())
            .with(JournalLayer { journal })
            .try_init()
            .is_ok();
        if ok {
            return Output::Journal;
        }
    }
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
    Output::Stderr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_become_valid_journal_fields() {
        assert_eq!(journal_field("camera"), "CAMERA");
        assert_eq!(journal_field("sequence"), "FRAME_SEQ");
        assert_eq!(journal_field("backlog_frames"), "QUEUE_DEPTH");
        assert_eq!(journal_field("dropped_budget"), "DROPPED_BUDGET");
        assert_eq!(journal_field("_x"), "F__X");
        assert_eq!(journal_field("9lives"), "F_9LIVES");
    }
}
