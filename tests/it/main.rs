//! edgecap's integration tests, one binary (as ripgrep has), so the harness in `support/`
//! is compiled once. Each module is one area of behaviour, run against the real `edgecap`
//! binary, real files and fsync, real child processes and signals, and real HTTP servers on
//! 127.0.0.1 (`fake-platform`). With `EDGECAP_LONG=1` the reliability cases run their long
//! versions.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

mod adopt;
mod cameras;
mod config;
mod corrupt;
mod crash;
mod disk_full;
mod enqueue;
mod faults;
mod index_damage;
mod journal;
mod layers;
mod links;
mod never_wedge;
mod nexus;
mod operate;
mod pacing;
mod picsellia;
mod pipeline;
mod proof;
mod queue;
mod resources;
mod service;
mod unit_file;
mod vivid;
