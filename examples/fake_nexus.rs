//! The test suite's fake Datature Nexus server (`fake-platform`'s `nexus` module, written to
//! `docs/protocols/nexus.md`) as a standalone process, for the benchmarks: the
//! official Python SDK and edgecap upload to the same server. It answers until SIGTERM or
//! SIGINT, then prints one JSON line: assets stored, bytes received, sessions, PUTs,
//! duplicates and the protocol violations it noticed.
//!
//! usage: fake_nexus [--listen ADDR:PORT] [--discard-bytes]
//! (default 127.0.0.1:0; prints `listening http://ADDR:PORT` once it accepts)

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
            }
            "--discard-bytes" => state.lock().unwrap().discard_bytes = true,
            _ => usage(),
        }
    }
    let server = FakeNexus::start_at(listen, state).await;
    println!("listening {}", server.endpoint());
    std::io::stdout().flush().unwrap();
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
        })
    });
    println!("{summary}");
}

fn usage() -> ! {
    eprintln!("usage: fake_nexus [--listen ADDR:PORT] [--discard-bytes]");
    std::process::exit(2)
}
