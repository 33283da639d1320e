//! `edgecap enqueue`: existing JPEG files into the queue, then uploaded by the daemon.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::process::Command;
use std::time::Duration;

use crate::support::{Daemon, TestConfig, bin};
use fake_platform::nexus::{FakeNexus, SECRET};

fn jpeg(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([seed, (x * 4) as u8, (y * 5) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The daemon of `config` started, once its inbox exists and its status is live; the
/// inbox's path.
async fn start_with_inbox(
    cfg: &TestConfig,
    config: &std::path::Path,
    dir: &std::path::Path,
) -> (Daemon, std::path::PathBuf) {
    let d = Daemon::start(config, &dir.join("log"));
    let inbox = cfg.queue_dir.join("inbox");
    for _ in 0..100 {
        if inbox.is_dir() && crate::support::queue_stats_live(cfg).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (d, inbox)
}

/// The names in `dir`, hidden ones too.
fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect()
}

fn enqueue(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["enqueue", "--config"])
        .arg(config)
        .args(args)
        .env("EDGECAP_TEST_SECRET", SECRET)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_files_are_uploaded_byte_identical_with_the_cameras_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let mut originals = Vec::new();
    for i in 0..6u8 {
        let b = jpeg(i * 40);
        std::fs::write(folder.join(format!("img{i}.jpg")), &b).unwrap();
        originals.push(b);
    }
    std::fs::write(folder.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(folder.join("readme.txt"), b"ignored: not *.jpg").unwrap();

    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.stop_after_frames = 1;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));

    let out = enqueue(&config, &["--camera", "cam0", folder.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a skipped file: exit 1\n{stderr}"
    );
    assert!(stdout.contains("enqueued 6 frame(s)"), "{stdout}");
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("not a JPEG"),
        "{stderr}"
    );
    assert!(!stderr.contains("readme.txt"), "{stderr}");

    // A camera that does not exist is a usage error.
    let out = enqueue(&config, &["--camera", "nope", folder.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));

    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    assert!(
        d.wait(Duration::from_secs(60)).await.success(),
        "{}",
        d.log_text()
    );
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        let mut found = 0;
        for a in s.assets.values() {
            if originals.contains(&a.bytes) {
                found += 1;
                assert_eq!(a.groups, vec!["main".to_string(), "field".to_string()]);
                assert_eq!(a.custom_metadata["site"], "north");
                assert_eq!(a.custom_metadata["width"], 64);
                assert!(a.filename.starts_with("testdev_cam0_"), "{}", a.filename);
            }
        }
        assert_eq!(found, 6, "every enqueued file arrived byte-identical");
        assert_eq!(s.assets.len(), 7, "6 enqueued + 1 captured");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_takes_files_through_its_inbox_from_enqueue_and_other_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let mut originals = Vec::new();
    for i in 0..5u8 {
        let b = jpeg(i * 50 + 1);
        std::fs::write(folder.join(format!("img{i}.jpg")), &b).unwrap();
        originals.push(b);
    }
    std::fs::write(folder.join("broken.jpg"), b"not a jpeg").unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 0.2;
    cfg.batch_max_age_secs = 1;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let (mut d, inbox) = start_with_inbox(&cfg, &config, tmp.path()).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&inbox).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o2770, "group-writable, setgid: {mode:o}");

    // `enqueue` while the daemon holds the queue: handed over, durably, through the inbox.
    let out = enqueue(&config, &["--camera", "cam0", folder.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one skipped file\n{stdout}{stderr}"
    );
    assert!(stdout.contains("handed 5 frame(s)"), "{stdout}");
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("not a JPEG"),
        "{stderr}"
    );

    // Another program: a sidecar, then the image renamed into place.
    let other = jpeg(222);
    std::fs::write(
        inbox.join("det-0001.jpg.json"),
        br#"{"camera": "cam0", "metadata": {"detector": "yolo", "score": 0.87}}"#,
    )
    .unwrap();
    std::fs::write(inbox.join(".det-0001.jpg"), &other).unwrap();
    std::fs::rename(inbox.join(".det-0001.jpg"), inbox.join("det-0001.jpg")).unwrap();
    // And an item that cannot be queued: quarantined, never deleted.
    std::fs::write(inbox.join(".bad.jpg"), b"garbage").unwrap();
    std::fs::rename(inbox.join(".bad.jpg"), inbox.join("bad.jpg")).unwrap();

    let mut arrived = 0;
    for _ in 0..300 {
        arrived = server.with(|s| {
            s.assets
                .values()
                .filter(|a| {
                    // Bytes and metadata both (bulk metadata lands after the upload).
                    (originals.contains(&a.bytes) && a.custom_metadata.get("source_file").is_some())
                        || (a.bytes == other && a.custom_metadata.get("detector").is_some())
                })
                .count()
        });
        if arrived == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(arrived, 6, "{}", d.log_text());
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        for a in s.assets.values() {
            if a.bytes == other {
                assert_eq!(a.custom_metadata["detector"], "yolo");
                assert_eq!(
                    a.custom_metadata["site"], "north",
                    "the camera's own metadata"
                );
            } else if originals.contains(&a.bytes) {
                let src = a.custom_metadata["source_file"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(src.starts_with(folder.to_str().unwrap()), "{src}");
            }
        }
    });
    let left = entries(&inbox);
    assert!(left.is_empty(), "the inbox is emptied: {left:?}");
    let quarantined: Vec<String> = std::fs::read_dir(cfg.queue_dir.join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined.contains(&"bad.jpg".to_string()),
        "{quarantined:?}"
    );
    assert!(
        d.log_text().contains("quarantined an inbox item"),
        "{}",
        d.log_text()
    );

    // The same files again: recognised, nothing handed over.
    let out = enqueue(&config, &["--camera", "cam0", folder.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("handed 0 frame(s)")
            && stdout.contains("skipped 5 file(s) enqueued before"),
        "{stdout}"
    );
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
}

