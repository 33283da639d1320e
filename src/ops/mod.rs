//! Running as a service: liveness for the systemd watchdog ([`health`]), `sd_notify`
//! messages ([`notify`]), the [`snapshot`] of every number (summary line, status file,
//! `edgecap status`, `--json`), the log
//! output, journald or stderr ([`journal`]), process-wide memory settings
//! ([`memory`]), and the optional HTTP endpoint ([`http`]) with its Prometheus
//! exposition ([`metrics`]), also written for node_exporter's textfile collector
//! ([`textfile`]).

pub mod health;
pub mod http;
pub mod journal;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod snapshot;
pub mod textfile;
