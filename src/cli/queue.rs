//! `edgecap queue list | export | retry-dead | purge`. Read-only ones answer from the spool
//! files while a daemon holds the queue; mutating ones refuse a live queue.

use std::path::Path;

use anyhow::Context;

use edgecap::config::Config;
use edgecap::queue::{FrameState, Queue, scan_spool, spool};

/// Refuses when the daemon holds the queue.
fn ensure_stopped(cfg: &Config, what: &str) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        anyhow::bail!(
            "the daemon is running (it holds the queue {}): stop it first (systemctl stop edgecap), then {what}",
            cfg.queue.dir.display()
        );
    }
    Ok(())
}

pub(super) fn list(cfg: &Config, json: bool, only_dead: bool, limit: usize) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        // Live: the index belongs to the daemon; read the spool files' headers.
        if only_dead {
            anyhow::bail!(
                "the daemon is running: dead frames can be listed only while it is stopped (the states are in its index)"
            );
        }
        let (frames, bad) = scan_spool(&cfg.queue.dir)?;
        if json {
            let v: Vec<_> = frames
                .iter()
                .take(limit)
                .map(|f| serde_json::json!({"seq": f.seq, "filename": f.meta.filename, "camera": f.meta.camera, "bytes": f.bytes, "state": "queued"}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"live": true, "frames": v, "damaged": bad.len()})
                )?
            );
        } else {
            println!(
                "queue {} (live: {} frame file(s); pending, in flight and dead are told apart only while the daemon is stopped)",
                cfg.queue.dir.display(),
                frames.len()
            );
            for f in frames.iter().take(limit) {
                println!(
                    "  {:>8}  {:>9} B  {}  {}",
                    f.seq, f.bytes, f.meta.camera, f.meta.filename
                );
            }
            for (p, e) in &bad {
                println!("  damaged: {} ({e})", p.display());
            }
        }
        return Ok(());
    }
    let (q, _) = Queue::open(&cfg.queue)?;
    let list: Vec<_> = q
        .list()
        .into_iter()
        .filter(|l| !only_dead || l.state == FrameState::Dead)
        .take(limit)
        .collect();
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|l| serde_json::json!({"seq": l.seq, "state": l.state, "filename": l.entry.filename, "bytes": l.entry.bytes, "groups": l.entry.groups, "attempts": l.entry.attempts, "last_error": l.entry.last_error}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"live": false, "frames": v}))?
        );
    } else {
        println!(
            "queue {}: {} frame(s) shown",
            cfg.queue.dir.display(),
            list.len()
        );
        for l in &list {
            println!(
                "  {:>8}  {:<9}  {:>9} B  {}{}",
                l.seq,
                l.state,
                l.entry.bytes,
                l.entry.filename,
                l.entry
                    .last_error
                    .as_ref()
                    .map(|e| format!("  (attempts {}, last error: {e})", l.entry.attempts))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub(super) fn export(cfg: &Config, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (frames, bad) = scan_spool(&cfg.queue.dir)
        .with_context(|| format!("cannot read the queue {}", cfg.queue.dir.display()))?;
    let (mut n, mut bytes, mut gone) = (0u64, 0u64, 0u64);
    let mut damaged: Vec<String> = bad
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect();
    for f in &frames {
        match spool::read_frame(&f.path) {
            Ok((_, meta, image)) => {
                edgecap::upload::directory::write_frame(dir, &meta, &image)
                    .with_context(|| format!("cannot write into {}", dir.display()))?;
                n += 1;
                bytes += image.len() as u64;
            }
            // Uploaded (and deleted) by the running daemon meanwhile.
            Err(spool::SpoolError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                gone += 1;
            }
            Err(e) => damaged.push(e.to_string()),
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))?;
    println!(
        "exported {n} frame(s), {bytes} bytes of images, to {}{}",
        dir.display(),
        if gone > 0 {
            format!("; {gone} were uploaded during the export")
        } else {
            String::new()
        }
    );
    for d in &damaged {
        println!("  skipped a damaged file: {d}");
    }
    Ok(())
}

pub(super) fn repair(cfg: &Config, purge: bool) -> anyhow::Result<()> {
    ensure_stopped(
        cfg,
        if purge {
            "purge"
        } else {
            "retry the dead frames"
        },
    )?;
    let (q, _) = Queue::open(&cfg.queue)?;
    if purge {
        let t = q.purge_dead();
        println!("purged {} dead frame(s), {} bytes", t.frames, t.bytes);
    } else {
        let n = q.retry_dead();
        println!("{n} dead frame(s) are queued for upload again");
    }
    Ok(())
}
