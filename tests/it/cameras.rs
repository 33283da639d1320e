//! Camera sources end to end with the real binary: the `command` source against a real
//! ffmpeg child (rate, restart after the child is killed, no orphan after SIGTERM or after
//! `kill -9` of edgecap), several cameras in one daemon, `edgecap cameras` and
//! `edgecap snapshot`. ffmpeg comes from Debian's package, which `scripts/test` installs.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, bin};
use serde_json::Value;

fn ffmpeg_argv(size: &str, rate: u32) -> String {
    assert!(
        Command::new("ffmpeg").arg("-version").output().is_ok(),
        "ffmpeg is not installed; `scripts/test` installs it (apt-get install ffmpeg)"
    );
    format!(
        r#"["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size={size}:rate={rate}", "-f", "mjpeg", "-q:v", "5", "-"]"#
    )
}

fn config(dir: &Path, stop_after: u64, cameras: &str) -> PathBuf {
    let text = format!(
        "[device]\nid = \"camtest\"\n[daemon]\nstop_after_frames = {stop_after}\ndrain_on_stop_secs = 20\nsummary_interval_secs = 1\nstatus_file = {:?}\n\n{cameras}\n[queue]\ndir = {:?}\ncommit_window_ms = 50\n[upload]\nsink = \"directory\"\npath = {:?}\nbatch_max_age_secs = 1\n",
        dir.join("status.json").display().to_string(),
        dir.join("queue").display().to_string(),
        dir.join("out").display().to_string(),
    );
    let p = dir.join("edgecap.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn command_camera(name: &str, fps: f64, argv: &str, extra: &str) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nfps = {fps:.1}\ngroups = [\"g-{name}\"]\n[camera.source]\ntype = \"command\"\nargv = {argv}\nframe_timeout_secs = 5\n[camera.metadata]\nsite = \"site-{name}\"\n{extra}\n"
    )
}

/// Every delivered frame's metadata file, parsed.
fn delivered(out: &Path) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let p = e.ok()?.path();
        if p.extension()? != "json" {
            return None;
        }
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    })
    .collect()
}

fn jpg_count(out: &Path) -> usize {
    std::fs::read_dir(out)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
                .count()
        })
        .unwrap_or(0)
}

/// (pid, command name, state) of the live children of `parent`.
fn children(parent: u32) -> Vec<(u32, String, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 2..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, comm, state));
        }
    }
    out
}

/// Whether `pid` runs (a zombie or a missing process does not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 2..].chars().next())
        .unwrap_or('?');
    state != 'Z' && state != 'X'
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ffmpeg_child(d: &Daemon) -> Option<u32> {
    children(d.child.id())
        .into_iter()
        .find(|(_, comm, state)| comm == "ffmpeg" && *state != 'Z')
        .map(|(pid, _, _)| pid)
}

#[tokio::test]
async fn command_source_delivers_valid_jpegs_at_the_configured_rate() {
    let dir = tempfile::tempdir().unwrap();
    let argv = ffmpeg_argv("640x480", 10);
    let cfg = config(dir.path(), 30, &command_camera("ff", 5.0, &argv, ""));
    let mut d = Daemon::start(&cfg, &dir.path().join("log"));
    let st = d.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log_text());
    let metas = delivered(&dir.path().join("out"));
    assert!(metas.len() >= 30, "{} frames delivered", metas.len());
    for m in &metas {
        let name = m["filename"].as_str().unwrap();
        let bytes = std::fs::read(dir.path().join("out").join(name)).unwrap();
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("{name} is not a valid JPEG: {e}"));
        assert_eq!((img.width(), img.height()), (640, 480));
        assert_eq!(m["customMetadata"]["width"], 640);
        assert_eq!(m["groups"], serde_json::json!(["g-ff"]));
    }
    let mut t: Vec<i64> = metas
        .iter()
        .map(|m| m["customMetadata"]["capture_time_ms"].as_i64().unwrap())
        .collect();
    t.sort_unstable();
    let span_s = (t[t.len() - 1] - t[0]) as f64 / 1000.0;
    let rate = (t.len() - 1) as f64 / span_s;
    assert!(
        (4.5..=5.5).contains(&rate),
        "captured at {rate:.2} fps, configured 5 (stream at 10)"
    );
}

