//! `edgecap status` and `edgecap queue stats`: views of one
//! [`Snapshot`](edgecap::ops::snapshot::Snapshot). While a daemon holds the queue they read
//! its status file (never the queue); otherwise `queue stats` takes the snapshot from the
//! queue itself. `--json` prints the snapshot as it is.

use anyhow::Context;

use edgecap::config::Config;
use edgecap::ops::snapshot::{self, Snapshot};
use edgecap::queue::Queue;

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
            "  camera {}: {} frames, {} errors, {} unchanged (skipped), {} bad, {} dropped (buffer)",
            c.name, c.produced, c.errors, c.skipped_unchanged, c.bad_frames, c.dropped_buffer
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
