//! `edgecap status` and `edgecap queue stats`: views of one
//! [`Snapshot`](edgecap::ops::snapshot::Snapshot). While a daemon holds the queue they read
//! its status file (never the queue); otherwise `queue stats` takes the snapshot from the
//! queue itself. `--json` prints the snapshot as it is.

use anyhow::Context;

use edgecap::config::Config;
use edgecap::ops::snapshot::{self, Snapshot};
use edgecap::queue::Queue;

/// `status --watch`: the status again every `every`, on a cleared terminal, until
/// interrupted.
pub(super) fn watch(cfg: &Config, every: std::time::Duration) -> anyhow::Result<bool> {
    loop {
        // Clear the screen and go home (ANSI), as `watch(1)` does.
        print!("\x1b[2J\x1b[H");
        println!("every {} s; Ctrl-C to leave", every.as_secs_f64());
        status(cfg, false)?;
        std::thread::sleep(every);
    }
}

/// Prints the daemon's status; `Ok(true)` when it runs.
pub(super) fn status(cfg: &Config, json: bool) -> anyhow::Result<bool> {
    let running = Queue::held_elsewhere(&cfg.queue.dir)?;
    let path = &cfg.daemon.status_file;
    let file = snapshot::read(path);
    if json {
        let st = file.as_ref().ok();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "running": running,
                "status_file": path.display().to_string(),
                "status": st,
            }))?
        );
        return Ok(running);
    }
    match (running, file) {
        (true, Ok(st)) => {
            println!(
                "edgecap is running: pid {}, run {}, device {}, since {}",
                st.pid, st.run_id, st.device, st.started_at
            );
            print_details(&st);
        }
        (true, Err(e)) => println!(
            "edgecap is running (it holds the queue {}), but its status file {} cannot be read: {e}",
            cfg.queue.dir.display(),
            path.display()
        ),
        (false, Ok(st)) => {
            println!(
                "edgecap is not running (nothing holds the queue {}). Last status, written {} ({}):",
                cfg.queue.dir.display(),
                st.updated_at,
                st.state
            );
            print_details(&st);
        }
        (false, Err(_)) => println!(
            "edgecap is not running (nothing holds the queue {}), and there is no status file at {}.",
            cfg.queue.dir.display(),
            path.display()
        ),
    }
    Ok(running)
}

fn print_details(st: &Snapshot) {
    use edgecap::ops::snapshot::local_time;
    let u = &st.uploader;
    println!("  uploader: {}", u.text());
    println!(
        "    last success: {}; last 5 min: {:.1} frames/min, {:.2} MB/min",
        u.last_success_ms
            .map_or("none yet".to_string(), |ms| local_time(ms, true)),
        u.frames_per_min,
        u.bytes_per_min / 1e6
    );
    if let (Some(e), Some(at)) = (&u.last_error, u.last_error_ms) {
        println!("    last error ({}): {e}", local_time(at, true));
    }
    let mut link = Vec::new();
    if let Some(left) = u.budget_left_bytes {
        link.push(format!(
            "sent today {:.1} MB, this budget month {:.1} MB, budget left {:.1} MB",
            u.sent_today_bytes as f64 / 1e6,
            u.sent_month_bytes as f64 / 1e6,
            left as f64 / 1e6
        ));
    }
    if let Some(ms) = u.next_window_ms {
        link.push(format!("next window {}", local_time(ms, false)));
    }
    if let Some(cap) = u.rate_cap_bytes_per_sec {
        link.push(format!("cap {:.2} Mbit/s", cap as f64 * 8.0 / 1e6));
    }
    if let Some(g) = u.link_bytes_per_sec {
        link.push(format!("measured {:.2} Mbit/s", g * 8.0 / 1e6));
    }
    if let Some(rate) = u.session_rate.filter(|_| u.rate_limited > 0) {
        link.push(format!(
            "sessions {rate:.2} per window (slowed by {} × 429 since start: the project's limit is shared)",
            u.rate_limited
        ));
    }
    if !link.is_empty() {
        println!("    link: {}", link.join("; "));
    }
    println!("  {}", st.line());
    println!(
        "  dropped: budget {} ({} queued frames evicted), write errors {}, capture buffer {}; quarantined {}",
        st.counters.dropped_budget,
        st.counters.evicted,
        st.counters.dropped_write,
        st.run.dropped_buffer,
        st.counters.quarantined
    );
    println!(
        "  sent again: after a crash or stop {}, after an error {}; index repaired {} time(s)",
        st.counters.resent_after_crash, st.counters.resent_after_error, st.counters.index_repairs
    );
    println!("  {}", receipts_line(&st.receipts));
    for c in &st.cameras {
        println!(
            "  camera {}: {}, {:.2} fps, last frame {}, {} restart(s); {} frames, {} errors, {} unchanged (skipped), {} bad, {} dropped (buffer)",
            c.name,
            if c.state.is_empty() {
                "starting"
            } else {
                &c.state
            },
            c.fps,
            c.last_frame_ms
                .map_or("never".to_string(), |ms| local_time(ms, false)),
            c.restarts,
            c.produced,
            c.errors,
            c.skipped_unchanged,
            c.bad_frames,
            c.dropped_buffer
        );
    }
    println!("  updated {} (state {})", st.updated_at, st.state);
}

