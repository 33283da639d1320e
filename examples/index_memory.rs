//! What the queue index (sled 0.34) keeps in memory after reading every entry once, as
//! the start-up reconcile does, read the two ways sled allows: its iterator (the baseline)
//! and one `get_gt` per entry, as the queue reads whole trees (`queue/index.rs`, `walk`).
//! The benchmark behind "the index's memory follows the cache, not the backlog"
//! (`scripts/bench`, scale part; BENCHMARKS.md).
//!
//! A database of N entries (8-byte keys like the queue's; values of V bytes: ~100 is an
//! index entry today, 20 would fit in sled's inline values) is written once, then opened
//! again with a page-cache capacity C and read from start to end. Each case runs in a
//! child process of its own, so that one case's heap is not the next one's; the child
//! prints the anonymous resident memory (`RssAnon`) after the open and after the scan.
//!
//! usage: index_memory [--entries N] [--dir DIR]
//!        (prints one JSON line per case: entries, value bytes, cache bytes, read method,
//!        KiB after the open and after the scan, the scan's milliseconds)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "a benchmark program: a failure ends it with the reason"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `RssAnon` of this process, KiB.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open(path: &Path, cache: u64) -> sled::Db {
    // As `queue/store.rs` opens the index.
    sled::Config::new()
        .path(path)
        .cache_capacity(cache)
        .segment_size(128 * 1024)
        .mode(sled::Mode::LowSpace)
        .open()
        .expect("open the database")
}

/// Writes `entries` entries of `value` bytes into the tree `pending` at `path`.
fn create(path: &Path, entries: u64, value: usize) {
    let db = open(path, 4 << 20);
    let tree = db.open_tree("pending").expect("open tree");
    let v = vec![b'x'; value];
    for seq in 1..=entries {
        tree.insert(seq.to_be_bytes(), v.as_slice())
            .expect("insert");
    }
    db.flush().expect("flush");
}

/// One case, in this (child) process: open with `cache`, read every entry with sled's
/// iterator (`read` = "iter") or one `get_gt` per entry ("walk").
fn case(path: &Path, cache: u64, read: &str) {
    let db = open(path, cache);
    let tree = db.open_tree("pending").expect("open tree");
    let opened = rss_anon_kib();
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    if read == "walk" {
        let mut next = tree.first().expect("read");
        while let Some((k, _)) = next {
            n += 1;
            next = tree.get_gt(&k).expect("read");
        }
    } else {
        for kv in tree.iter() {
            kv.expect("read");
            n += 1;
        }
    }
    let ms = t0.elapsed().as_millis();
    let scanned = rss_anon_kib();
    println!("{n} {opened} {scanned} {ms}");
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = arg(&args, "--case") {
        let cache = arg(&args, "--cache")
            .and_then(|c| c.parse().ok())
            .unwrap_or(4 << 20);
        let read = arg(&args, "--read").unwrap_or_else(|| "iter".to_string());
        case(Path::new(&path), cache, &read);
        return;
    }
    let entries: u64 = arg(&args, "--entries")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let base = arg(&args, "--dir").map_or_else(std::env::temp_dir, PathBuf::from);
    let me = std::env::current_exe().expect("own path");
    for value in [100usize, 20] {
        let path = base.join(format!("index-memory-{entries}-{value}"));
        let _ = std::fs::remove_dir_all(&path);
        create(&path, entries, value);
        for (read, cache) in ["iter", "walk"]
            .into_iter()
            .flat_map(|r| [64u64 << 10, 1 << 20, 4 << 20].map(|c| (r, c)))
        {
            let out = Command::new(&me)
                .arg("--case")
                .arg(&path)
                .arg("--cache")
                .arg(cache.to_string())
                .arg("--read")
                .arg(read)
                .output()
                .expect("run a case");
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<u64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if !out.status.success() || f.len() != 4 || f[0] != entries {
                eprintln!(
                    "index_memory: case failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::process::exit(1);
            }
            println!(
                "{{\"entries\": {entries}, \"value_bytes\": {value}, \"cache_bytes\": {cache}, \"read\": \"{read}\", \"opened_kib\": {}, \"scanned_kib\": {}, \"ms\": {}}}",
                f[1], f[2], f[3]
            );
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}
