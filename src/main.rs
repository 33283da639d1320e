//! The `edgecap` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgecap::config::{self, ConfigError};
use edgecap::queue::Queue;

/// Durable camera-frame capture and upload for computer-vision datasets.
#[derive(Parser)]
#[command(name = "edgecap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: capture, queue, upload.
    Run {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Start no camera: upload what is queued (for up to `drain_on_stop_secs`), then
        /// exit; 0 when the queue is empty, 1 when frames remain. Pairs with `enqueue`.
        #[arg(long)]
        drain: bool,
    },
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Whether the daemon runs, and its counters, backlog and cameras (from its status
    /// file). Exit 0 when it runs, 3 when it does not.
    Status {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the V4L2 cameras with their formats, sizes and rates.
    Cameras,
    /// Capture one frame of a configured camera (source and transforms) into a file.
    Snapshot {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The camera's `name`.
        #[arg(long)]
        camera: String,
        /// Where to write the JPEG.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Add existing JPEG files (or every *.jpg/*.jpeg of a folder) to the queue as frames
    /// of a configured camera, with its metadata and groups; the daemon uploads them. Stop
    /// the daemon first: it holds the queue. Exit 1 if any file was skipped.
    Enqueue {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The camera whose name, metadata and groups the frames take (default: the first).
        #[arg(long)]
        camera: Option<String>,
        /// JPEG files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Inspect the queue (live numbers come from the daemon's status file while it runs).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; every problem is listed with its key and line.
    Validate {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the commented default config.
    PrintDefault,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Frames and bytes pending, in flight and dead, and the lifetime counters.
    Stats {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The queued frames, oldest first, with their state and last error.
    List {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only the dead frames.
        #[arg(long)]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Copy every queued frame (image + metadata JSON) into a folder; checksums are
    /// verified. Read-only: safe while the daemon runs.
    Export {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Target folder (created if needed).
        dir: PathBuf,
    },
    /// Put the dead frames back in the upload queue (after fixing what the platform
    /// refused). The daemon must be stopped.
    RetryDead {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Delete the dead frames for good. The daemon must be stopped.
    Purge {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `edgecap status`: the daemon is not running (as LSB `status` actions say it).
const EXIT_NOT_RUNNING: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::PrintDefault,
        } => {
            let mut out = std::io::stdout().lock();
            if out.write_all(config::DEFAULT_TEMPLATE.as_bytes()).is_err() {
                return ExitCode::from(EXIT_RUNTIME);
            }
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Validate { config: path },
        } => match config::load(&path) {
            Ok(c) => {
                for w in &c.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "{}: ok ({} camera(s), device {})",
                    path.display(),
                    c.cameras.len(),
                    c.device_id
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Queue { command } => {
            let path = match &command {
                QueueCommand::Stats { config, .. }
                | QueueCommand::List { config, .. }
                | QueueCommand::Export { config, .. }
                | QueueCommand::RetryDead { config }
                | QueueCommand::Purge { config } => config.clone(),
            };
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            let res = match command {
                QueueCommand::Stats { json, .. } => queue_stats(&cfg, json),
                QueueCommand::List {
                    json, dead, limit, ..
                } => queue_list(&cfg, json, dead, limit),
                QueueCommand::Export { dir, .. } => queue_export(&cfg, &dir),
                QueueCommand::RetryDead { .. } => queue_repair(&cfg, false),
                QueueCommand::Purge { .. } => queue_repair(&cfg, true),
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Status { config: path, json } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            match status(&cfg, json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_NOT_RUNNING),
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Cameras => {
            list_cameras();
            ExitCode::SUCCESS
        }
        Command::Snapshot {
            config: path,
            camera,
            output,
        } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            let index = match camera_index(&cfg, &path, &camera) {
                Ok(i) => i,
                Err(code) => return code,
            };
            init_logging();
            match snapshot(&cfg.cameras[index], &output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Enqueue {
            config: path,
            camera,
            paths,
        } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            let index = match camera
                .as_deref()
                .map(|name| camera_index(&cfg, &path, name))
            {
                None => 0,
                Some(Ok(i)) => i,
                Some(Err(code)) => return code,
            };
            init_logging();
            enqueue(&cfg, index, &paths)
        }
        Command::Run {
            config: path,
            drain,
        } => {
            edgecap::ops::memory::limit_malloc_arenas();
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging();
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            let mode = if drain {
                edgecap::daemon::Mode::DrainOnly
            } else {
                edgecap::daemon::Mode::Capture
            };
            match run(cfg, mode) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) if mode == edgecap::daemon::Mode::Capture => ExitCode::SUCCESS,
                Ok(left) => {
                    tracing::warn!(
                        backlog_frames = left,
                        "frames are still queued after the drain; they go with the next run"
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "edgecap stopped on an error");
                    runtime_failure(&e)
                }
            }
        }
    }
}

/// The index of the camera called `name`, or the usage failure that lists the names.
fn camera_index(cfg: &config::Config, path: &Path, name: &str) -> Result<usize, ExitCode> {
    cfg.cameras
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.cameras.iter().map(|c| c.name.as_str()).collect();
            usage_failure(&format!(
                "{}: no camera named \"{name}\" (cameras: {})",
                path.display(),
                names.join(", ")
            ))
        })
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command's own report"
)]
fn enqueue(cfg: &config::Config, camera: usize, paths: &[PathBuf]) -> ExitCode {
    use edgecap::daemon::enqueue;
    let files = match enqueue::collect(paths) {
        Ok(f) => f,
        Err(e) => return usage_failure(&e.to_string()),
    };
    match enqueue::enqueue(cfg, camera, &files) {
        Ok(done) => {
            for (path, why) in &done.skipped {
                eprintln!("edgecap: skipped {}: {why}", path.display());
            }
            println!(
                "enqueued {} frame(s), {} bytes, as camera {} (run {}) into {}",
                done.frames,
                done.bytes,
                cfg.cameras.get(camera).map_or("?", |c| c.name.as_str()),
                done.run_id,
                cfg.queue.dir.display()
            );
            if done.skipped.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUNTIME)
            }
        }
        Err(e) => runtime_failure(&anyhow::Error::new(e)),
    }
}

#[allow(clippy::print_stderr, reason = "the CLI's own error output")]
fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("edgecap: {e}");
    match e {
        ConfigError::Read { .. } | ConfigError::Invalid { .. } => ExitCode::from(EXIT_CONFIG),
    }
}

#[allow(clippy::print_stderr, reason = "the CLI's own error output")]
fn usage_failure(msg: &str) -> ExitCode {
    eprintln!("edgecap: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn list_cameras() {
    use edgecap::capture::v4l2;
    let devices = v4l2::list_devices();
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
        match v4l2::describe_formats(&d.path) {
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

fn snapshot(cam: &config::CameraConfig, output: &std::path::Path) -> anyhow::Result<()> {
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

#[allow(clippy::print_stderr, reason = "the CLI's own error output")]
fn runtime_failure(e: &anyhow::Error) -> ExitCode {
    eprintln!("edgecap: {e:#}");
    ExitCode::from(EXIT_RUNTIME)
}

fn init_logging() {
    edgecap::ops::journal::init();
}

/// Prints the daemon's status; `Ok(true)` when it runs.
fn status(cfg: &config::Config, json: bool) -> anyhow::Result<bool> {
    use edgecap::ops::status;
    let running = Queue::held_elsewhere(&cfg.queue.dir)?;
    let path = &cfg.daemon.status_file;
    let file = status::read(path);
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
            print_status(&st);
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
            print_status(&st);
        }
        (false, Err(_)) => println!(
            "edgecap is not running (nothing holds the queue {}), and there is no status file at {}.",
            cfg.queue.dir.display(),
            path.display()
        ),
    }
    Ok(running)
}

fn print_status(st: &edgecap::ops::status::Status) {
    println!("  {}", st.line());
    println!(
        "  dropped: budget {}, write errors {}, capture buffer {}; quarantined {}",
        st.dropped_budget, st.dropped_write, st.dropped_buffer, st.quarantined
    );
    for c in &st.cameras {
        println!(
            "  camera {}: {} frames, {} errors, {} unchanged (skipped), {} bad, {} dropped (buffer)",
            c.name, c.produced, c.errors, c.skipped_unchanged, c.bad_frames, c.dropped_buffer
        );
    }
    println!("  updated {} (state {})", st.updated_at, st.state);
}

/// Runs the daemon; returns the frames still queued (pending or in flight) at the end.
fn run(cfg: config::Config, mode: edgecap::daemon::Mode) -> anyhow::Result<u64> {
    let sink = match &cfg.upload.sink {
        config::SinkConfig::Directory { path } => format!("directory {}", path.display()),
        config::SinkConfig::Nexus(n) => format!("Nexus project {} at {}", n.project_id, n.endpoint),
    };
    let queue_dir = cfg.queue.dir.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = rt.block_on(edgecap::daemon::run(cfg, mode))?;
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
    Ok(q.pending.frames + q.inflight.frames)
}

fn queue_stats(cfg: &config::Config, json: bool) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        // Never open a live queue: answer from the daemon's status file.
        let path = &cfg.daemon.status_file;
        let st = edgecap::ops::status::read(path).with_context(|| {
            format!(
                "the daemon holds the queue {} and its status file {} cannot be read",
                cfg.queue.dir.display(),
                path.display()
            )
        })?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "live": true,
                    "backlog_frames": st.backlog_frames,
                    "backlog_bytes": st.backlog_bytes,
                    "dead_frames": st.dead,
                    "oldest_pending_age_secs": st.oldest_pending_age_secs,
                    "counters": {
                        "committed": st.captured,
                        "uploaded": st.uploaded,
                        "dropped_budget": st.dropped_budget,
                        "dropped_write": st.dropped_write,
                        "quarantined": st.quarantined,
                    },
                    "updated_at": st.updated_at,
                }))?
            );
        } else {
            println!(
                "queue {} (live, from the daemon's status file written {})",
                cfg.queue.dir.display(),
                st.updated_at
            );
            println!("  {}", st.line());
        }
        return Ok(());
    }
    let (q, _) = Queue::open(&cfg.queue)?;
    let s = q.stats();
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let c = s.counters;
        println!("queue {}", cfg.queue.dir.display());
        println!(
            "  pending   {:>8} frames {:>14} bytes",
            s.pending.frames, s.pending.bytes
        );
        println!(
            "  in flight {:>8} frames {:>14} bytes",
            s.inflight.frames, s.inflight.bytes
        );
        println!(
            "  dead      {:>8} frames {:>14} bytes",
            s.dead.frames, s.dead.bytes
        );
        println!(
            "  lifetime: committed {}, uploaded {}, dropped (budget) {}, dropped (write errors) {}, quarantined {}, dead {}, interrupted {}",
            c.committed,
            c.uploaded,
            c.dropped_budget,
            c.dropped_write,
            c.quarantined,
            c.dead,
            c.interrupted
        );
    }
    Ok(())
}