#[tokio::test]
async fn a_killed_child_is_restarted_and_none_is_left_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let argv = ffmpeg_argv("320x240", 10);
    let cfg = config(dir.path(), 0, &command_camera("ff", 5.0, &argv, ""));
    let d = Daemon::start(&cfg, &dir.path().join("log"));
    wait_for("5 frames", Duration::from_secs(30), || jpg_count(&out) >= 5).await;
    let first = ffmpeg_child(&d).expect("an ffmpeg child of edgecap");
    let st = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let at_kill = jpg_count(&out);
    let mut second = None;
    wait_for("a new ffmpeg child", Duration::from_secs(15), || {
        second = ffmpeg_child(&d).filter(|p| *p != first);
        second.is_some()
    })
    .await;
    wait_for("capture to resume", Duration::from_secs(30), || {
        jpg_count(&out) >= at_kill + 5
    })
    .await;
    let log = d.log_text();
    assert!(log.contains("camera source failed"), "{log}");
    assert!(log.contains("signal 9"), "the exit is reported: {log}");
    assert!(log.contains("camera source is back"), "{log}");
    d.signal("TERM");
    let mut d = d;
    let st = d.wait(Duration::from_secs(30)).await;
    assert!(st.success(), "{st:?}");
    let second = second.unwrap_or(0);
    assert!(
        !alive(first) && !alive(second),
        "an ffmpeg child outlived edgecap"
    );
}

#[tokio::test]
async fn kill_9_of_edgecap_takes_the_child_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let argv = ffmpeg_argv("320x240", 10);
    let cfg = config(dir.path(), 0, &command_camera("ff", 5.0, &argv, ""));
    let mut d = Daemon::start(&cfg, &dir.path().join("log"));
    wait_for("2 frames", Duration::from_secs(30), || jpg_count(&out) >= 2).await;
    let child = ffmpeg_child(&d).expect("an ffmpeg child of edgecap");
    d.kill9();
    wait_for("the orphaned ffmpeg to die", Duration::from_secs(5), || {
        !alive(child)
    })
    .await;
}

#[tokio::test]
async fn two_cameras_deliver_their_own_streams_metadata_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let argv = ffmpeg_argv("320x240", 10);
    let pattern = "[[camera]]\nname = \"pat\"\nfps = 10.0\ngroups = [\"g-pat\", \"shared\"]\n[camera.source]\ntype = \"test_pattern\"\nwidth = 160\nheight = 96\n[camera.metadata]\nsite = \"site-pat\"\nrig = 7\n";
    let cams = format!("{}\n{pattern}", command_camera("ff", 5.0, &argv, ""));
    let cfg = config(dir.path(), 40, &cams);
    let mut d = Daemon::start(&cfg, &dir.path().join("log"));
    let st = d.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log_text());
    let metas = delivered(&dir.path().join("out"));
    let of = |cam: &str| -> Vec<&Value> { metas.iter().filter(|m| m["camera"] == cam).collect() };
    let (ff, pat) = (of("ff"), of("pat"));
    assert!(
        ff.len() >= 5 && pat.len() >= 5,
        "ff {} pat {}",
        ff.len(),
        pat.len()
    );
    assert_eq!(ff.len() + pat.len(), metas.len());
    for m in ff {
        assert_eq!(m["groups"], serde_json::json!(["g-ff"]));
        assert_eq!(m["customMetadata"]["site"], "site-ff");
        assert_eq!(m["customMetadata"]["width"], 320);
        assert!(m["customMetadata"].get("rig").is_none());
    }
    for m in pat {
        assert_eq!(m["groups"], serde_json::json!(["g-pat", "shared"]));
        assert_eq!(m["customMetadata"]["site"], "site-pat");
        assert_eq!(m["customMetadata"]["rig"], 7);
        assert_eq!(m["customMetadata"]["width"], 160);
    }
}

