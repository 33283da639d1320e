//! Shared test harness: config files, the real `edgecap` binary run as a child process,
//! and a fault-injecting TCP proxy. The fake platform servers are the `fake-platform`
//! crate (`crates/fake-platform`).

pub mod counters;
pub mod proxy;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port on 127.0.0.1 that nothing listens on (until a test binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgecap"))
}

/// Settings for a test config; `render` writes the TOML.
#[derive(Clone)]
pub struct TestConfig {
    pub queue_dir: PathBuf,
    pub endpoint: Option<String>,
    pub out_dir: Option<PathBuf>,
    pub stop_after_frames: u64,
    pub drain_on_stop_secs: u64,
    pub fps: f64,
    pub cameras: Vec<(String, Vec<String>, String)>,
    pub max_frames: u64,
    pub on_full: String,
    pub batch_max_frames: u64,
    pub batch_max_age_secs: u64,
    pub fsync: String,
    pub extra_upload: String,
    pub retry_max_secs: u64,
    /// `operation_timeout_secs` of the Nexus sink.
    pub operation_timeout_secs: u64,
    pub project_id: String,
    /// Picsellia host (then the sink is Picsellia).
    pub picsellia: Option<String>,
    /// More keys of `[upload.picsellia]`.
    pub extra_picsellia: String,
    /// More keys of every `[[camera]]` (tags, position).
    pub camera_extra: String,
}

impl TestConfig {
    pub fn nexus(dir: &Path, endpoint: &str) -> Self {
        Self {
            queue_dir: dir.join("queue"),
            endpoint: Some(endpoint.to_string()),
            out_dir: None,
            stop_after_frames: 0,
            drain_on_stop_secs: 60,
            fps: 50.0,
            cameras: vec![(
                "cam0".into(),
                vec!["main".into(), "field".into()],
                "site = \"north\"\nrig = 3\nlabel = \"{device}/{camera}\"\n".into(),
            )],
            max_frames: 100_000,
            on_full: "drop_oldest".into(),
            batch_max_frames: 50,
            batch_max_age_secs: 1,
            fsync: "grouped".into(),
            extra_upload: String::new(),
            retry_max_secs: 2,
            operation_timeout_secs: 10,
            project_id: fake_platform::nexus::PROJECT.to_string(),
            picsellia: None,
            extra_picsellia: String::new(),
            camera_extra: String::new(),
        }
    }

    /// A Picsellia config against `host`.
    pub fn picsellia(dir: &Path, host: &str) -> Self {
        Self {
            endpoint: None,
            picsellia: Some(host.to_string()),
            ..Self::nexus(dir, "http://unused")
        }
    }

    /// The status file, next to the queue.
    pub fn status_file(&self) -> PathBuf {
        self.queue_dir.with_file_name("status.json")
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "[device]\nid = \"testdev\"\n\n[daemon]\nstop_after_frames = {}\ndrain_on_stop_secs = {}\nsummary_interval_secs = 1\nstatus_file = {:?}\n\n",
            self.stop_after_frames,
            self.drain_on_stop_secs,
            self.status_file().display().to_string()
        );
        for (name, groups, meta) in &self.cameras {
            let groups: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
            s += &format!(
                "[[camera]]\nname = \"{name}\"\nfps = {:?}\ngroups = [{}]\n{}\n[camera.source]\ntype = \"test_pattern\"\nwidth = 160\nheight = 120\n[camera.metadata]\n{meta}\n",
                self.fps,
                groups.join(", "),
                self.camera_extra
            );
        }
        s += &format!(
            "[queue]\ndir = {:?}\nmax_frames = {}\non_full = \"{}\"\nfsync = \"{}\"\ncommit_window_ms = 50\n\n",
            self.queue_dir.display().to_string(),
            self.max_frames,
            self.on_full,
            self.fsync
        );
        s += &format!(
            "[upload]\nbatch_max_frames = {}\nbatch_max_age_secs = {}\nretry_initial_ms = 200\nretry_max_secs = {}\nstart_delay_max_secs = 0\n",
            self.batch_max_frames, self.batch_max_age_secs, self.retry_max_secs
        );
        match (&self.endpoint, &self.out_dir) {
            _ if self.picsellia.is_some() => s += "sink = \"picsellia\"\n",
            (Some(ep), _) => {
                s += &format!(
                    "sink = \"nexus\"\nendpoint = \"{ep}\"\nproject_id = \"{}\"\nsecret_key_env = \"EDGECAP_TEST_SECRET\"\noperation_poll_ms = 200\nconnect_timeout_secs = 2\nrequest_timeout_secs = 5\nstall_timeout_secs = 5\noperation_timeout_secs = {}\n",
                    self.project_id, self.operation_timeout_secs
                );
            }
            (None, Some(out)) => {
                s += &format!(
                    "sink = \"directory\"\npath = {:?}\n",
                    out.display().to_string()
                );
            }
            _ => {}
        }
        s += &self.extra_upload;
        if let Some(host) = &self.picsellia {
            s += &format!(
                "\n[upload.picsellia]\nhost = \"{host}\"\napi_token_env = \"EDGECAP_TEST_SECRET\"\nprocessing_poll_ms = 200\nconnect_timeout_secs = 2\nrequest_timeout_secs = 5\nstall_timeout_secs = 5\nprocessing_timeout_secs = 10\n{}\n",
                self.extra_picsellia
            );
        }
        s
    }

    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render()).unwrap();
        path.to_path_buf()
    }
}