/// Refuses when the daemon holds the queue.
fn ensure_stopped(cfg: &config::Config, what: &str) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        anyhow::bail!(
            "the daemon is running (it holds the queue {}): stop it first (systemctl stop edgecap), then {what}",
            cfg.queue.dir.display()
        );
    }
    Ok(())
}

fn queue_list(
    cfg: &config::Config,
    json: bool,
    only_dead: bool,
    limit: usize,
) -> anyhow::Result<()> {
    if Queue::held_elsewhere(&cfg.queue.dir)? {
        // Live: the index belongs to the daemon; read the spool files' headers.
        if only_dead {
            anyhow::bail!(
                "the daemon is running: dead frames can be listed only while it is stopped (the states are in its index)"
            );
        }
        let (frames, bad) = edgecap::queue::scan_spool(&cfg.queue.dir)?;
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
        .filter(|l| !only_dead || l.state == edgecap::queue::FrameState::Dead)
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

fn queue_export(cfg: &config::Config, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (frames, bad) = edgecap::queue::scan_spool(&cfg.queue.dir)
        .with_context(|| format!("cannot read the queue {}", cfg.queue.dir.display()))?;
    let (mut n, mut bytes, mut gone) = (0u64, 0u64, 0u64);
    let mut damaged: Vec<String> = bad
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect();
    for f in &frames {
        match edgecap::queue::spool::read_frame(&f.path) {
            Ok((_, meta, image)) => {
                edgecap::upload::directory::write_frame(dir, &meta, &image)
                    .with_context(|| format!("cannot write into {}", dir.display()))?;
                n += 1;
                bytes += image.len() as u64;
            }
            // Uploaded (and deleted) by the running daemon meanwhile.
            Err(edgecap::queue::spool::SpoolError::Io { source, .. })
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

fn queue_repair(cfg: &config::Config, purge: bool) -> anyhow::Result<()> {
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