/// `edgecap queue stats`.
pub(super) fn queue_stats(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let live = Queue::held_elsewhere(&cfg.queue.dir)?;
    let snap = if live {
        // Never open a live queue: answer from the daemon's status file.
        let path = &cfg.daemon.status_file;
        snapshot::read(path).with_context(|| {
            format!(
                "the daemon holds the queue {} and its status file {} cannot be read",
                cfg.queue.dir.display(),
                path.display()
            )
        })?
    } else if !edgecap::queue::may_open(&cfg.queue.dir) {
        return read_only_stats(cfg, json);
    } else {
        let (q, _) = Queue::open(&cfg.queue)?;
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            state: "idle".to_string(),
            updated_at: edgecap::frame::rfc3339_utc(std::time::SystemTime::now()),
            queue_dir: cfg.queue.dir.display().to_string(),
            receipts: q.receipt_stats(),
            ..Snapshot::default()
        }
        .with_queue(&q.stats(), q.oldest_waiting_age().map(|d| d.as_secs()))
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
        return Ok(());
    }
    if live {
        println!(
            "queue {} (live, from the daemon's status file written {})",
            cfg.queue.dir.display(),
            snap.updated_at
        );
        println!("  {}", snap.line());
        return Ok(());
    }
    let c = snap.counters;
    println!("queue {}", cfg.queue.dir.display());
    for (name, t) in [
        ("pending  ", snap.pending),
        ("in flight", snap.inflight),
        ("dead     ", snap.dead),
    ] {
        println!("  {name} {:>8} frames {:>14} bytes", t.frames, t.bytes);
    }
    println!(
        "  lifetime: committed {}, uploaded {}, dropped (budget) {} of which evicted {}, dropped (write errors) {}, quarantined {}, dead {}, purged {}, interrupted {}",
        c.committed,
        c.uploaded,
        c.dropped_budget,
        c.evicted,
        c.dropped_write,
        c.quarantined,
        c.dead,
        c.purged,
        c.interrupted
    );
    println!(
        "  sent again: after a crash or stop {}, after an error {}; index repaired {} time(s)",
        c.resent_after_crash, c.resent_after_error, c.index_repairs
    );
    println!("  {}", receipts_line(&snap.receipts));
    Ok(())
}

/// `queue stats` for a user who may read the queue but not open its index (a member of
/// the service's group, or root beside the service's files): the spool files, the
/// counters as of the last flush, the receipts.
fn read_only_stats(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let dir = &cfg.queue.dir;
    let i = edgecap::queue::inspect(dir)
        .with_context(|| format!("cannot read the queue {}", dir.display()))?;
    let now = edgecap::frame::unix_ms(std::time::SystemTime::now());
    let oldest = i
        .oldest_captured_ms
        .map(|ms| u64::try_from(now - ms).unwrap_or(0) / 1000);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "queue_dir": dir.display().to_string(),
                "read_only": true,
                "on_disk": i.on_disk,
                "oldest_age_secs": oldest,
                "damaged": i.damaged,
                "counters": i.counters,
                "receipts": i.receipts,
            }))?
        );
        return Ok(());
    }
    let c = i.counters;
    println!(
        "queue {} (read-only view: the index is opened only by the queue's owner; pending, in flight and dead are counted together)",
        dir.display()
    );
    println!(
        "  on disk  {:>8} frames {:>14} bytes{}{}",
        i.on_disk.frames,
        i.on_disk.bytes,
        oldest
            .map(|a| format!(", oldest captured {a} s ago"))
            .unwrap_or_default(),
        if i.damaged > 0 {
            format!(", {} damaged file(s)", i.damaged)
        } else {
            String::new()
        }
    );
    println!(
        "  lifetime (as of the last flush): committed {}, uploaded {}, dropped (budget) {}, dropped (write errors) {}, quarantined {}, dead {}, purged {}",
        c.committed, c.uploaded, c.dropped_budget, c.dropped_write, c.quarantined, c.dead, c.purged
    );
    println!("  {}", receipts_line(&i.receipts));
    Ok(())
}

/// The receipts line of `status` and `queue stats`.
fn receipts_line(r: &edgecap::queue::ReceiptStats) -> String {
    match r.last_ms {
        Some(ms) => format!(
            "delivered (receipts): last at {}, {} in the last hour, {} in the last day",
            edgecap::frame::rfc3339_utc(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
            ),
            r.last_hour,
            r.last_day
        ),
        None => "delivered (receipts): none yet".to_string(),
    }
}