fn run_drain(config: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["run", "--drain", "--config"])
        .arg(config)
        .env("EDGECAP_TEST_SECRET", SECRET)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drain_uploads_what_is_queued_without_capturing_and_says_when_frames_remain() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..6u8 {
        std::fs::write(folder.join(format!("img{i}.jpg")), jpeg(i * 40)).unwrap();
    }
    // Server down: the drain gives up after drain_on_stop_secs, exit 1, frames kept.
    let mut cfg = TestConfig::nexus(
        tmp.path(),
        &format!("http://127.0.0.1:{}", crate::support::free_port()),
    );
    cfg.drain_on_stop_secs = 2;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    assert!(
        enqueue(&config, &[folder.to_str().unwrap()])
            .status
            .success()
    );
    let out = run_drain(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("still queued"), "{stderr}");
    let stats = crate::support::queue_stats(&config);
    assert_eq!(stats["pending"]["frames"], 6, "{stats}");

    // Server up: everything goes, no camera captured anything, exit 0.
    let server = FakeNexus::start().await;
    cfg.endpoint = Some(server.endpoint());
    cfg.drain_on_stop_secs = 60;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let out = tokio::task::spawn_blocking(move || run_drain(&config))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("committed 0 frame(s) and delivered 6"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert_eq!(s.assets.len(), 6);
    });
}

/// A backlog larger than the sessions left can carry at `batch_max_frames` goes in bigger
/// batches instead of waiting for the session limit's window (here 2 sessions per 10 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_grows_the_batches_instead_of_waiting_for_the_session_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..40u8 {
        std::fs::write(folder.join(format!("img{i}.jpg")), jpeg(i * 6)).unwrap();
    }
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.batch_max_frames = 5;
    cfg.drain_on_stop_secs = 60;
    cfg.extra_upload = "session_rate_limit = 2\nsession_rate_window_secs = 600\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    assert!(
        enqueue(&config, &[folder.to_str().unwrap()])
            .status
            .success()
    );
    let t = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || run_drain(&config))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(!stderr.contains("session rate limit reached"), "{stderr}");
    server.with(|s| {
        assert!(s.record.violations.is_empty(), "{:?}", s.record.violations);
        assert_eq!(s.assets.len(), 40);
        assert!(
            s.record.session_sizes.len() <= 2,
            "{:?}",
            s.record.session_sizes
        );
        assert!(
            s.record.session_sizes.iter().all(|n| *n > 5),
            "{:?}",
            s.record.session_sizes
        );
    });
}

