//! The `edgecap` commands. `args.rs` is the command line (clap); this file loads the
//! config once and dispatches; each command's body lives with its kind: `view.rs`
//! (`status`, `queue stats`: the [`Snapshot`](edgecap::ops::snapshot::Snapshot) views),
//! `queue.rs` (`queue list/export/retry-dead/purge`), `daemon.rs` (`run`, `enqueue`,
//! `snapshot`, `cameras`, `config validate`), `picsellia.rs` (`picsellia data …`),
//! `nexus.rs` (`nexus assets …`, `nexus groups`), `verify.rs` (`verify`); `platform.rs`
//! holds what the platform commands share.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage, 3 (`status`) not running.
//! Only `run`, `enqueue` and `config validate` resolve the config against the machine
//! (secret, host name, folder rights); the read-only views need none of it.

mod args;
mod daemon;
mod nexus;
mod picsellia;
mod platform;
mod queue;
mod validate;
mod verify;
mod view;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ConfigCommand, PicselliaCommand, QueueCommand};
use edgecap::config::{self, Config, ConfigError, Resolved};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `edgecap status`: the daemon is not running (as LSB `status` actions say it).
const EXIT_NOT_RUNNING: u8 = 3;

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        // Before any thread: glibc's thread cache is off only from the loader on.
        edgecap::ops::memory::reexec_tuned();
    } else {
        // `edgecap status | head`: a closed pipe ends the command quietly, as in every
        // Unix tool, instead of a panic in println!. The daemon keeps Rust's default
        // (ignored): its output going away must never stop it.
        default_sigpipe();
    }
    let path = cli.config.as_path();
    // Commands that need no config.
    match &cli.command {
        Command::Config {
            command: ConfigCommand::PrintDefault,
        } => {
            let mut out = std::io::stdout().lock();
            if out.write_all(config::DEFAULT_TEMPLATE.as_bytes()).is_err() {
                return ExitCode::from(EXIT_RUNTIME);
            }
            return ExitCode::SUCCESS;
        }
        Command::Cameras => {
            daemon::list_cameras();
            return ExitCode::SUCCESS;
        }
        Command::Config {
            command: ConfigCommand::Print { effective },
        } => {
            return match config::load_layered(path) {
                Ok((_, eff)) => {
                    print_effective(&eff, *effective);
                    ExitCode::SUCCESS
                }
                Err(e) => config_failure(&e),
            };
        }
        _ => {}
    }
    if matches!(cli.command, Command::Run { .. }) {
        // Before the first allocation of any size: the arena cap applies to every thread.
        edgecap::ops::memory::limit_malloc_arenas();
    }
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Validate { offline, online },
        } => {
            let stage = if offline {
                config::Stage::Offline
            } else {
                config::Stage::Validate
            };
            match config::resolve_at(cfg, path, stage) {
                Ok(r) if online => validate::validated_online(&r, path),
                Ok(r) => validate::validated(&r, path),
                Err(e) => config_failure(&e),
            }
        }
        Command::Config {
            command: ConfigCommand::PrintDefault | ConfigCommand::Print { .. },
        } => ExitCode::SUCCESS,
        Command::Status {
            watch: true,
            interval,
            ..
        } => match view::watch(
            &cfg,
            std::time::Duration::from_secs_f64(if interval.is_finite() {
                interval.clamp(0.2, 3600.0)
            } else {
                2.0
            }),
        ) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => runtime_failure(&e),
        },
        Command::Status { json, .. } => match view::status(&cfg, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(EXIT_NOT_RUNNING),
            Err(e) => runtime_failure(&e),
        },
        Command::Queue { command } => {
            let res = match command {
                QueueCommand::Stats { json } => view::queue_stats(&cfg, json),
                QueueCommand::List { json, dead, limit } => queue::list(&cfg, json, dead, limit),
                QueueCommand::Export { dir } => queue::export(&cfg, &dir),
                QueueCommand::RetryDead => queue::repair(&cfg, false),
                QueueCommand::Purge => queue::repair(&cfg, true),
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Snapshot { camera, output } => {
            let index = match camera_index(&cfg, path, &camera) {
                Ok(i) => i,
                Err(code) => return code,
            };
            edgecap::ops::journal::init();
            match daemon::snapshot(&cfg.cameras[index], &output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Enqueue {
            camera,
            paths,
            recursive,
            allow_duplicates,
            verbose,
        } => {
            let index = match camera.as_deref().map(|n| camera_index(&cfg, path, n)) {
                None => 0,
                Some(Ok(i)) => i,
                Some(Err(code)) => return code,
            };
            let opts = daemon::EnqueueArgs {
                recursive,
                allow_duplicates,
                verbose,
            };
            // A daemon holds the queue: hand the files over through its inbox.
            if matches!(
                edgecap::queue::Queue::held_elsewhere(&cfg.queue.dir),
                Ok(true)
            ) {
                return daemon::hand_over(&cfg, index, &paths, &opts);
            }
            if let Err(e) = queue::ensure_owner(&cfg.queue.dir) {
                return runtime_failure(&e);
            }
            let resolved = match resolve(cfg, path) {
                Ok(r) => r,
                Err(code) => return code,
            };
            edgecap::ops::journal::init();
            daemon::enqueue(&resolved, index, &paths, &opts)
        }
        Command::Run { drain } => {
            let resolved = match resolve(cfg, path) {
                Ok(r) => r,
                Err(code) => return code,
            };
            edgecap::ops::journal::init();
            daemon::run(resolved, drain)
        }
        Command::Verify {
            since,
            sample,
            rate,
            repair,
            json,
        } => {
            let resolved = match config::resolve_platform(cfg, path) {
                Ok(r) => r,
                Err(e) => return config_failure(&e),
            };
            match verify::run(&resolved, since.as_deref(), sample, rate, repair, json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_RUNTIME),
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Nexus { command } => {
            let resolved = match config::resolve_platform(cfg, path) {
                Ok(r) => r,
                Err(e) => return config_failure(&e),
            };
            match nexus::run(&resolved, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Picsellia {
            command: PicselliaCommand::Data { command },
        } => {
            let resolved = match config::resolve_platform(cfg, path) {
                Ok(r) => r,
                Err(e) => return config_failure(&e),
            };
            match picsellia::data(&resolved, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => runtime_failure(&e),
            }
        }
        Command::Cameras => ExitCode::SUCCESS,
    }
}

/// SIGPIPE back to its default action (terminate), which Rust's runtime sets to ignored.
#[allow(
    unsafe_code,
    reason = "signal(2) has no safe wrapper in std, libc or rustix's safe API"
)]
fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE, set before any other thread
    // exists; no Rust handler is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The config resolved against this machine, or the config failure.
fn resolve(cfg: Config, path: &Path) -> Result<Resolved, ExitCode> {
    config::resolve(cfg, path).map_err(|e| config_failure(&e))
}

/// The index of the camera called `name`, or the usage failure that lists the names.
fn camera_index(cfg: &Config, path: &Path, name: &str) -> Result<usize, ExitCode> {
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

#[allow(clippy::print_stderr, reason = "the CLI's own error output")]
fn runtime_failure(e: &anyhow::Error) -> ExitCode {
    eprintln!("edgecap: {e:#}");
    ExitCode::from(EXIT_RUNTIME)
}

/// `config print [--effective]`: the merged config, and what it was made of.
fn print_effective(eff: &config::Effective, origins: bool) {
    println!("# edgecap config as read from:");
    for f in &eff.files {
        println!("#   {}", f.display());
    }
    for (var, key) in &eff.overrides {
        println!("#   ${var} (sets {key})");
    }
    println!("# Keys not shown take their defaults (edgecap config print-default).\n");
    print!("{}", eff.render(origins));
}
