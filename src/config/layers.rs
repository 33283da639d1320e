//! Config layers: the main file, the drop-ins of `conf.d/` beside it, and a documented few
//! environment overrides, merged into one document before it is checked — so one image
//! (the main file) serves a whole fleet, and each device adds its few values (a drop-in
//! written by Ansible, or `EDGECAP_DEVICE_ID` from balena's device variables).
//!
//! - **Order**: the main file, then `conf.d/*.toml` in byte order of their names (`10-site.toml`
//!   before `20-device.toml`; other files and hidden files are ignored), then the
//!   environment ([`ENV_OVERRIDES`]). A later layer wins.
//! - **Merge**: tables merge key by key, to any depth; any other value — a string, a
//!   number, a list, and a list of tables such as `[[camera]]` — is replaced whole by the
//!   later layer (a drop-in that sets `[[camera]]` gives the cameras, it does not add one).
//! - **Origins**: every value keeps where it came from (file and line, or variable), so a
//!   problem found in the merged document names the file and line that set the value, and
//!   `config print --effective` shows each value's origin.
//!
//! A config without drop-ins and without overrides is checked as its own text, exactly as
//! before layers existed (its problems carry no file name: there is only one).
//!
//! The merge works on `toml::Table` values and the merged document is checked as TOML
//! text, so the checks in `validate/` know nothing of layers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::{Spanned, Table, Value};

use super::locate::{Seg, line_of, render_path};
use super::{ConfigError, Problem};

/// The environment variables that override a value, the key they set, and why a fleet
/// needs them per device.
pub const ENV_OVERRIDES: [(&str, &str, &str); 4] = [
    (
        "EDGECAP_DEVICE_ID",
        "device.id",
        "the device's id (filenames, metadata)",
    ),
    (
        "EDGECAP_HTTP_LISTEN",
        "daemon.http_listen",
        "the address /metrics is served on",
    ),
    ("EDGECAP_QUEUE_DIR", "queue.dir", "the queue folder"),
    (
        "EDGECAP_PROJECT_ID",
        "upload.project_id",
        "the Nexus project (a staging device, a pilot site)",
    ),
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file, at a line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::Env(var) => write!(f, "${var}"),
        }
    }
}

/// The layers read from disk and the environment.
#[derive(Debug)]
pub struct Layers {
    /// (file, its text), the main file first.
    files: Vec<(PathBuf, String)>,
    /// (variable, value) of the overrides set.
    env: Vec<(&'static str, &'static str, String)>,
}

/// The drop-in folder of a main config file: `conf.d/` beside it.
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("."))
        .join("conf.d")
}

impl Layers {
    /// Reads the main file, its drop-ins and the overrides set in the environment.
    pub fn read(main: &Path) -> Result<Self, ConfigError> {
        Self::read_with_env(main, |k| std::env::var(k).ok())
    }

    /// [`Layers::read`] with the environment given (tests).
    pub fn read_with_env(
        main: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut files = vec![(main.to_path_buf(), read_text(main)?)];
        let dir = drop_in_dir(main);
        // No folder: no drop-ins. A folder that cannot be listed is an error, not an
        // empty one: the daemon must not run without values someone put there.
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ConfigError::Read { path: dir, source }),
        };
        if let Some(entries) = entries {
            let mut names: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "toml")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| !n.starts_with('.'))
                        && p.is_file()
                })
                .collect();
            names.sort();
            for p in names {
                let text = read_text(&p)?;
                files.push((p, text));
            }
        }
        let env = ENV_OVERRIDES
            .iter()
            .filter_map(|(var, key, _)| env(var).map(|v| (*var, *key, v)))
            .collect();
        Ok(Self { files, env })
    }

    /// Only the main file: checked as its own text.
    pub fn is_plain(&self) -> bool {
        self.files.len() == 1 && self.env.is_empty()
    }

    /// The main file's text.
    pub fn main_text(&self) -> &str {
        &self.files[0].1
    }

    /// The files read, the main file first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The overrides set: (variable, key).
    pub fn overrides(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.env.iter().map(|(v, k, _)| (*v, *k))
    }

    /// The merged document and each value's origin. A file that is not TOML is a problem
    /// naming that file and line.
    pub fn merge(&self) -> Result<(Table, Origins), Vec<Problem>> {
        let mut merged = Table::new();
        let mut origins = Origins::default();
        for (path, text) in &self.files {
            let (table, spans) = match (text.parse::<Table>(), DeTable::parse(text)) {
                (Ok(t), Ok(d)) => (t, d),
                _ => {
                    // The checks' own wording of the syntax error, with this file's name.
                    let problems = super::validate::parse(text)
                        .err()
                        .unwrap_or_else(|| vec![syntax_problem()]);
                    return Err(problems
                        .into_iter()
                        .map(|p| p.in_file(path.clone()))
                        .collect());
                }
            };
            let mut seen = Vec::new();
            leaves(spans.get_ref(), &mut Vec::new(), &mut seen);
            merge_table(&mut merged, table, &mut Vec::new(), &mut origins);
            for (key, offset) in seen {
                origins.0.insert(
                    key,
                    Origin::File {
                        path: path.clone(),
                        line: line_of(text, offset),
                    },
                );
            }
        }
        for (var, key, value) in &self.env {
            // Every override is `section.key`.
            let Some((section, name)) = key.split_once('.') else {
                continue;
            };
            let entry = merged
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = entry {
                t.insert(name.to_string(), Value::String(value.clone()));
                origins.0.insert((*key).to_string(), Origin::Env(var));
            }
        }
        Ok((merged, origins))
    }
}

