//! Retry pacing and batch sizing: exponential backoff with jitter, `Retry-After` parsing,
//! and how large a batch grows to carry a backlog through the sessions left (how often
//! sessions may be created is `pacer/`).

use std::time::{Duration, SystemTime};

use crate::config::RetryPolicy;

/// Exponential backoff with ±20 % jitter: initial, ×2 each failure, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .policy
            .initial
            .saturating_mul(1u32 << exp.min(20))
            .min(self.policy.max);
        let jitter: f64 = rand::random_range(0.8..1.2);
        base.mul_f64(jitter).min(self.policy.max)
    }
}

/// The `Retry-After` of an answer, if it has one that parses (see [`parse_retry_after`]).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    let ts = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let when = SystemTime::from(ts);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Frames and bytes for the next batch. `frames` and `bytes` are the configured batch
/// limits; with a session limit (`sessions_left` in the next window, as the pacer plans
/// them) and a backlog (`backlog_frames`, `backlog_bytes`) that the sessions left could not
/// carry at that size, batches grow to the largest allowed ([`MAX_GROWN_FRAMES`] frames, or
/// the configured size if larger, and [`MAX_BATCH_GROWTH`] × `bytes`): the backlog goes in
/// the fewest sessions. Sessions are what the platform rations, per project, for every
/// device on it: a device that spread its backlog over all the sessions its window allows
/// would take the whole project's window with small batches. A long outage then drains
/// faster than 15 sessions × `batch_max_frames` per 5 minutes, and a batch's memory stays
/// bounded whatever the backlog.
pub fn batch_size(
    frames: usize,
    bytes: u64,
    backlog_frames: u64,
    backlog_bytes: u64,
    sessions_left: Option<usize>,
) -> (usize, u64) {
    let Some(left) = sessions_left else {
        return (frames, bytes);
    };
    let left = left.max(1) as u64;
    let fits = backlog_frames <= left.saturating_mul(frames as u64)
        && backlog_bytes <= left.saturating_mul(bytes);
    if fits {
        return (frames, bytes);
    }
    // As large as allowed, but no larger than the backlog needs.
    let grown_frames = backlog_frames.clamp(frames as u64, MAX_GROWN_FRAMES.max(frames) as u64);
    let grown_bytes = backlog_bytes.clamp(bytes, bytes.saturating_mul(MAX_BATCH_GROWTH));
    (grown_frames as usize, grown_bytes)
}

/// How far a batch grows on its own. Memory, not the platform, sets it: a batch holds each
/// frame's metadata, its index entry, its entry in the session request and its upload URL
/// in the answer (a 10k drain's peak fell by ~3.6 MiB with batches of 500 instead of 1000:
/// ~7 KB per frame, ~5 KB since the metadata is held as text), so the platform's 5000
/// assets per session would cost ~20 MiB more at the peak of a drain. 1000 frames put a
/// 100k drain on the 25 MB line (23.6–25.0 MiB); 750 peaked at 22.2 and 22.7 MiB, 500 at
/// 20.3 and 20.4 (alternating, 2026-11-28, BENCHMARKS.md). 750 frames of ~100 KB under the
/// default session limit (15 per 5 minutes) still carry 37 frames/s, about 30 Mbit/s: more
/// than the LTE and Wi-Fi uplinks edgecap is built for (500 would halve a fast link's
/// drain against 1000, and a fleet's backlog would take twice the sessions). A larger
/// `batch_max_frames` (up to the platform's 5000) is taken as the operator's choice of
/// speed over memory.
pub const MAX_GROWN_FRAMES: usize = 750;
/// How far [`batch_size`] may grow `batch_max_bytes`.
pub const MAX_BATCH_GROWTH: u64 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_only_when_the_sessions_left_cannot_carry_the_backlog() {
        let mb: u64 = 64 << 20;
        // No session limit (a directory), or a backlog that fits: the configured size.
        assert_eq!(batch_size(500, mb, 100_000, 10 * mb, None), (500, mb));
        assert_eq!(batch_size(500, mb, 7_500, 15 * mb, Some(15)), (500, mb));
        assert_eq!(batch_size(500, mb, 10, 1000, Some(0)), (500, mb));
        // 10,000 frames of 100 KB, 15 sessions: the largest batches (750 frames, 1 GB
        // in bytes), so 14 sessions and not 15.
        assert_eq!(
            batch_size(500, mb, 10_000, 1_000_000_000, Some(15)),
            (MAX_GROWN_FRAMES, 1_000_000_000)
        );
        // Bytes bind (200 KB frames): bytes grow though the frame count fits, to what
        // the backlog needs.
        assert_eq!(
            batch_size(500, mb, 5_000, 1_000_000_000, Some(10)),
            (MAX_GROWN_FRAMES, 1_000_000_000)
        );
        assert_eq!(batch_size(500, mb, 600, 2 * mb, Some(1)), (600, 2 * mb));
        // One session left: as large as the platform allows, bytes capped at 16x.
        assert_eq!(
            batch_size(500, mb, 100_000, 100 * mb, Some(1)),
            (MAX_GROWN_FRAMES, 16 * mb)
        );
        // A configured size above the growth limit is kept.
        assert_eq!(
            batch_size(2000, mb, 100_000, 100 * mb, Some(1)),
            (2000, 16 * mb)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let mut b = Backoff::new(RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120));
        assert!(d[1] >= Duration::from_millis(160) && d[1] <= Duration::from_millis(240));
        assert!(d[2] >= Duration::from_millis(320) && d[2] <= Duration::from_millis(480));
        assert!(d[5] <= Duration::from_secs(1));
        assert!(d[5] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(0))
        );
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", earlier),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
