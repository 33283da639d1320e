//! Maps byte offsets and key paths of a parsed TOML document to line numbers, so every
//! config error can say where it is.
//!
//! The document is parsed once with `toml::de::DeTable`, which keeps the span of every key
//! and value. Serde errors carry a span; semantic checks know a key path. Both end up as a
//! `(key path, line)` pair through this module.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key inside a table.
    Key(String),
    /// An index inside an array (an array of tables such as `[[camera]]`).
    Index(usize),
}

/// Renders a key path the way a user writes it: `camera[1].source.width`.
pub fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// 1-based line number of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The parsed document plus its text, for span look-ups.
pub struct Locator<'a> {
    text: &'a str,
    root: &'a Spanned<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    /// Wraps a parsed document and the text it came from.
    pub fn new(text: &'a str, root: &'a Spanned<DeTable<'a>>) -> Self {
        Self { text, root }
    }

    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Line of a key path: the key itself when it exists, otherwise the deepest existing
    /// ancestor (a missing key is reported at the table that should hold it).
    pub fn line_of_path(&self, path: &[Seg]) -> Option<usize> {
        self.span_of_path(path).map(|s| self.line_of(s.start))
    }

    fn span_of_path(&self, path: &[Seg]) -> Option<Range<usize>> {
        let mut best: Option<Range<usize>> = None;
        let mut table: Option<&DeTable<'_>> = Some(self.root.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    let t = match (table, value) {
                        (Some(t), _) => t,
                        (None, Some(v)) => match v.get_ref() {
                            DeValue::Table(t) => t,
                            _ => break,
                        },
                        _ => break,
                    };
                    let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        break;
                    };
                    best = Some(key.span());
                    value = Some(v);
                    table = None;
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(items)) = value.map(|v| v.get_ref()) else {
                        break;
                    };
                    let Some(item) = items.get(*i) else { break };
                    best = Some(item.span());
                    value = Some(item);
                    table = None;
                }
            }
        }
        best
    }

    /// The deepest key path whose value span contains `offset`: turns a serde error's
    /// span back into the key it is about.
    pub fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        walk_table(self.root.get_ref(), offset, &mut path);
        path
    }
}

fn walk_table(t: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) {
    for (k, v) in t.iter() {
        let ks = k.span();
        let vs = v.span();
        if ks.contains(&offset) {
            path.push(Seg::Key(k.get_ref().to_string()));
            return;
        }
        if vs.contains(&offset) || (vs.start == offset && vs.is_empty()) {
            path.push(Seg::Key(k.get_ref().to_string()));
            walk_value(v.get_ref(), offset, path);
            return;
        }
    }
    // Tables written as `[section]` headers: the value span may not cover the body, so
    // also descend into any sub-table whose children contain the offset.
    for (k, v) in t.iter() {
        if contains_deep(v, offset) {
            path.push(Seg::Key(k.get_ref().to_string()));
            walk_value(v.get_ref(), offset, path);
            return;
        }
    }
}

fn walk_value(v: &DeValue<'_>, offset: usize, path: &mut Vec<Seg>) {
    match v {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.span().contains(&offset) || contains_deep(item, offset) {
                    path.push(Seg::Index(i));
                    walk_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

fn contains_deep(v: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    if v.span().contains(&offset) {
        return true;
    }
    match v.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| k.span().contains(&offset) || contains_deep(v, offset)),
        DeValue::Array(items) => items.iter().any(|i| contains_deep(i, offset)),
        _ => false,
    }
}