fn syntax_problem() -> Problem {
    Problem {
        key: String::new(),
        line: None,
        message: "TOML syntax error".into(),
        file: None,
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: vec![super::not_utf8(e.as_bytes(), e.utf8_error().valid_up_to())],
    })
}

/// Where each value of the merged document came from, by key path
/// (`camera[0].source.width`).
#[derive(Debug, Default, Clone)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// The origin of `key`: its own, or that of the nearest value above it (a problem
    /// about a table names where the table was written), or the first value below it.
    pub fn of(&self, key: &str) -> Option<&Origin> {
        if let Some(o) = self.0.get(key) {
            return Some(o);
        }
        let mut k = key;
        while let Some(cut) = k.rfind(['.', '[']) {
            k = &k[..cut];
            if let Some(o) = self.0.get(k) {
                return Some(o);
            }
        }
        self.0.iter().find(|(p, _)| below(p, key)).map(|(_, o)| o)
    }

    /// Drops the origins at and below `key` (a later layer replaced the value).
    fn forget(&mut self, key: &str) {
        self.0.retain(|p, _| !(p == key || below(p, key)));
    }
}

/// Whether the key path `p` lies below `key` (`upload.x` below `upload`, `camera[0]` below
/// `camera`; not `uploads` below `upload`).
fn below(p: &str, key: &str) -> bool {
    p.strip_prefix(key)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Every value's key path and the byte offset of its key, in a parsed file.
fn leaves(t: &DeTable<'_>, path: &mut Vec<Seg>, out: &mut Vec<(String, usize)>) {
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        leaf(v, k.span().start, path, out);
        path.pop();
    }
}

fn leaf(v: &Spanned<DeValue<'_>>, at: usize, path: &mut Vec<Seg>, out: &mut Vec<(String, usize)>) {
    match v.get_ref() {
        DeValue::Table(t) => {
            out.push((render_path(path), at));
            leaves(t, path, out);
        }
        DeValue::Array(items)
            if items.iter().all(|i| i.get_ref().is_table()) && !items.is_empty() =>
        {
            out.push((render_path(path), at));
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                leaf(item, item.span().start, path, out);
                path.pop();
            }
        }
        _ => out.push((render_path(path), at)),
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced whole (with the
/// origins below it forgotten, the caller records the new ones).
fn merge_table(base: &mut Table, over: Table, path: &mut Vec<Seg>, origins: &mut Origins) {
    for (k, v) in over {
        path.push(Seg::Key(k.clone()));
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge_table(b, o, path, origins),
            (_, v) => {
                origins.forget(&render_path(path));
                base.insert(k, v);
            }
        }
        path.pop();
    }
}

/// The keys whose values `config print --effective` masks.
const SECRET_KEYS: [&str; 2] = ["secret_key", "api_token"];

/// The merged document as TOML, each value followed by its origin as a comment; secrets
/// masked.
pub fn render_effective(doc: &Table, origins: &Origins) -> String {
    let mut out = String::new();
    render_table(doc, &mut Vec::new(), origins, &mut out);
    out
}

fn render_table(t: &Table, path: &mut Vec<Seg>, origins: &Origins, out: &mut String) {
    let is_array_of_tables = |v: &Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_table))
    };
    for (k, v) in t {
        if v.is_table() || is_array_of_tables(v) {
            continue;
        }
        path.push(Seg::Key(k.clone()));
        let shown = if SECRET_KEYS.contains(&k.as_str()) {
            "\"***\"".to_string()
        } else {
            v.to_string()
        };
        let origin = origins
            .0
            .get(&render_path(path))
            .map_or(String::new(), |o| format!("  # {o}"));
        let _ = writeln!(out, "{} = {shown}{origin}", toml_key(k));
        path.pop();
    }
    for (k, v) in t {
        path.push(Seg::Key(k.clone()));
        if let Value::Table(sub) = v {
            if sub.is_empty() {
                path.pop();
                continue;
            }
            let _ = writeln!(out, "\n[{}]", dotted(path));
            render_table(sub, path, origins, out);
        } else if let Some(items) = v.as_array().filter(|_| is_array_of_tables(v)) {
            for (i, item) in items.iter().enumerate() {
                let header = dotted(path);
                path.push(Seg::Index(i));
                let _ = writeln!(out, "\n[[{header}]]");
                if let Value::Table(sub) = item {
                    render_table(sub, path, origins, out);
                }
                path.pop();
            }
        }
        path.pop();
    }
}

/// A table header's dotted name (array indices left out, as TOML headers write them).
fn dotted(path: &[Seg]) -> String {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(toml_key(k)),
            Seg::Index(_) => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}
