//! Limits of the platforms that both the config checks and the uploader rely on, written
//! once. Sources: the Nexus protocol notes in `docs/protocols/nexus.md`.

/// Assets one Nexus upload session may carry.
pub const NEXUS_MAX_ASSETS_PER_SESSION: usize = 5000;

/// Upload sessions Nexus lets a project create per window (the default of
/// `session_rate_limit`).
pub const NEXUS_SESSION_RATE_LIMIT: u32 = 15;

/// The window of that limit, in seconds (the default of `session_rate_window_secs`).
pub const NEXUS_SESSION_RATE_WINDOW_SECS: u64 = 300;

use std::time::Duration;

/// How batches of several group sets share a session budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPlan {
    /// Sessions the configured batch age would need per window at most: one per group
    /// set each time a batch ages out (full batches come on top while a backlog drains,
    /// but those grow to fit instead, see `batch_size`).
    pub per_window: u64,
    /// The batch age that keeps that within the limit: the configured age, or longer.
    pub batch_age: Duration,
}

/// Frames with different groups need different sessions (a session has one group list),
/// so with `group_sets` sets every set would open a session each `max_age`. When there is
/// more than one set and that is more than `limit` per `window`, the batch age is
/// stretched to `window × group_sets / limit`, so the sets share the budget evenly instead
/// of running into the limiter (which would stall all of them) — a busy set still sends a
/// full batch as soon as it is full. A single set keeps its age: the limiter and the
/// batch growth of `batch_size` already pace it.
pub fn session_plan(
    group_sets: usize,
    max_age: Duration,
    limit: u32,
    window: Duration,
) -> SessionPlan {
    let sets = group_sets.max(1) as u64;
    let per_set = if max_age.is_zero() {
        u64::MAX
    } else {
        window.as_millis().div_ceil(max_age.as_millis()) as u64
    };
    let fair = window.mul_f64(sets as f64 / f64::from(limit.max(1)));
    let per_window = sets.saturating_mul(per_set);
    SessionPlan {
        per_window,
        batch_age: if sets > 1 && per_window > u64::from(limit) {
            max_age.max(fair)
        } else {
            max_age
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sets_share_the_session_budget_by_stretching_the_batch_age() {
        let w = Duration::from_secs(300);
        // One set at the default age: 10 sessions per window, within 15.
        let one = session_plan(1, Duration::from_secs(30), 15, w);
        assert_eq!(one.per_window, 10);
        assert_eq!(one.batch_age, Duration::from_secs(30));
        // Two sets at 30 s would need 20: stretched to 40 s (15 per window).
        let two = session_plan(2, Duration::from_secs(30), 15, w);
        assert_eq!(two.per_window, 20);
        assert_eq!(two.batch_age, Duration::from_secs(40));
        // A single set keeps even a short age (the limiter and batch growth pace it).
        let quick = session_plan(1, Duration::from_secs(1), 15, w);
        assert_eq!(quick.per_window, 300);
        assert_eq!(quick.batch_age, Duration::from_secs(1));
        // A long age is never shortened.
        let slow = session_plan(3, Duration::from_secs(600), 15, w);
        assert_eq!(slow.batch_age, Duration::from_secs(600));
    }
}
