//! The command line as clap sees it: pure parsing, no file or environment read here
//! (clap reads `EDGECAP_CONFIG` itself for the default of `--config`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What `--help` and the man page say after the options.
const AFTER_HELP: &str = "\
Files:
  /etc/edgecap/edgecap.toml   the config (`edgecap config print-default` prints the template)
  /var/lib/edgecap/queue      the durable queue (spool files, index, receipts)
  /run/edgecap/status.json    the running daemon's status (read by `edgecap status`)

Signals (to `edgecap run`):
  SIGTERM, SIGINT  stop: commit what is captured, end the upload in progress, exit
  SIGHUP           read the config again (systemctl reload edgecap): cameras, metadata,
                   schedules and upload limits change; an invalid file is refused

Exit status: 0 ok, 1 runtime failure, 2 bad config or usage, 3 (`status`) not running.
Members of the `edgecap` group may run status, queue stats, queue list and
config validate --offline without the platform's secret.";

/// Durable camera-frame capture and upload for computer-vision datasets.
#[derive(Parser)]
#[command(name = "edgecap", version, about, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        short,
        global = true,
        env = "EDGECAP_CONFIG",
        default_value = edgecap::config::DEFAULT_PATH
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: capture, queue, upload.
    Run {
        /// Start no camera: upload what is queued (for up to `drain_on_stop_secs`), then
        /// exit; 0 when the queue is empty, 1 when frames remain. Pairs with `enqueue`.
        #[arg(long)]
        drain: bool,
    },
    /// Check or print configuration.
    Config {
        /// Which.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Whether the daemon runs, and its counters, backlog and cameras (from its status
    /// file). Exit 0 when it runs, 3 when it does not.
    Status {
        /// Print JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh in the terminal every 2 s (or `--interval`) until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with `--watch`.
        #[arg(long, default_value_t = 2.0, requires = "watch")]
        interval: f64,
    },
    /// List the V4L2 cameras with their formats, sizes and rates.
    Cameras,
    /// Capture one frame of a configured camera (source and transforms) into a file.
    Snapshot {
        /// The camera's `name`.
        #[arg(long)]
        camera: String,
        /// Where to write the JPEG.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Add existing JPEG files (or every *.jpg/*.jpeg of a folder) to the queue as frames
    /// of a configured camera, with its metadata and groups; the daemon uploads them. While
    /// the daemon runs, the files are handed to it through `<queue>/inbox/` and the command
    /// returns once they are safe on disk. Exit 1 if any file was skipped.
    Enqueue {
        /// The camera whose name, metadata and groups the frames take (default: the first).
        #[arg(long)]
        camera: Option<String>,
        /// Descend into the folders' subfolders.
        #[arg(long, short)]
        recursive: bool,
        /// Enqueue a file even when the same content was enqueued before (queued or
        /// delivered); by default it is skipped and counted.
        #[arg(long)]
        allow_duplicates: bool,
        /// List every file left out (other extensions, duplicates), not only their count.
        #[arg(long, short)]
        verbose: bool,
        /// JPEG files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check the receipts of delivered frames against the platform: each frame there, with
    /// its size and metadata. Exit 0 when nothing is missing, 1 on any gap.
    Verify {
        /// Only frames delivered within this long, e.g. `24h`, `7d`, `90m`.
        #[arg(long)]
        since: Option<String>,
        /// Check at most this many frames, spread over the selection.
        #[arg(long)]
        sample: Option<usize>,
        /// Platform requests per second at most.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Queue the missing frames again from the kept delivered frames
        /// (`keep_delivered_bytes`); the daemon must be stopped.
        #[arg(long)]
        repair: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The Nexus project of the config, from the device (the daemon's key; works while it
    /// runs; never touches the queue).
    Nexus {
        /// Which.
        #[command(subcommand)]
        command: NexusCommand,
    },
    /// The Picsellia datalake of the config, from the device (the daemon's token; works
    /// while it runs; never touches the queue).
    Picsellia {
        /// Which.
        #[command(subcommand)]
        command: PicselliaCommand,
    },
    /// Inspect the queue (live numbers come from the daemon's status file while it runs).
    Queue {
        /// Which.
        #[command(subcommand)]
        command: QueueCommand,
    },
}

/// `edgecap config …`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; every problem is listed with its key and line. By default
    /// also against this machine: the secret (a systemd credential outside the service is
    /// noted, not read) and the folders' rights.
    Validate {
        /// Only the file itself: no secret read, no folder checked (any user may run it).
        #[arg(long, conflicts_with = "online")]
        offline: bool,
        /// Also what only the network can tell: the platform accepts the key and knows
        /// the project or datalake; each command source's program is on PATH; the
        /// session budget fits the platform's limit.
        #[arg(long)]
        online: bool,
    },
    /// Print the commented default config.
    PrintDefault,
    /// Print the config as edgecap reads it: the file merged with the drop-ins of
    /// `conf.d/` beside it (in name order) and the environment overrides
    /// (EDGECAP_DEVICE_ID, EDGECAP_HTTP_LISTEN, EDGECAP_QUEUE_DIR, EDGECAP_PROJECT_ID).
    /// Keys not shown take their defaults; secrets are masked.
    Print {
        /// Follow each value with where it came from (file:line or $VARIABLE).
        #[arg(long)]
        effective: bool,
    },
}

/// `edgecap queue …`.
#[derive(Subcommand)]
pub enum QueueCommand {
    /// Frames and bytes pending, in flight and dead, and the lifetime counters.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The queued frames, oldest first, with their state and last error.
    List {
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
        /// Target folder (created if needed).
        dir: PathBuf,
    },
    /// Put the dead frames back in the upload queue (after fixing what the platform
    /// refused). The daemon must be stopped.
    RetryDead,
    /// Delete the dead frames for good. The daemon must be stopped.
    Purge,
}

/// `edgecap picsellia …`.
#[derive(Subcommand)]
pub enum PicselliaCommand {
    /// The datalake's data.
    Data {
        /// Which.
        #[command(subcommand)]
        command: DataCommand,
    },
}

/// `edgecap picsellia data …`. A data is named by its id or its filename.
#[derive(Subcommand)]
pub enum DataCommand {
    /// List data, newest pages first as the platform orders them.
    List {
        /// Only data with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One data, with its tags and metadata.
    Get {
        /// Id or filename.
        data: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach tags (created if missing) to a data.
    Tag {
        /// Id or filename.
        data: String,
        /// Tag names.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Delete a data from the datalake (asks first).
    Delete {
        /// Id or filename.
        data: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// `edgecap nexus …`.
#[derive(Subcommand)]
pub enum NexusCommand {
    /// The project's assets.
    Assets {
        /// Which.
        #[command(subcommand)]
        command: AssetCommand,
    },
    /// Statistics of the project's asset groups (all, or those named).
    Groups {
        /// Group names.
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `edgecap nexus assets …`. An asset is named by its `asset_…` id or its filename.
#[derive(Subcommand)]
pub enum AssetCommand {
    /// List assets, one page at a time.
    List {
        /// Only assets of this group (repeatable).
        #[arg(long)]
        group: Vec<String>,
        /// Assets per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start at this page cursor (printed after each page).
        #[arg(long)]
        page: Option<String>,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One asset, with its groups and custom metadata.
    Get {
        /// Id or filename.
        asset: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an asset's status and/or its custom metadata.
    Update {
        /// Id or filename.
        asset: String,
        /// New annotation status (e.g. Annotated, Review, Completed, Tofix, None).
        #[arg(long)]
        status: Option<String>,
        /// Custom metadata `key=value` (repeatable; integers, floats and true/false are
        /// typed, anything else is a string). Replaces the asset's custom metadata.
        #[arg(long, value_name = "KEY=VALUE")]
        metadata: Vec<String>,
    },
    /// Delete an asset (asks first).
    Delete {
        /// Id or filename.
        asset: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}
