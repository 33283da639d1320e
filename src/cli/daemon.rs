//! The commands that run edgecap's machinery: `run`, `enqueue`, `snapshot`, `cameras`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{EXIT_RUNTIME, runtime_failure, usage_failure};
use edgecap::config::{CameraConfig, Resolved, SinkConfig};
use edgecap::daemon::Mode;

/// `edgecap run [--drain]`.
pub(super) fn run(resolved: Resolved, drain: bool) -> ExitCode {
    for w in &resolved.warnings {
        tracing::warn!("{w}");
    }
    match edgecap::ops::memory::tuning() {
        Ok(()) => tracing::debug!("glibc malloc: one arena, no thread cache, no fast bins"),
        Err(why) => tracing::debug!(reason = why, "glibc malloc: the thread cache stays on"),
    }
    let mode = if drain {
        Mode::DrainOnly
    } else {
        Mode::Capture
    };
    match run_daemon(resolved, mode) {
        Ok(RunEnd::Restart) => ExitCode::from(edgecap::daemon::EXIT_RESTART),
        Ok(RunEnd::Left(0)) => ExitCode::SUCCESS,
        Ok(RunEnd::Left(_)) if mode == Mode::Capture => ExitCode::SUCCESS,
        Ok(RunEnd::Left(left)) => {
            tracing::warn!(
                backlog_frames = left,
                "frames are still queued after the drain; they go with the next run"
            );
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "edgecap stopped on an error");
            runtime_failure(&e)
        }
    }
}

/// How a run ended.
enum RunEnd {
    /// With these frames still queued (pending or in flight).
    Left(u64),
    /// For a restart: the failed queue index could not be rebuilt in-process.
    Restart,
}

/// Runs the daemon.
fn run_daemon(resolved: Resolved, mode: Mode) -> anyhow::Result<RunEnd> {
    let cfg = &resolved.config;
    let sink = match &cfg.upload.sink {
        SinkConfig::Directory { path } => format!("directory {}", path.display()),
        SinkConfig::Nexus(n) => format!("Nexus project {} at {}", n.project_id, n.endpoint),
        SinkConfig::Picsellia(p) => format!(
            "Picsellia datalake {} at {}",
            p.datalake.as_deref().unwrap_or("(the default)"),
            p.host
        ),
    };
    let queue_dir = cfg.queue.dir.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = rt.block_on(edgecap::daemon::run(resolved, mode))?;
    let q = summary.queue;
    println!(
        "edgecap: run {} committed {} frame(s) and delivered {} to {}; queue {}: {} pending, {} dead",
        summary.run_id,
        summary.committed,
        summary.accepted,
        sink,
        queue_dir.display(),
        q.pending.frames + q.inflight.frames,
        q.dead.frames
    );
    if summary.restart_for_index {
        return Ok(RunEnd::Restart);
    }
    Ok(RunEnd::Left(q.pending.frames + q.inflight.frames))
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command's own report"
)]
/// `edgecap enqueue`'s switches.
pub(super) struct EnqueueArgs {
    pub(super) recursive: bool,
    pub(super) allow_duplicates: bool,
    pub(super) verbose: bool,
}

/// Files at which a progress bar is worth drawing (on a terminal only).
const PROGRESS_FROM: usize = 50;

/// What an `enqueue` did, whichever way the files went.
struct Enqueued {
    skipped: Vec<(PathBuf, String)>,
    duplicates: Vec<PathBuf>,
    /// The summary line.
    headline: String,
}

/// `edgecap enqueue` with no daemon running: the files go straight into the queue.
pub(super) fn enqueue(
    resolved: &Resolved,
    camera: usize,
    paths: &[PathBuf],
    args: &EnqueueArgs,
) -> ExitCode {
    let cfg = &resolved.config;
    enqueue_with(paths, args, |files, progress| {
        let opts = edgecap::daemon::enqueue::Options {
            allow_duplicates: args.allow_duplicates,
            progress: Some(progress),
        };
        let done = edgecap::daemon::enqueue::enqueue(resolved, camera, files, &opts)?;
        Ok(Enqueued {
            headline: format!(
                "enqueued {} frame(s), {} bytes, as camera {} (run {}) into {}",
                done.frames,
                done.bytes,
                cfg.cameras.get(camera).map_or("?", |c| c.name.as_str()),
                done.run_id,
                cfg.queue.dir.display()
            ),
            skipped: done.skipped,
            duplicates: done.duplicates,
        })
    })
}

