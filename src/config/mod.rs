//! Configuration: the TOML file, its checks, and the [`Config`] the rest of edgecap reads.
//!
//! Two stages, as ripgrep splits its flags into low-level parsing and resolving against
//! the environment:
//!
//! 1. [`parse`] (pure): `raw.rs` mirrors the file with serde (`deny_unknown_fields`
//!    everywhere); `validate/` checks every value into the types of `types.rs` and collects
//!    *all* problems, each with its key path and line (`locate.rs`), instead of stopping at
//!    the first. Each top-level section and each `[[camera]]` is deserialized on its own,
//!    so one bad section does not hide the errors of another. What needs the machine is
//!    recorded as [`Deferred`] checks.
//! 2. [`resolve()`]: answers those checks (host name, secret key, folder rights) and gives a
//!    [`Resolved`] config. Only the commands that need them call it.
//!
//! Before both, `layers.rs` merges the main file with the drop-ins of `conf.d/` beside it and
//! a few environment overrides into one document, keeping each value's origin, so that
//! problems name the file and line (or variable) that set a value.
//!
//! The commented template `config/edgecap.toml` is the reference for every key; it is
//! compiled in and printed by `edgecap config print-default`. `platform.rs` holds the
//! platform limits the checks and the uploader share.
//!
//! Relative paths (queue dir, directory sink, secret file) are taken relative to the
//! working directory, which is `/` under systemd: use absolute paths there.

mod layers;
mod locate;
pub mod platform;
mod raw;
mod resolve;
mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use raw::{DrainOrder, PixelFormat};
pub use resolve::{Resolved, Stage, resolve, resolve_at, resolve_platform};
pub use types::*;
pub use validate::{BUILTIN_METADATA_KEYS, FILENAME_PLACEHOLDERS, parse};

/// The commented default config, byte for byte what `config print-default` prints.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../config/edgecap.toml");

/// Where the commands look for the config file when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/edgecap/edgecap.toml";

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `camera[0].source.width` (empty for syntax errors).
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// The file, when the config has more than one (drop-ins, overrides).
    pub file: Option<PathBuf>,
}

impl Problem {
    /// The same problem, found in `file`.
    pub fn in_file(self, file: PathBuf) -> Self {
        Self {
            file: Some(file),
            ..self
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{path}: {} problem(s):\n{}", .problems.len(), render_problems(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a config file with its drop-ins and environment overrides
/// (`layers.rs`; nothing else of the machine is asked: see [`resolve()`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let layers = layers::Layers::read(path)?;
    check(&layers, path).map(|(c, _)| c)
}

/// The merged config: each value's origin, and the files and overrides it was made of.
pub struct Effective {
    doc: toml::Table,
    origins: layers::Origins,
    /// The files read, the main file first.
    pub files: Vec<PathBuf>,
    /// The overrides set: (variable, key).
    pub overrides: Vec<(&'static str, &'static str)>,
}

impl Effective {
    /// The merged document as TOML, secrets masked; with `origins`, each value followed
    /// by where it came from.
    pub fn render(&self, origins: bool) -> String {
        let none = layers::Origins::default();
        layers::render_effective(&self.doc, if origins { &self.origins } else { &none })
    }
}

/// [`load`], and the merged document with each value's origin (`config print --effective`).
pub fn load_layered(path: &Path) -> Result<(Config, Effective), ConfigError> {
    let layers = layers::Layers::read(path)?;
    let (cfg, merged) = check(&layers, path)?;
    // A plain config was checked as its own text: its origins are read only here.
    let (doc, origins) = match merged {
        Some(m) => m,
        None => layers.merge().unwrap_or_default(),
    };
    Ok((
        cfg,
        Effective {
            doc,
            origins,
            files: layers.files().map(Path::to_path_buf).collect(),
            overrides: layers.overrides().collect(),
        },
    ))
}

/// Checks the layers: a plain config as its own text (the merged document: None), any
/// other merged, each problem and deferred check placed at the file and line (or
/// variable) that set its value.
fn check(
    layers: &layers::Layers,
    path: &Path,
) -> Result<(Config, Option<(toml::Table, layers::Origins)>), ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    if layers.is_plain() {
        return Ok((parse(layers.main_text()).map_err(invalid)?, None));
    }
    let (doc, origins) = layers.merge().map_err(invalid)?;
    let merged = toml::to_string(&doc).map_err(|e| {
        invalid(vec![Problem {
            key: String::new(),
            line: None,
            message: format!("the merged config cannot be written as TOML: {e}"),
            file: None,
        }])
    })?;
    // Lines of the merged text mean nothing to the user: each problem and each deferred
    // check names the file and line that set the value.
    let place = |key: &str| match origins.of(key) {
        Some(layers::Origin::File { path, line }) => (Some(path.clone()), Some(*line)),
        Some(layers::Origin::Env(var)) => (Some(PathBuf::from(format!("${var}"))), None),
        None => (Some(path.to_path_buf()), None),
    };
    let mut cfg = parse(&merged).map_err(|problems| {
        invalid(
            problems
                .into_iter()
                .map(|p| {
                    let (file, line) = place(&p.key);
                    Problem { file, line, ..p }
                })
                .collect(),
        )
    })?;
    for d in &mut cfg.deferred {
        if let Deferred::Writable { site, .. } | Deferred::Secret { site, .. } = d {
            (site.file, site.line) = place(&site.key);
        }
    }
    Ok((cfg, Some((doc, origins))))
}

/// The problem of a file that is not UTF-8 at byte `at`: its line, and the byte within
/// the line (1-based).
fn not_utf8(bytes: &[u8], at: usize) -> Problem {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let byte = bytes.get(at).copied().unwrap_or(0);
    Problem {
        key: String::new(),
        line: Some(line),
        message: format!(
            "byte {} of this line (0x{byte:02x}) is not UTF-8 text: save the file as UTF-8",
            at - line_start + 1
        ),
        file: None,
    }
}

#[cfg(test)]
mod tests {
    use super::raw::*;
    use super::*;
    use serde::de::DeserializeOwned;
    use std::fmt;

