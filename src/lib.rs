//! edgecap: durable camera-frame capture and upload for computer-vision datasets.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view. Modules, one per concept:
//! [`config`] (the TOML file), [`capture`] (camera sources), [`encode`] (JPEG),
//! [`queue`] (durable on-disk queue), [`upload`] (sinks and the uploader), [`daemon`]
//! (tasks, signals, shutdown), [`frame`] (a captured frame and its identity),
//! [`custom_meta`] (its custom metadata as JSON text), [`ops`]
//! (running as a service: watchdog, sd_notify, status file, journald), [`schedule`]
//! (daily time windows in local time).

pub mod capture;
pub mod config;
pub mod custom_meta;
pub mod daemon;
pub mod encode;
pub mod frame;
pub mod ops;
pub mod queue;
pub mod schedule;
pub mod upload;
