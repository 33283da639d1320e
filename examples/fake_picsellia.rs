//! The test suite's fake Picsellia server (`fake-platform`'s `picsellia` module, written to
//! `docs/protocols/picsellia.md`) as a standalone process, for the benchmarks. It answers
//! until SIGTERM or SIGINT, then prints one JSON line: data registered, duplicates,
//! storage uploads, lookups and the protocol violations it noticed.
//!
//! usage: fake_picsellia [--azure] [--discard-bytes] [--done-at-once]
//! (listens on 127.0.0.1:0; prints `listening http://ADDR:PORT` once it accepts)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark tool around test code"
)]

use std::io::Write;

use fake_platform::picsellia::FakePicsellia;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut azure, mut discard, mut done) = (false, false, false);
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--azure" => azure = true,
            "--discard-bytes" => discard = true,
            "--done-at-once" => done = true,
            _ => {
                eprintln!("usage: fake_picsellia [--azure] [--discard-bytes] [--done-at-once]");
                std::process::exit(2)
            }
        }
    }
    let server = FakePicsellia::start(if azure { "azure" } else { "aws" }).await;
    server.with(|s| {
        s.discard_bytes = discard;
        s.faults.done_at_once = done;
    });
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
            "data": s.data.len(),
            "duplicates": s.duplicates().len(),
            "uploads": s.record.uploads.len(),
            "lookups": s.record.lookups,
            "violations": s.record.violations,
        })
    });
    println!("{summary}");
}
