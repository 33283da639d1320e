//! The `edgecap` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.

use std::io::Write;
use std::path::PathBuf;
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
    },
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    /// Inspect the queue (the daemon must not be running).
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
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

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
        Command::Queue {
            command: QueueCommand::Stats { config: path, json },
        } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            match queue_stats(&cfg, json) {
                Ok(()) => ExitCode::SUCCESS,
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
            let Some(cam) = cfg.cameras.iter().find(|c| c.name == camera) else {
                let names: Vec<&str> = cfg.cameras.iter().map(|c| c.name.as_str()).collect();
                return usage_failure(&format!(
                    "{}: no camera named \"{camera}\" (cameras: {})",
                    path.display(),
                    names.join(", ")
                ));
            };
            init_logging();
            match snapshot(cam, &output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Run { config: path } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging();
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "edgecap stopped on an error");
                    runtime_failure(&e)
                }
            }
        }
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .init();
}

fn run(cfg: config::Config) -> anyhow::Result<()> {
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
    let summary = rt.block_on(edgecap::daemon::run(cfg))?;
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
    Ok(())
}

fn queue_stats(cfg: &config::Config, json: bool) -> anyhow::Result<()> {
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
