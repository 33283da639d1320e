//! `edgecap queue list | export | retry-dead | purge`. Read-only ones answer from the spool
//! files while a daemon holds the queue; mutating ones refuse a live queue.

use std::path::Path;

use anyhow::Context;

use edgecap::config::Config;
use edgecap::queue::{FrameState, Queue, scan_spool, spool};

/// Refuses when the daemon holds the queue, or when this user is not the one who may
/// change it.
fn ensure_stopped(cfg: &Config, what: &str) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        anyhow::bail!(
            "the daemon is running (it holds the queue {}): stop it first (systemctl stop edgecap), then {what}",
            cfg.queue.dir.display()
        );
    }
    ensure_owner(&cfg.queue.dir)
}

/// Refuses to change an existing queue that belongs to another user (root changing the
/// service's queue would leave files the service cannot write).
pub(super) fn ensure_owner(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    if edgecap::queue::may_open(dir) {
        return Ok(());
    }
    if m.uid() == rustix::process::geteuid().as_raw() {
        anyhow::bail!("the queue {} is not writable by this user", dir.display());
    }
    let name = user_name(m.uid()).unwrap_or_else(|| m.uid().to_string());
    anyhow::bail!(
        "the queue {} belongs to user {name} and only that user may change it: run the command as that user (e.g. sudo -u {name} edgecap …)",
        dir.display()
    )
}

/// The name of user `uid` from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

pub(super) fn list(cfg: &Config, json: bool, only_dead: bool, limit: usize) -> anyhow::Result<()> {
    let live = Queue::held_elsewhere(&cfg.queue.dir)?;
    if live || !edgecap::queue::may_open(&cfg.queue.dir) {
        // Live, or not this user's to open: the index is the daemon's; read the spool
        // files' headers.
        if only_dead {
            anyhow::bail!(
                "{}: dead frames can be listed only by the queue's owner while the daemon is stopped (the states are in its index)",
                if live {
                    "the daemon is running"
                } else {
                    "this user may only read the queue"
                }
            );
        }
        let (frames, bad) = match scan_spool(&cfg.queue.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), Vec::new()),
            other => other?,
        };
        if json {
            let v: Vec<_> = frames
                .iter()
                .take(limit)
                .map(|f| serde_json::json!({"seq": f.seq, "filename": f.meta.filename, "camera": f.meta.camera, "bytes": f.bytes, "state": "queued"}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"live": live, "read_only": true, "frames": v, "damaged": bad.len()})
                )?
            );
        } else {
            println!(
                "queue {} ({}: {} frame file(s); pending, in flight and dead are told apart only by the queue's owner while the daemon is stopped)",
                cfg.queue.dir.display(),
                if live { "live" } else { "read-only view" },
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