/// `edgecap enqueue` while a daemon holds the queue: the files go through its inbox
/// (daemon/inbox.rs), durably, and the daemon queues and uploads them as they arrive.
pub(super) fn hand_over(
    cfg: &edgecap::config::Config,
    camera: usize,
    paths: &[PathBuf],
    args: &EnqueueArgs,
) -> ExitCode {
    let name = cfg.cameras.get(camera).map_or("?", |c| c.name.as_str());
    enqueue_with(paths, args, |files, progress| {
        let done = edgecap::daemon::inbox::hand_over(
            cfg,
            camera,
            files,
            args.allow_duplicates,
            Some(progress),
        )?;
        Ok(Enqueued {
            headline: format!(
                "handed {} frame(s), {} bytes, as camera {name} to the running daemon through {}",
                done.frames,
                done.bytes,
                done.inbox.display()
            ),
            skipped: done.skipped,
            duplicates: done.duplicates,
        })
    })
}

/// Collects the files, draws the progress bar, runs `put` and reports.
#[allow(clippy::print_stderr, reason = "the command's own report")]
fn enqueue_with(
    paths: &[PathBuf],
    args: &EnqueueArgs,
    put: impl FnOnce(&[PathBuf], &dyn Fn(u64)) -> anyhow::Result<Enqueued>,
) -> ExitCode {
    use edgecap::daemon::enqueue;
    use std::io::IsTerminal;
    let collected = match enqueue::collect(paths, args.recursive) {
        Ok(f) => f,
        Err(e) => return usage_failure(&e.to_string()),
    };
    let bar =
        (collected.files.len() >= PROGRESS_FROM && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(collected.files.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files, {per_sec}, {eta} left",
            ) {
                pb.set_style(style);
            }
            pb
        });
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let result = put(&collected.files, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(done) => {
            for (path, why) in &done.skipped {
                eprintln!("edgecap: skipped {}: {why}", path.display());
            }
            if args.verbose {
                for p in &done.duplicates {
                    eprintln!("edgecap: already enqueued (same content): {}", p.display());
                }
                for p in &collected.other {
                    eprintln!("edgecap: not a .jpg/.jpeg file, left out: {}", p.display());
                }
            }
            println!("{}", done.headline);
            if !done.duplicates.is_empty() {
                println!(
                    "skipped {} file(s) enqueued before (same content; --allow-duplicates enqueues them again{})",
                    done.duplicates.len(),
                    if args.verbose { "" } else { ", -v lists them" }
                );
            }
            if !collected.other.is_empty() {
                println!(
                    "left out {} file(s) that are not .jpg/.jpeg{}",
                    collected.other.len(),
                    if args.verbose { "" } else { " (-v lists them)" }
                );
            }
            if done.skipped.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUNTIME)
            }
        }
        Err(e) => runtime_failure(&e),
    }
}

pub(super) fn list_cameras() {
    use edgecap::capture::v4l2_devices;
    let devices = v4l2_devices::list_devices();
    if devices.is_empty() {
        println!(
            "no V4L2 cameras found (no capture device under /dev/video*).\n\
             USB webcams appear here once plugged in (check `dmesg` and that this user is in the `video` group).\n\
             Raspberry Pi camera modules (CSI) are read with a `command` source running rpicam-vid; see the README."
        );
        return;
    }
    for d in devices {
        println!("{}  \"{}\"  ({})", d.path.display(), d.name, d.bus);
        match v4l2_devices::describe_formats(&d.path) {
            Ok(formats) => {
                for f in formats {
                    println!("  {}  {}", f.fourcc, f.description);
                    for (w, h, rates) in f.sizes {
                        println!("    {w}x{h}  {} fps", rates.join(", "));
                    }
                }
            }
            Err(e) => println!("  cannot list formats: {e}"),
        }
    }
}

pub(super) fn snapshot(cam: &CameraConfig, output: &Path) -> anyhow::Result<()> {
    let ready = edgecap::capture::snapshot(cam)
        .with_context(|| format!("camera {}: no frame", cam.name))?;
    let tmp = output.with_extension("jpg.tmp");
    std::fs::write(&tmp, &ready.jpeg).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, output)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), output.display()))?;
    println!(
        "{}: {}x{} JPEG, {} bytes from camera {}",
        output.display(),
        ready.width,
        ready.height,
        ready.jpeg.len(),
        cam.name
    );
    Ok(())
}