    /// A deserializer that only records the field names serde asks for.
    struct Grab<'a>(&'a mut Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for Grab<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn fields_of<T: DeserializeOwned>() -> Vec<&'static str> {
        let mut v = Vec::new();
        let _ = T::deserialize(Grab(&mut v));
        v
    }

    #[test]
    fn every_config_key_is_documented_in_the_template() {
        let mut keys = Vec::new();
        keys.extend(fields_of::<RawDevice>());
        keys.extend(fields_of::<RawDaemon>());
        keys.extend(fields_of::<RawCamera>());
        keys.extend(fields_of::<RawQueue>());
        keys.extend(fields_of::<RawUpload>());
        keys.extend(fields_of::<RawTransform>());
        keys.extend(fields_of::<RawChangeDetection>());
        keys.extend(fields_of::<RawPicsellia>());
        // The source enum is internally tagged; serde does not list its fields.
        keys.extend([
            "type",
            "width",
            "height",
            "jpeg_quality",
            "device",
            "device_fps",
            "format",
            "frame_timeout_secs",
            "argv",
            "max_frame_bytes",
        ]);
        assert!(keys.len() > 40, "introspection found {} keys", keys.len());
        for k in keys {
            let documented = DEFAULT_TEMPLATE.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{k} ="))
                    || l == format!("[camera.{k}]")
                    || l == format!("[upload.{k}]")
            });
            assert!(documented, "`{k}` is not documented in config/edgecap.toml");
        }
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        // Every commented `key = value` in the template, uncommented on its own, must
        // produce the same checked value as leaving it out.
        let base = DEFAULT_TEMPLATE;
        // Which line a deferred check points at moves when a line above is uncommented.
        let cfg = |text: &str| {
            parse(text).map(|mut c| {
                for d in &mut c.deferred {
                    if let Deferred::Writable { site, .. } | Deferred::Secret { site, .. } = d {
                        site.line = None;
                    }
                }
                c
            })
        };
        let plain = cfg(base).expect("template validates");
        let mut checked = 0;
        for line in base.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, _)) = rest.split_once(" = ") else {
                continue;
            };
            if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            // Alternatives rather than defaults.
            if [
                "fps",
                "secret_key",
                "secret_key_file",
                "secret_key_credential",
                "path",
                "site",
                "label",
                "id",
                "http_listen",
                "metrics_textfile",
                "windows",
                "max_upload_rate",
                "daily_budget",
                "monthly_budget",
            ]
            .contains(&key)
            {
                continue;
            }
            let text = base.replacen(line, rest, 1);
            let uncommented = cfg(&text).unwrap_or_else(|p| panic!("{rest}: {p:?}"));
            assert_eq!(
                format!("{:?}", uncommented),
                format!("{:?}", plain),
                "the template's `{rest}` is not the default"
            );
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} defaults checked");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let cfg = parse(&DEFAULT_TEMPLATE.replace(
            "secret_key_env = \"EDGECAP_SECRET_KEY\"",
            "secret_key = \"hunter2-very-secret\"",
        ))
        .expect("valid");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