/// A folder as a photographer leaves it: subfolders, other files, an empty JPEG. With
/// `--recursive` every JPEG goes in with its source file and time; a second run skips
/// them all (same content), `--allow-duplicates` takes them again; `-v` lists what was
/// left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_a_real_folder_recursively_once_with_source_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("shoot");
    std::fs::create_dir_all(folder.join("day2/late")).unwrap();
    let files = [
        folder.join("a.jpg"),
        folder.join("B.JPEG"),
        folder.join("day2/c.jpg"),
        folder.join("day2/late/d.jpg"),
    ];
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, jpeg(i as u8 * 50)).unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "x").unwrap();
    std::fs::write(folder.join("day2/raw.png"), "x").unwrap();
    std::fs::write(folder.join("day2/empty.jpg"), b"").unwrap();
    let out_dir = tmp.path().join("out");
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(out_dir.clone());
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Without --recursive: the top folder only.
    let o = enqueue(&config, &[folder.to_str().unwrap(), "-v"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("enqueued 2 frame(s)"), "{t}");
    assert!(
        t.contains("not a .jpg/.jpeg file, left out: ") && t.contains("notes.txt"),
        "{t}"
    );

    // Recursive: the two deeper ones; the two top ones are duplicates now; the empty file
    // is named as such (exit 1: a file was skipped).
    let o = enqueue(&config, &["--recursive", folder.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("enqueued 2 frame(s)"), "{t}");
    assert!(t.contains("skipped 2 file(s) enqueued before"), "{t}");
    assert!(t.contains("empty.jpg: empty file"), "{t}");
    assert!(
        t.contains("left out 2 file(s) that are not .jpg/.jpeg (-v lists them)"),
        "{t}"
    );

    // Allowed duplicates go in again.
    let o = enqueue(
        &config,
        &["--allow-duplicates", folder.join("a.jpg").to_str().unwrap()],
    );
    assert!(text(&o).contains("enqueued 1 frame(s)"), "{}", text(&o));

    // Delivered, each with where it came from.
    let o = run_drain(&config);
    assert!(o.status.success(), "{}", text(&o));
    let mut sources = Vec::new();
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let m = &v["customMetadata"];
            assert!(m["source_mtime"].as_str().unwrap().ends_with('Z'), "{m}");
            sources.push(m["source_file"].as_str().unwrap().to_string());
        }
    }
    sources.sort();
    let mut want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    want.push(files[0].display().to_string());
    want.sort();
    assert_eq!(sources, want);
    // Delivered files are recognised too.
    let o = enqueue(&config, &["-r", folder.to_str().unwrap()]);
    assert!(text(&o).contains("enqueued 0 frame(s)"), "{}", text(&o));
    assert!(
        text(&o).contains("skipped 4 file(s) enqueued before"),
        "{}",
        text(&o)
    );
}

/// A queue from a version that kept SHA-256 digests: after the upgrade, a file enqueued
/// before it is still recognised (looked up by its SHA-256 while the log has such lines),
/// and new files are noted by their BLAKE3 digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_enqueued_before_the_digest_changed_are_still_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old.jpg"), tmp.path().join("new.jpg"));
    std::fs::write(&old, jpeg(7)).unwrap();
    std::fs::write(&new, jpeg(8)).unwrap();
    let mut cfg = TestConfig::nexus(tmp.path(), "http://unused");
    cfg.endpoint = None;
    cfg.out_dir = Some(tmp.path().join("out"));
    let queue = cfg.queue_dir.clone();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    std::fs::create_dir_all(&queue).unwrap();
    // The line an earlier version wrote for old.jpg: its SHA-256 in hex.
    let sha = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&old).unwrap());
    let hex: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(queue.join("enqueued"), format!("{hex}\n")).unwrap();

    let o = enqueue(&config, &[old.to_str().unwrap(), new.to_str().unwrap()]);
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t.contains("enqueued 1 frame(s)"), "{t}");
    assert!(t.contains("skipped 1 file(s) enqueued before"), "{t}");
    // new.jpg is noted by its BLAKE3 digest, after the earlier version's line.
    let log = std::fs::read_to_string(queue.join("enqueued")).unwrap();
    let b3 = blake3::hash(&std::fs::read(&new).unwrap()).to_hex();
    assert_eq!(log, format!("{hex}\nb3:{b3}\n"));
    // And recognised by it next time.
    let o = enqueue(&config, &[new.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("enqueued 0 frame(s)")
            || String::from_utf8_lossy(&o.stderr).contains("enqueued 0 frame(s)"),
        "{o:?}"
    );
}

/// More files than one group (256): each group is synced and renamed in by a second
/// thread while the next one is written. Every file arrives once, and nothing is left
/// hidden in the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_of_several_groups_delivers_every_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let n = 300usize;
    for i in 0..n {
        // Distinct content: the number's bits as black or white 8x8 blocks.
        let img = image::RgbImage::from_fn(80, 8, |x, _| {
            let v = if (i >> (x / 8)) & 1 == 1 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        std::fs::write(folder.join(format!("f{i:04}.jpg")), out.into_inner()).unwrap();
    }
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 0.2;
    cfg.batch_max_age_secs = 1;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let (mut d, inbox) = start_with_inbox(&cfg, &config, tmp.path()).await;
    let out = enqueue(&config, &["--camera", "cam0", folder.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("handed {n} frame(s)")), "{stdout}");
    let mut arrived = 0;
    for _ in 0..300 {
        arrived = server.with(|s| {
            s.assets
                .values()
                .filter(|a| a.custom_metadata.get("source_file").is_some())
                .count()
        });
        if arrived >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(arrived, n, "{}", d.log_text());
    server.with(|s| assert!(s.record.violations.is_empty(), "{:?}", s.record.violations));
    let left = entries(&inbox);
    assert!(left.is_empty(), "nothing left, hidden or not: {left:?}");
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
}

/// The status file's JSON, once the daemon has written one.
fn status_json(cfg: &TestConfig) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(cfg.status_file()).ok()?).ok()
}

