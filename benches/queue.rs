//! Capture → durable queue: frames per second, MB/s, CPU time per frame, bytes written to
//! disk per byte of frames (write amplification) and disk space used against live data,
//! through the daemon's own commit thread (`daemon::commit::run`: naming, spool files,
//! grouped fsync, sled index), fed as fast as a producer thread can clone a camera frame
//! into the same bounded channel the cameras use.
//!
//! The baseline in the same run is the physical floor of the same durability: plain files
//! written, `fdatasync`'d and renamed, the directory fsync'd once per group (grouped, same
//! window) or once per frame (per_frame), with no header, metadata or index. A group of
//! [`SYNC_TOGETHER_FROM`] files or more is synced with one `syncfs` instead of a
//! `fdatasync` per file, as the queue's own group commit does.
//!
//! Run by `scripts/bench`; prints one JSON line per measurement.
//! usage: cargo bench --bench queue -- FRAME.jpg DIR FRAMES grouped|per_frame edgecap|baseline

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    reason = "benchmark code"
)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use edgecap::capture::Stop;
use edgecap::config::FsyncMode;
use edgecap::daemon::commit::{self, CommitSettings};
use edgecap::frame::{CapturedFrame, Namer};
use edgecap::ops::health::Beat;
use edgecap::queue::{Queue, SYNC_TOGETHER_FROM};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [frame, dir, frames, mode, what] = args.as_slice() else {
        eprintln!(
            "usage: cargo bench --bench queue -- FRAME.jpg DIR FRAMES grouped|per_frame edgecap|baseline"
        );
        std::process::exit(2);
    };
    let jpeg = std::fs::read(frame).unwrap();
    let frames: u64 = frames.parse().unwrap();
    let dir = Path::new(dir);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let config = edgecap::config::parse(&format!(
        r#"
[device]
id = "bench01"

[[camera]]
name = "cam0"
fps = 30.0
[camera.source]
type = "test_pattern"
[camera.metadata]
site = "bench"

[queue]
dir = {dir:?}
fsync = "{mode}"
max_bytes = {max}

[upload]
sink = "directory"
path = {out:?}
"#,
        dir = dir.join("queue"),
        max = 64u64 << 30,
        out = dir.join("out"),
    ))
    .unwrap_or_else(|p| panic!("bench config: {p:?}"));
    let fsync = config.queue.fsync;
    let window = config.queue.commit_window;

    let (tx, rx) = std::sync::mpsc::sync_channel::<CapturedFrame>(config.queue.buffer_frames);
    let producer = {
        let jpeg = jpeg.clone();
        std::thread::spawn(move || {
            for _ in 0..frames {
                let f = CapturedFrame {
                    camera: 0,
                    captured_at: SystemTime::now(),
                    jpeg: jpeg.clone(),
                    width: 1920,
                    height: 1080,
                };
                if tx.send(f).is_err() {
                    break;
                }
            }
        })
    };
    let io0 = write_bytes();
    let cpu0 = cpu_secs();
    let t = Instant::now();
    let committed = match what.as_str() {
        "edgecap" => {
            let (queue, _) = Queue::open(&config.queue).unwrap();
            let queue = Arc::new(queue);
            let namer = Namer::new(
                "bench01".into(),
                "benchrun".into(),
                edgecap::frame::CameraTable::new("bench01", &config.cameras),
            );
            let settings = CommitSettings {
                mode: fsync,
                window,
                stop_after: None,
            };
            let n = commit::run(
                Arc::clone(&queue),
                rx,
                namer,
                settings,
                Stop::new(),
                Arc::new(Beat::new("commit")),
            );
            queue.flush();
            n
        }
        "baseline" => baseline(&rx, &dir.join("plain"), fsync, window),
        other => panic!("edgecap or baseline, not {other}"),
    };
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let written = write_bytes() - io0;
    producer.join().unwrap();
    assert_eq!(committed, frames, "every frame committed");
    let bytes = committed * jpeg.len() as u64;
    let used = disk_used(dir);
    println!(
        "{}",
        serde_json::json!({
            "what": what, "mode": mode, "frames": committed, "frame_bytes": jpeg.len(),
            "wall_secs": wall, "frames_per_sec": committed as f64 / wall,
            "mb_per_sec": bytes as f64 / wall / 1e6,
            "cpu_secs": cpu, "cpu_us_per_frame": cpu * 1e6 / committed as f64,
            "write_bytes": written, "write_amplification": written as f64 / bytes as f64,
            "disk_used_bytes": used, "live_bytes": bytes,
            "disk_used_ratio": used as f64 / bytes as f64,
        })
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Plain files with the queue's durability protocol and nothing else.
fn baseline(
    rx: &std::sync::mpsc::Receiver<CapturedFrame>,
    dir: &Path,
    mode: FsyncMode,
    window: Duration,
) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        if mode == FsyncMode::Grouped {
            let deadline = Instant::now() + window;
            while group.len() < 256 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(f) => group.push(f),
                    Err(_) => break,
                }
            }
        }
        let watch = std::fs::File::open(dir).unwrap();
        let together = group.len() >= SYNC_TOGETHER_FROM;
        let mut files = Vec::new();
        for f in &group {
            let tmp = dir.join(format!("{n:016}.tmp"));
            let mut file = std::fs::File::create(&tmp).unwrap();
            file.write_all(&f.jpeg).unwrap();
            files.push((file, tmp, dir.join(format!("{n:016}.jpg"))));
            n += 1;
        }
        if together {
            rustix::fs::syncfs(&watch).unwrap();
        }
        for (file, tmp, dst) in files {
            if !together {
                file.sync_data().unwrap();
            }
            std::fs::rename(tmp, dst).unwrap();
        }
        std::fs::File::open(dir).unwrap().sync_all().unwrap();
    }
    n
}

/// Bytes this process caused to be written to storage (`/proc/self/io` `write_bytes`).
fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// User + system CPU time of the whole process (`/proc/self/stat`, in USER_HZ = 100 ticks).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Disk blocks allocated under `dir`, in bytes.
fn disk_used(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}