#[test]
fn cameras_lists_devices_or_says_clearly_there_are_none() {
    let out = Command::new(bin()).arg("cameras").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let has_video = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("video"));
    if has_video {
        assert!(text.contains("/dev/video"), "{text}");
    } else {
        assert!(text.contains("no V4L2 cameras found"), "{text}");
        assert!(text.contains("rpicam-vid"), "{text}");
    }
}

#[test]
fn snapshot_runs_the_configured_pipeline_once() {
    let dir = tempfile::tempdir().unwrap();
    // A rate no other test uses, so that its ffmpeg can be told from theirs.
    let argv = ffmpeg_argv("640x480", 9);
    let cams = format!(
        "{}\n[[camera]]\nname = \"pat\"\n[camera.source]\ntype = \"test_pattern\"\nwidth = 320\nheight = 240\n[camera.transform]\nrotate_degrees = 90\nmax_height = 160\n",
        command_camera("ff", 1.0, &argv, "")
    );
    let cfg = config(dir.path(), 0, &cams);
    let snap = |cam: &str| {
        let file = dir.path().join(format!("{cam}.jpg"));
        let out = Command::new(bin())
            .args(["snapshot", "--camera", cam, "-o"])
            .arg(&file)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image::load_from_memory(&std::fs::read(&file).unwrap()).unwrap()
    };
    let ff = snap("ff");
    assert_eq!((ff.width(), ff.height()), (640, 480));
    // Rotated to 240x320, then fitted to a height of 160.
    let pat = snap("pat");
    assert_eq!((pat.width(), pat.height()), (120, 160));
    // An unknown camera is a usage error naming the cameras there are.
    let out = Command::new(bin())
        .args([
            "snapshot",
            "--camera",
            "nope",
            "-o",
            "/tmp/x.jpg",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cameras: ff, pat"));
    // No ffmpeg left behind by the snapshots: none of this test's is still running,
    // whoever it was reparented to (other tests start ffmpeg of their own meanwhile).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = running_with_arg("testsrc=size=640x480:rate=9");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "ffmpeg left running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes, not zombies, one of whose arguments is `arg`.
fn running_with_arg(arg: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn capture_times(metas: &[Value], cam: &str) -> Vec<i64> {
    let mut t: Vec<i64> = metas
        .iter()
        .filter(|m| m["camera"] == cam)
        .map(|m| m["customMetadata"]["capture_time_ms"].as_i64().unwrap())
        .collect();
    t.sort_unstable();
    t
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_child_killed_again_and_again_is_back_each_time_within_the_backoff_and_the_other_camera_never_gaps()
 {
    // 5 kills in the normal run, 20 with `EDGECAP_LONG=1` (scripts/reliability).
    let kills = if crate::support::long() { 20 } else { 5 };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let argv = ffmpeg_argv("320x240", 10);
    let pattern = "[[camera]]\nname = \"pat\"\nfps = 10.0\ngroups = [\"g-pat\"]\n[camera.source]\ntype = \"test_pattern\"\nwidth = 160\nheight = 96\n";
    let cams = format!("{}\n{pattern}", command_camera("ff", 5.0, &argv, ""));
    let cfg = config(dir.path(), 0, &cams);
    let mut d = Daemon::start(&cfg, &dir.path().join("log"));
    let mut recoveries = Vec::new();
    let mut killed = Vec::new();
    for k in 0..kills {
        // Running again: a live child and fresh frames from it.
        let since = now_ms();
        wait_for("the camera to run", Duration::from_secs(30), || {
            capture_times(&delivered(&out), "ff")
                .iter()
                .filter(|t| **t > since)
                .count()
                >= 3
        })
        .await;
        let child = ffmpeg_child(&d).expect("an ffmpeg child of edgecap");
        assert!(!killed.contains(&child), "kill {k}: a new child each time");
        let kill_ms = now_ms();
        let st = Command::new("kill")
            .args(["-9", &child.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        killed.push(child);
        let mut first_after = 0;
        wait_for("the camera to be back", Duration::from_secs(30), || {
            first_after = capture_times(&delivered(&out), "ff")
                .into_iter()
                .find(|t| *t > kill_ms + 50)
                .unwrap_or(0);
            first_after > 0
        })
        .await;
        recoveries.push(first_after - kill_ms);
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
    let log = d.log_text();
    // Each death is reported and each return too (not only the first).
    assert_eq!(log.matches("camera source is back").count(), kills, "{log}");
    assert!(log.matches("signal 9").count() >= kills, "{log}");
    // The restart delay starts again at 0.5 s after every good frame: a camera that is
    // killed often is not pushed towards the 30 s maximum.
    let worst = *recoveries.iter().max().unwrap();
    assert!(
        worst <= 4_000,
        "back after {recoveries:?} ms: the backoff should reset after each recovery"
    );
    let metas = delivered(&out);
    let pat = capture_times(&metas, "pat");
    let pat_gap = pat.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        pat_gap <= 1_000,
        "the other camera gapped {pat_gap} ms while ff was being killed"
    );
    let committed = crate::support::committed_filenames(&log).len() as u64;
    // A stop by signal does not drain: the last frames wait in the queue.
    let queued = std::fs::read_dir(dir.path().join("queue/spool"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "frame"))
        })
        .count() as u64;
    assert_eq!(
        committed,
        metas.len() as u64 + queued,
        "every committed frame delivered or still queued"
    );
    crate::support::Figures {
        case: "camera process killed repeatedly",
        runs: kills as u64,
        committed,
        delivered: metas.len() as u64,
        lost: 0,
        duplicates: 0,
        dead: 0,
        recovery_secs: Some(worst as f64 / 1000.0),
        notes: format!(
            "back after {:.1}–{:.1} s (kill to first new frame); other camera's largest gap {pat_gap} ms at 10 fps",
            *recoveries.iter().min().unwrap() as f64 / 1000.0,
            worst as f64 / 1000.0
        ),
    }
    .report();
}

/// `edgecap run` executes itself once with glibc's thread cache off (`ops/memory.rs`),
/// keeping its process id and its name, and starts its camera commands with the
/// environment as the operator set it; an operator's own thread-cache setting is left
/// alone.
#[tokio::test]
async fn run_turns_the_malloc_thread_cache_off_and_children_get_the_operators_environment() {
    let cases = [
        (None, true),
        (Some("glibc.malloc.trim_threshold=131072"), true),
        (Some("glibc.malloc.tcache_count=3"), false),
    ];
    for (operator, off) in cases {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("env.txt");
        // The camera command writes its environment, then streams as usual.
        let ffmpeg = ffmpeg_argv("320x240", 10);
        let inner = ffmpeg
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(", ")
            .map(|a| a.trim_matches('"'))
            .collect::<Vec<_>>()
            .join(" ");
        let argv = format!(
            r#"["sh", "-c", "env > '{}'; exec {inner}"]"#,
            env_file.display()
        );
        let cfg = config(dir.path(), 0, &command_camera("ff", 5.0, &argv, ""));
        let log = dir.path().join("log");
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info,edgecap::cli=debug")
            .env("NO_COLOR", "1")
            .env_remove("GLIBC_TUNABLES")
            .env_remove("MALLOC_ARENA_MAX")
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(v) = operator {
            cmd.env("GLIBC_TUNABLES", v);
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let out = dir.path().join("out");
        wait_for("a delivered frame", Duration::from_secs(30), || {
            jpg_count(&out) > 0
        })
        .await;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let env = std::fs::read_to_string(&env_file).unwrap();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let st = child.wait().unwrap();
        assert!(st.success(), "{operator:?}: exit {st:?}; log:\n{text}");
        assert_eq!(
            comm.trim(),
            "edgecap",
            "{operator:?}: the process name changed"
        );
        let said = if off {
            "no thread cache"
        } else {
            "the thread cache stays on"
        };
        assert!(text.contains(said), "{operator:?}: no {said:?} in:\n{text}");
        let seen: Vec<&str> = env
            .lines()
            .filter(|l| l.starts_with("GLIBC_TUNABLES=") || l.starts_with("EDGECAP_GLIBC"))
            .collect();
        let want: Vec<String> = operator
            .map(|v| format!("GLIBC_TUNABLES={v}"))
            .into_iter()
            .collect();
        assert_eq!(seen, want, "{operator:?}: the camera command's environment");
    }
}
