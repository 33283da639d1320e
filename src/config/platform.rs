//! Limits of the platforms that both the config checks and the uploader rely on, written
//! once. Sources: the Nexus protocol notes in `docs/protocols/nexus.md`.

/// Assets one Nexus upload session may carry.
pub const NEXUS_MAX_ASSETS_PER_SESSION: usize = 5000;

/// Upload sessions Nexus lets a project create per window (the default of
/// `session_rate_limit`).
pub const NEXUS_SESSION_RATE_LIMIT: u32 = 15;

/// The window of that limit, in seconds (the default of `session_rate_window_secs`).
pub const NEXUS_SESSION_RATE_WINDOW_SECS: u64 = 300;
