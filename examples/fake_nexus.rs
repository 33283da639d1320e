//! The test suite's fake Datature Nexus server (`fake-platform`'s `nexus` module, written to
//! `docs/protocols/nexus.md`) as a standalone process, for the benchmarks: the
//! official Python SDK and edgecap upload to the same server. It answers until SIGTERM or
//! SIGINT, then prints one JSON line: assets stored, bytes received, sessions, PUTs,
//! duplicates and the protocol violations it noticed.
//!
//! usage: fake_nexus [--listen ADDR:PORT] [--discard-bytes] [--announce N]
//!                   [--project-limit N --window-ms MS [--retry-after]]
//! (default 127.0.0.1:0; prints `listening http://ADDR:PORT` once it accepts)
//!
//! `--announce N` prints `assets N` once it stores its N-th asset (looked at every 2 ms):
//! the benchmark waits for that line instead of asking the client under test how far it
//! is, which would cost the client CPU that the benchmark counts.
//!
//! `--project-limit` makes the server enforce one session limit for all its clients (N
//! sessions created per sliding window of MS milliseconds, 429 past it), as the platform
//! does per project: the fleet benchmark (`scripts/fleet`) runs many daemons against it.
//! The summary then also has, per device (a filename's part before its first `_`): the
//! assets' creation times, sessions created and 429s; and every session's creation time
//! (milliseconds since the server started).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark tool around test code"
)]

use std::io::Write;
use std::net::SocketAddr;

use fake_platform::nexus::{FakeNexus, Shared};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let state = Shared::default();
    // The project-wide limit: either flag sets it (15 sessions, 300 s unless given).
    let (mut limit, mut window_ms) = (None, None);
    let mut announce = None;
    let mut args = std::env::args().skip(1);
    let number = |args: &mut std::iter::Skip<std::env::Args>| -> u64 {
        args.next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage())
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
            }
            "--discard-bytes" => state.lock().unwrap().discard_bytes = true,
            "--announce" => announce = Some(number(&mut args) as usize),
            "--project-limit" => limit = Some(number(&mut args) as usize),
            "--window-ms" => window_ms = Some(number(&mut args)),
            "--retry-after" => state.lock().unwrap().faults.project_limit_retry_after = true,
            _ => usage(),
        }
    }
    if limit.is_some() || window_ms.is_some() {
        state.lock().unwrap().faults.project_limit = Some((
            limit.unwrap_or(15),
            std::time::Duration::from_millis(window_ms.unwrap_or(300_000)),
        ));
    }
    let started = std::time::Instant::now();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let server = FakeNexus::start_at(listen, state).await;
    println!("listening {}", server.endpoint());
    std::io::stdout().flush().unwrap();
    if let Some(n) = announce {
        let state = std::sync::Arc::clone(&server.state);
        tokio::spawn(async move {
            while state.lock().unwrap().assets.len() < n {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            println!("assets {n}");
            std::io::stdout().flush().unwrap();
        });
    }
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let summary = server.with(|s| {
        serde_json::json!({
            "assets": s.assets.len(),
            "bytes": s.assets.values().map(|a| a.size).sum::<u64>(),
            "sessions": s.record.session_sizes.len(),
            "session_attempts": s.record.session_attempts.len(),
            "puts": s.record.puts.len(),
            "duplicates": s.record.duplicates.len(),
            "violations": s.record.violations,
            "fleet": fleet(s, started, started_ms),
        })
    });
    println!("{summary}");
}

fn usage() -> ! {
    eprintln!(
        "usage: fake_nexus [--listen ADDR:PORT] [--discard-bytes] [--announce N] [--project-limit N] [--window-ms MS] [--retry-after]"
    );
    std::process::exit(2)
}

/// Per-device figures for the fleet benchmark.
fn fleet(
    s: &fake_platform::nexus::State,
    started: std::time::Instant,
    started_ms: u64,
) -> serde_json::Value {
    use std::collections::BTreeMap;
    let device = |f: &str| f.split('_').next().unwrap_or("").to_string();
    let mut assets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for a in s.assets.values() {
        assets
            .entry(device(&a.filename))
            .or_default()
            .push(a.create_ms.saturating_sub(started_ms));
    }
    for v in assets.values_mut() {
        v.sort_unstable();
    }
    let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
    for (_, d) in &s.record.sessions_created_at {
        *sessions.entry(d.clone()).or_default() += 1;
    }
    let created_ms: Vec<u64> = s
        .record
        .sessions_created_at
        .iter()
        .map(|(t, _)| t.duration_since(started).as_millis() as u64)
        .collect();
    serde_json::json!({
        "assets_ms": assets,
        "sessions": sessions,
        "limited": s.record.limited_by_device,
        "sessions_ms": created_ms,
    })
}