/// A running `edgecap run`; its stderr goes to a file (kept after `kill -9`).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub stdout: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Self {
        Self::start_logging(config, log, "info,edgecap::daemon::commit=debug")
    }

    /// [`Daemon::start`] with its own `RUST_LOG` filter.
    pub fn start_logging(config: &Path, log: &Path, filter: &str) -> Self {
        Self::start_with(config, log, filter, &[])
    }

    /// [`Daemon::start`] with more environment (fault injection).
    pub fn start_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(config, log, "info,edgecap::daemon::commit=debug", env)
    }

    fn start_with(config: &Path, log: &Path, filter: &str, env: &[(&str, &str)]) -> Self {
        let stdout = log.with_extension("stdout");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("spawn edgecap");
        Self {
            child,
            log: log.to_path_buf(),
            stdout,
        }
    }

    /// Waits for exit, up to `timeout`; kills and panics past it.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.assert_no_secret();
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "edgecap did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        self.assert_no_secret();
    }

    /// The secret key must appear in no output of the daemon.
    pub fn assert_no_secret(&self) {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        for text in [self.log_text(), out] {
            assert!(
                !text.contains(fake_platform::nexus::SECRET),
                "the secret key leaked into the daemon's output"
            );
        }
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `cfg` into `dir`, runs the daemon until it exits by itself (60 s at most), and
/// checks that it exited 0. Returns the config path and the finished daemon.
pub async fn run_to_end(cfg: &TestConfig, dir: &Path) -> (PathBuf, Daemon) {
    let config = cfg.write(&dir.join("edgecap.toml"));
    let mut d = Daemon::start(&config, &dir.join("log"));
    let st = d.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log_text());
    (config, d)
}

/// The backlog a running daemon reports in its status file, if it wrote one yet.
pub fn queue_stats_live(cfg: &TestConfig) -> Option<u64> {
    let text = std::fs::read_to_string(cfg.status_file()).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["backlog_frames"].as_u64()
}

/// The log segment size sled's `conf` file in the index directory `index` records.
pub fn sled_segment_size(index: &Path) -> usize {
    let conf = std::fs::read(index.join("conf")).unwrap();
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("segment_size in sled's conf")
}

/// `edgecap queue stats --json`.
pub fn queue_stats(config: &Path) -> Value {
    let out = Command::new(bin())
        .args(["queue", "stats", "--json", "--config"])
        .arg(config)
        .env("EDGECAP_TEST_SECRET", fake_platform::nexus::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "queue stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Frame numbers (`sequence` metadata) per run id, from assets' custom metadata.
pub fn sequences_by_run<'a>(
    metas: impl Iterator<Item = &'a Value>,
) -> std::collections::BTreeMap<(String, String), Vec<i64>> {
    let mut out: std::collections::BTreeMap<(String, String), Vec<i64>> = Default::default();
    for m in metas {
        let run = m["run_id"].as_str().unwrap().to_string();
        let cam = m["camera"].as_str().unwrap().to_string();
        out.entry((run, cam))
            .or_default()
            .push(m["sequence"].as_i64().unwrap());
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// Filenames the daemon logged as committed.
pub fn committed_filenames(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("frame committed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("filename="))
                .map(|s| s.trim_matches('"').to_string())
        })
        .collect()
}

/// Whether to run the long versions of the reliability cases (`EDGECAP_LONG=1`, set by
/// `scripts/reliability`).
pub fn long() -> bool {
    std::env::var("EDGECAP_LONG").is_ok_and(|v| v == "1")
}

/// One row of `RELIABILITY.md`.
#[derive(Default)]
pub struct Figures {
    pub case: &'static str,
    pub runs: u64,
    pub committed: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub dead: u64,
    /// Seconds from the fault's end until the backlog was delivered (or capture was back).
    pub recovery_secs: Option<f64>,
    /// Case-specific figures, e.g. attempts while down, RSS.
    pub notes: String,
}

impl Figures {
    /// Prints the row, and appends it as a JSON line to `$EDGECAP_FIGURES` when set.
    #[allow(clippy::print_stderr, reason = "the figures are the test's report")]
    pub fn report(&self) {
        let v = serde_json::json!({
            "case": self.case, "long": long(), "runs": self.runs,
            "committed": self.committed, "delivered": self.delivered, "lost": self.lost,
            "duplicates": self.duplicates, "dead": self.dead,
            "recovery_secs": self.recovery_secs, "notes": self.notes,
        });
        eprintln!("FIGURES {v}");
        if let Ok(path) = std::env::var("EDGECAP_FIGURES") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(f, "{v}").unwrap();
        }
    }
}

/// A tmpfs mounted for a test (root mounts it: real ENOSPC, real read-only remounts),
/// lazily unmounted when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`.
    pub fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (the test needs root)");
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
