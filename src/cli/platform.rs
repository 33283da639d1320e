//! What the platform commands share (`nexus …`, `picsellia …`, `verify`): the runtime
//! they run on, the question before a delete, and typed `key=value` metadata.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use edgecap::config::MetaValue;

/// A small runtime for one command.
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Asks on the terminal; refuses without one (a script passes `--yes`).
#[allow(clippy::print_stderr, reason = "the question goes to the terminal")]
pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} Not asked: stdin is not a terminal (pass --yes)");
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// `key=value` pairs as flat custom metadata: integers, floats and `true`/`false` typed,
/// anything else a string.
pub(super) fn metadata(pairs: &[String]) -> anyhow::Result<BTreeMap<String, MetaValue>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--metadata {p:?}: expected KEY=VALUE");
        };
        if k.trim().is_empty() {
            bail!("--metadata {p:?}: the key is empty");
        }
        let value = if let Ok(i) = v.parse::<i64>() {
            MetaValue::Int(i)
        } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
            MetaValue::Float(f)
        } else if let Ok(b) = v.parse::<bool>() {
            MetaValue::Bool(b)
        } else {
            MetaValue::Str(v.to_string())
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}
