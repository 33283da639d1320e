//! Running as a service: liveness for the systemd watchdog ([`health`]), `sd_notify`
//! messages ([`notify`]), the [`snapshot`] of every number (summary line, status file,
//! `edgecap status`, `--json`), the log
//! output, journald or stderr ([`journal`]), and process-wide memory settings
//! ([`memory`]).

pub mod health;
pub mod journal;
pub mod memory;
pub mod notify;
pub mod snapshot;