/// Whether the running daemon's backlog reaches `want` frames within 10 s.
async fn backlog(cfg: &TestConfig, want: u64) -> bool {
    for _ in 0..200 {
        if crate::support::queue_stats_live(cfg) == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A full queue holds inbox items back without losing them or counting them as drops:
/// they wait in the inbox (the hold-back logged once, not at every try), and are taken
/// once uploads make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_items_wait_for_room_in_a_full_queue_and_are_not_counted_as_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    // Nothing uploads (every session creation answered 503) until the test allows it.
    server.with(|s| {
        for _ in 0..100_000 {
            s.faults
                .session_create
                .push_back(fake_platform::nexus::Scripted::status(503, "{}"));
        }
    });
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 0.01; // one frame at the start, the next one 100 s later
    cfg.max_frames = 3;
    cfg.on_full = "drop_newest".into();
    cfg.batch_max_age_secs = 1;
    cfg.retry_max_secs = 1;
    // The refused tries must not use up the session limit's window.
    cfg.extra_upload = "session_rate_window_secs = 1\n".into();
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let (mut d, inbox) = start_with_inbox(&cfg, &config, tmp.path()).await;
    assert!(
        backlog(&cfg, 1).await,
        "the captured frame: {}",
        d.log_text()
    );

    // Five items from another program; the queue has room for two of them.
    let mut images = Vec::new();
    for i in 0..5u8 {
        let b = jpeg(i * 40 + 3);
        std::fs::write(inbox.join(format!(".item{i}.jpg")), &b).unwrap();
        std::fs::rename(
            inbox.join(format!(".item{i}.jpg")),
            inbox.join(format!("item{i}.jpg")),
        )
        .unwrap();
        images.push(b);
    }
    assert!(backlog(&cfg, 3).await, "two taken: {}", d.log_text());
    // Three hold-back periods (5 s each) later the other three still wait, uncounted.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let waiting = entries(&inbox);
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    let st = status_json(&cfg).unwrap();
    assert_eq!(st["counters"]["dropped_budget"], 0, "{st}");
    assert_eq!(st["counters"]["dropped_write"], 0, "{st}");
    assert_eq!(st["counters"]["committed"], 3, "{st}");
    let log = d.log_text();
    assert_eq!(
        log.matches("cannot take frames from the inbox now").count(),
        1,
        "the hold-back is logged once:\n{log}"
    );
    assert!(!log.contains("refused a new frame"), "{log}");

    // Uploads make room: every item arrives, none lost, none counted as dropped.
    server.with(|s| s.faults.session_create.clear());
    let mut arrived = 0;
    for _ in 0..400 {
        arrived = server.with(|s| {
            s.assets
                .values()
                .filter(|a| images.contains(&a.bytes))
                .count()
        });
        if arrived == images.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(arrived, images.len(), "{}", d.log_text());
    assert!(entries(&inbox).is_empty(), "{:?}", entries(&inbox));
    assert!(
        d.log_text().contains("taking frames from the inbox again"),
        "{}",
        d.log_text()
    );
    d.signal("TERM");
    assert!(
        d.wait(Duration::from_secs(30)).await.success(),
        "{}",
        d.log_text()
    );
    let stats = crate::support::queue_stats(&config);
    assert_eq!(stats["counters"]["dropped_budget"], 0, "{stats}");
    assert_eq!(stats["counters"]["committed"], 6, "{stats}");
}

/// A hidden file a hand-over left in the inbox (killed before its rename) is moved to
/// quarantine once it has been unchanged for a day, not left to fill the disk; one still
/// being written stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_hidden_inbox_files_are_set_aside_and_fresh_ones_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FakeNexus::start().await;
    let mut cfg = TestConfig::nexus(tmp.path(), &server.endpoint());
    cfg.fps = 0.2;
    let config = cfg.write(&tmp.path().join("edgecap.toml"));
    let inbox = cfg.queue_dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let old = std::fs::File::create(inbox.join(".enqueue-old-0000001.frame")).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(25 * 3600))
        .unwrap();
    std::fs::write(inbox.join(".enqueue-new-0000001.frame"), b"being written").unwrap();
    let mut d = Daemon::start(&config, &tmp.path().join("log"));
    let quarantine = cfg.queue_dir.join("quarantine");
    let mut set_aside = false;
    for _ in 0..100 {
        set_aside = quarantine.join(".enqueue-old-0000001.frame").exists();
        if set_aside {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(set_aside, "{}", d.log_text());
    assert_eq!(
        entries(&inbox),
        [std::ffi::OsString::from(".enqueue-new-0000001.frame")]
    );
    assert!(
        d.log_text().contains("unchanged for a day"),
        "{}",
        d.log_text()
    );
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).await.success());
}
