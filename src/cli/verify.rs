//! `edgecap verify`: the receipts of the config's queue checked against its platform
//! (`upload::verify`). Reads the receipt log only (never opens the queue), so it works
//! while the daemon runs. Exit 0 when every checked frame is there, 1 on any gap.

use std::io::Write;

use anyhow::{Context, bail};
use edgecap::config::Resolved;
use edgecap::upload::verify::{self, Selection, VerifyReport};

use super::platform::runtime;

/// Runs `verify`; `Ok(false)` when there are gaps.
pub fn run(
    resolved: &Resolved,
    since: Option<&str>,
    sample: Option<usize>,
    rate: f64,
    repair: bool,
    json: bool,
) -> anyhow::Result<bool> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be greater than 0");
    }
    let now = edgecap::frame::unix_ms(std::time::SystemTime::now());
    let since_ms = since
        .map(|s| {
            duration_ms(s)
                .map(|d| now - d)
                .with_context(|| format!("--since {s:?}: a duration such as 90m, 24h or 7d"))
        })
        .transpose()?;
    let cfg = &resolved.config;
    let receipts = edgecap::queue::read_receipts(&cfg.queue.dir);
    let selected = verify::select(
        &receipts,
        Selection {
            since_ms,
            sample,
            rate,
        },
    );
    let report = runtime()?
        .block_on(verify::verify(
            &cfg.upload.sink,
            resolved.secret.clone(),
            &resolved.device_id,
            selected,
            receipts.len(),
            rate,
        ))
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print(&mut out, &report, cfg.upload.sink.name())?;
    }
    if repair && json {
        // stdout holds the JSON report.
        requeue(&mut std::io::stderr().lock(), cfg, &report)?;
    } else if repair {
        requeue(&mut out, cfg, &report)?;
    }
    Ok(!report.has_gaps())
}

/// `--repair`: the missing frames queued again from the kept delivered frames.
fn requeue(
    out: &mut impl Write,
    cfg: &edgecap::config::Config,
    report: &VerifyReport,
) -> anyhow::Result<()> {
    let missing: Vec<&verify::Checked> = report
        .gaps
        .iter()
        .filter(|g| g.finding == verify::Finding::Missing)
        .collect();
    if missing.is_empty() {
        writeln!(out, "repair: nothing missing")?;
        return Ok(());
    }
    if edgecap::queue::Queue::held_elsewhere(&cfg.queue.dir)? {
        bail!(
            "repair: the daemon holds the queue {}; stop the service first (systemctl stop edgecap), then run verify --repair again",
            cfg.queue.dir.display()
        );
    }
    let (queue, _) = edgecap::queue::Queue::open(&cfg.queue)?;
    let seqs: Vec<u64> = missing.iter().filter_map(|g| g.seq).collect();
    let results: std::collections::HashMap<u64, Result<(), String>> =
        queue.requeue_kept(&seqs).into_iter().collect();
    let mut queued = 0;
    for g in missing {
        let res = match g.seq {
            Some(seq) => results
                .get(&seq)
                .cloned()
                .unwrap_or_else(|| Err("not tried".into())),
            None => Err("its receipt has no sequence number (written by an older edgecap)".into()),
        };
        match res {
            Ok(()) => {
                queued += 1;
                writeln!(out, "  queued again      {}", g.filename)?;
            }
            Err(why) => writeln!(out, "  cannot send again {}: {why}", g.filename)?,
        }
    }
    writeln!(
        out,
        "repair: {queued} frame(s) queued again; the daemon sends them at its next start"
    )?;
    Ok(())
}

/// `90s`, `90m`, `24h`, `7d` (or what jiff reads, e.g. `1h 30m`) in milliseconds.
fn duration_ms(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let unit = |suffix: char, ms: i64| {
        s.strip_suffix(suffix)
            .and_then(|n| n.trim().parse::<i64>().ok())
            .map(|n| n.saturating_mul(ms))
    };
    if let Some(ms) = unit('d', 86_400_000)
        .or_else(|| unit('h', 3_600_000))
        .or_else(|| unit('m', 60_000))
        .or_else(|| unit('s', 1000))
    {
        return Ok(ms);
    }
    let d: jiff::SignedDuration = s.parse()?;
    Ok(d.as_millis() as i64)
}

fn print(out: &mut impl Write, r: &VerifyReport, sink: &str) -> std::io::Result<()> {
    let n = |k: &str| r.counts.get(k).copied().unwrap_or(0);
    writeln!(
        out,
        "verify ({sink}): {} receipt(s), {} frame(s) checked: {} ok, {} missing, {} without metadata, {} mismatched, {} could not be checked",
        r.receipts,
        r.checked,
        n("ok"),
        n("missing"),
        n("metadata_missing"),
        n("mismatched"),
        n("unknown")
    )?;
    for g in &r.gaps {
        let when = edgecap::frame::rfc3339_utc(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(g.delivered_ms.max(0) as u64),
        );
        let what = g.finding.name();
        writeln!(
            out,
            "  {what:<16}  {}  delivered {when}  {}",
            g.filename, g.detail
        )?;
    }
    if r.has_gaps() {
        writeln!(
            out,
            "gaps found. `verify --repair` queues missing frames again while delivered frames are kept (keep_delivered_bytes)."
        )?;
    }
    Ok(())
}
