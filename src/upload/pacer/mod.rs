//! The session pacer: how often this device may create an upload session, learnt from
//! the platform.
//!
//! # The problem
//!
//! Nexus limits upload sessions (about 15 per 5 minutes, `docs/protocols/nexus.md`) per
//! project, not per device. Fifty devices on one project each believing they have the
//! whole budget all hit 429 together, back off alike and come back together. Nothing on
//! the device knows how many others share the project, so the device learns its share
//! from the answers it gets.
//!
//! # The scheme: AIMD over a token bucket, under the platform's sliding window
//!
//! Two limits hold at once; a session goes when both allow it:
//!
//! 1. The platform's own rule as configured: at most `session_rate_limit` sessions per
//!    sliding `session_rate_window` ([`SlidingWindow`]). A device alone never waits for
//!    anything else, so a single device behaves as before this module existed.
//! 2. A token bucket filled at `rate` sessions per window, holding at most `max(1, rate)`.
//!    `rate` starts at the configured limit (the bucket full: it never binds before the
//!    first 429) and follows additive increase, multiplicative decrease — the scheme TCP
//!    uses to share a link among senders that cannot see each other (Chiu and Jain, 1989:
//!    AIMD is the linear scheme that converges to both efficiency and fairness):
//!    - **429 from the platform** (with or without `Retry-After`): `rate` halves (down to
//!      [`MIN_RATE`]), the bucket empties, and the next session waits at least the
//!      server's `Retry-After` — unless the device is *owed* (below);
//!    - **time without a 429**: `rate` grows by [`INCREASE`] sessions per window of time
//!      (up to the configured limit). The increase follows time rather than successes so
//!      that a device pushed down to a low rate, whose successes are far apart, climbs
//!      back at the same pace as the others: with a per-success increase, a device hit
//!      by two 429s in a row was starved for dozens of windows in simulation.
//!
//!
//! # Owed: bad luck is not a rate too high
//!
//! Only the device whose request meets a full window hears the 429. With plain AIMD the
//! unlucky one is punished twice — its rate halves, then it waits a whole `1 / rate` —
//! while the lucky go on at theirs, and the shares of a fleet end as uneven as a lottery's.
//! So a 429 to a device whose last accepted session is [`OWED`] of its own periods ago or
//! more (`3 / rate`) keeps the rate, gives the attempt's token back and brings the next try
//! soon: one slot's time (`window / limit`), doubling with each 429 in a row up to
//! [`RETRY_CAP`] of a window, that cap growing by an eighth per 429 past
//! [`RETRY_GROWTH`] (a platform that refuses for hours is asked less and less often). A
//! device that was served recently still halves. In the fleet model this uses the limit
//! better (93 % against 90 % for 50 devices) and evens the shares half-way through a drain
//! beyond a lottery's (1.6 against 1.9 over 100 sessions each; 4.5 against 10 over 10),
//! for about twice the 429s; the routine ones are logged at DEBUG (they are counted like
//! the others). Known weakness: counted in the device's own periods, a device whose rate
//! the start-up stampede cut to a tenth of a session per window is owed only after 30
//! windows (`docs/fleet.md`).
//!
//! The constants (β = ½, an increase of 0.2 per window gathering pace) come from a model
//! of N devices against one sliding-window server, `scripts/fleet-model`, which
//! reproduces the fleet benchmark within a few points; `docs/fleet.md` gives the choices
//! compared, and a scheme with memory (turns) that was tried there and not adopted.
//!
//! Throughput per session rises as the rate falls: [`Pacer::sessions_left`] tells the
//! batch sizing how many sessions the next window holds, so a device down to a third of a
//! session per window sends its whole backlog (up to the growth limit) in one.
//!
//! Kept across restarts: since the rate after a 429 grows linearly with time, the rate and
//! the time of the last 429 determine it for good, and that pair is all the daemon keeps
//! (`pacer.json` in the queue folder, written after each 429 that cut the rate, see
//! [`Learnt`]). A fleet
//! whose power comes back at once then starts where it left off instead of at the full
//! limit, and the uploader's random start delay spreads its first sessions. A missing or
//! unreadable file only means starting at the configured limit (logged, not an error).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Sessions per window a 429 never pushes the rate below (one session per 100 windows;
/// the time-based increase brings the next session within ~3 windows).
pub const MIN_RATE: f64 = 0.01;
/// Additive increase: sessions per window, per window of time without a 429.
pub const INCREASE: f64 = 0.2;
/// The increase gathers pace the longer no 429 comes: after `k` windows without one it is
/// `INCREASE × (1 + k / ACCELERATION_WINDOWS)` per window. Near the rate of the last 429
/// that is AIMD; far from it (the fleet thinned out, the last devices of a drain alone)
/// the rate climbs back to the limit within a few windows instead of dozens, as CUBIC's
/// probing does for TCP.
pub const ACCELERATION_WINDOWS: f64 = 2.0;

/// What the rate grows by over `dt` windows that start `calm` windows after the last 429.
fn growth(calm: f64, dt: f64) -> f64 {
    let end = calm + dt;
    INCREASE * (dt + (end * end - calm * calm) / (2.0 * ACCELERATION_WINDOWS))
}
/// Multiplicative decrease: the share of the rate kept after a 429.
pub const DECREASE: f64 = 0.5;
/// A 429 to a device whose last accepted session is this many of its own periods
/// (`1 / rate`) ago or more is taken as bad luck, not as a rate too high (see
/// [`Pacer::rate_limited`]).
pub const OWED: f64 = 3.0;
/// The longest wait, in windows, between tries of a device behind its share (before the
/// cap starts growing, after [`RETRY_GROWTH`] 429s in a row).
pub const RETRY_CAP: f64 = 0.3;
/// 429s in a row after which [`RETRY_CAP`] grows in proportion.
pub const RETRY_GROWTH: f64 = 8.0;

/// At most `limit` events per sliding `window` (the platform's rule: ~15 sessions / 300 s).
#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    events: VecDeque<Instant>,
}

impl SlidingWindow {
    /// A window allowing `limit` events per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            events: VecDeque::new(),
        }
    }

    /// How long to wait before the next event is allowed (zero: now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        while let Some(front) = self.events.front() {
            if now.saturating_duration_since(*front) >= self.window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        if self.events.len() < self.limit {
            Duration::ZERO
        } else {
            self.events.front().map_or(Duration::ZERO, |f| {
                (*f + self.window).saturating_duration_since(now)
            })
        }
    }

    /// Records an event at `now`.
    pub fn record(&mut self, now: Instant) {
        self.events.push_back(now);
    }

    /// Takes back the last event recorded.
    pub fn forget_last(&mut self) {
        self.events.pop_back();
    }

    /// Events still allowed in the window at `now`.
    pub fn available(&mut self, now: Instant) -> usize {
        let _ = self.wait_time(now);
        self.limit.saturating_sub(self.events.len())
    }
}

/// What a restart needs to go on at the learnt rate: the rate after the last 429 and when
/// that was (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Learnt {
    /// Sessions per window right after the last 429.
    pub rate: f64,
    /// When the last 429 came (Unix ms).
    pub at_ms: i64,
}

impl Learnt {
    /// Reads the file (None when there is none or it is not what this module writes).
    pub fn load(path: &std::path::Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        let l: Self = serde_json::from_slice(&text).ok()?;
        (l.rate.is_finite() && l.rate > 0.0).then_some(l)
    }

    /// Writes the file atomically (a temporary file renamed over it; no fsync: losing it
    /// only means starting at the configured limit).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    }
}

/// The sliding window plus the learnt rate (see the module doc).
#[derive(Debug)]
pub struct Pacer {
    window: SlidingWindow,
    /// The configured limit: the most the rate grows to.
    limit: f64,
    /// The window length in seconds.
    window_secs: f64,
    /// Sessions per window this device allows itself now.
    rate: f64,
    /// The bucket.
    tokens: f64,
    /// When `rate` and `tokens` were last brought up to date.
    updated: Instant,
    /// Nothing before this: a `Retry-After`, or the next try after a 429 taken as bad
    /// luck (see [`Pacer::rate_limited`]).
    hold: Option<Instant>,
    /// 429s received in all.
    limited: u64,
    /// Tokens the bucket must hold for the next session: 1 on average, drawn from
    /// [½, 1½] after each session and each 429 (see [`Pacer::draw`]).
    threshold: f64,
    /// Whether `threshold` is drawn at random (off in the tests that check waits).
    jitter: bool,
    /// Windows since the last 429 (or since the start).
    calm: f64,
    /// The last accepted session (or the start).
    last_accepted: Instant,
    /// 429s since the last accepted session.
    refused_in_row: u32,
}

impl Pacer {
    /// A pacer for `limit` sessions per `window`, at full rate.
    pub fn new(limit: u32, window: Duration, now: Instant) -> Self {
        let limit = f64::from(limit.max(1));
        Self {
            window: SlidingWindow::new(limit as u32, window),
            limit,
            window_secs: window.as_secs_f64().max(0.001),
            rate: limit,
            tokens: limit,
            updated: now,
            hold: None,
            limited: 0,
            threshold: 1.0,
            jitter: true,
            calm: 0.0,
            last_accepted: now,
            refused_in_row: 0,
        }
    }

    /// The same pacer with a fixed threshold of one token (tests that check waits).
    #[cfg(test)]
    pub fn steady(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Draws the next threshold. Paced devices that wait exactly `window / rate` after a
    /// 429 fall into step with the sliding window: in the fleet benchmark some retried
    /// every 11 s for two minutes and met a full window each time while others, asking
    /// often, took every freed slot. A wait drawn around its mean breaks that lock step
    /// and keeps the long-run rate (the token debt carries over).
    fn draw(&mut self) {
        self.threshold = self.spread();
    }

    /// A factor drawn from [½, 1½] (1 in the tests that check waits).
    fn spread(&self) -> f64 {
        if self.jitter {
            rand::random_range(0.5..1.5)
        } else {
            1.0
        }
    }

    /// Holds every session until `until` at least.
    fn hold_until(&mut self, until: Instant) {
        self.hold = Some(self.hold.map_or(until, |h| h.max(until)));
    }

    /// A pacer that goes on from `learnt` (a previous run's last 429, `ago` before `now`):
    /// the rate it has grown to since, the bucket holding one session.
    pub fn resume(
        limit: u32,
        window: Duration,
        now: Instant,
        learnt: Learnt,
        ago: Duration,
    ) -> Self {
        let mut p = Self::new(limit, window, now);
        let windows = ago.as_secs_f64() / p.window_secs;
        p.rate = (learnt.rate + growth(0.0, windows)).clamp(MIN_RATE, p.limit);
        p.calm = windows;
        p.tokens = p.tokens.min(1.0).min(p.rate.max(1.0));
        p
    }

    /// What a restart needs to go on at the rate learnt now (`now_ms`: Unix ms).
    pub fn learnt(&mut self, now: Instant, now_ms: i64) -> Learnt {
        Learnt {
            rate: self.rate(now),
            at_ms: now_ms,
        }
    }

    /// Brings the rate and the bucket up to `now`: the rate grows linearly with time, the
    /// bucket fills with its integral.
    fn update(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64() / self.window_secs;
        if dt <= 0.0 {
            return;
        }
        self.updated = now;
        let grown = (self.rate + growth(self.calm, dt)).min(self.limit);
        self.calm += dt;
        // Exact while below the limit; capped at the limit the fill is under-counted a
        // little, which only errs on the side of waiting.
        self.tokens = (self.tokens + (self.rate + grown) / 2.0 * dt).min(self.rate.max(1.0));
        self.rate = grown;
    }

    /// How long until the next session may be created (zero: now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.update(now);
        let held = self
            .hold
            .map_or(Duration::ZERO, |h| h.saturating_duration_since(now));
        let bucket = if self.tokens >= self.threshold {
            Duration::ZERO
        } else {
            // Solve  rate·t + slope·t²/2 = need  for t (in windows), with the slope the
            // increase has now: it only gathers pace, so this errs on the side of waiting.
            let need = self.threshold - self.tokens;
            let r = self.rate;
            let slope = INCREASE * (1.0 + self.calm / ACCELERATION_WINDOWS);
            let t = (-r + (r * r + 2.0 * slope * need).sqrt()) / slope;
            // A hair over, so that the bucket holds a whole token when woken.
            Duration::from_secs_f64(t * self.window_secs + 0.001)
        };
        self.window.wait_time(now).max(held).max(bucket)
    }

    /// A session creation is sent now.
    pub fn record(&mut self, now: Instant) {
        self.update(now);
        // A debt of up to one token: a session let through below one token is paid for
        // by the next wait.
        self.tokens = (self.tokens - 1.0).max(-1.0);
        self.draw();
        self.window.record(now);
    }

    /// The last creation never reached the server (refused connection): it costs nothing.
    pub fn forget_last(&mut self) {
        self.window.forget_last();
        self.tokens = (self.tokens + 1.0).min(self.rate.max(1.0));
    }

    /// The platform created a session.
    pub fn accepted(&mut self, now: Instant) {
        self.last_accepted = now;
        self.refused_in_row = 0;
    }

    /// The platform answered 429 to a session creation; nothing goes before
    /// `retry_after`. Returns whether the rate was cut (what a restart keeps changed):
    /// - a device that had a session accepted within its last [`OWED`] periods
    ///   (`OWED / rate`): the rate halves and the bucket empties (AIMD);
    /// - a device kept waiting longer than that is behind its share by bad luck: the rate
    ///   is kept, the attempt's token given back, and the next try comes a slot's time
    ///   later (`window / limit`), doubling with each 429 in a row up to [`RETRY_CAP`]
    ///   windows (that cap growing by an eighth per 429 past the eighth, so that a
    ///   platform refusing for hours is asked less and less often).
    pub fn rate_limited(&mut self, now: Instant, retry_after: Option<Duration>) -> bool {
        self.update(now);
        self.limited += 1;
        self.refused_in_row = self.refused_in_row.saturating_add(1);
        if let Some(r) = retry_after {
            self.hold_until(now + r);
        }
        let waited = now
            .saturating_duration_since(self.last_accepted)
            .as_secs_f64()
            / self.window_secs;
        if waited * self.rate < OWED {
            self.rate = (self.rate * DECREASE).max(MIN_RATE);
            self.tokens = 0.0;
            self.calm = 0.0;
            self.draw();
            return true;
        }
        self.tokens = (self.tokens + 1.0).min(self.rate.max(1.0));
        let m = f64::from(self.refused_in_row);
        let slots = 2f64.powf((m - 1.0).min(30.0)) / self.limit;
        let back = slots.min(RETRY_CAP * (m / RETRY_GROWTH).max(1.0));
        let wait = Duration::from_secs_f64(back * self.spread() * self.window_secs);
        self.hold_until(now + wait);
        false
    }

    /// Sessions the next window holds for this device: the room in the sliding window,
    /// and no more than the learnt rate (at least one). The batch sizing spreads the
    /// backlog over these.
    pub fn sessions_left(&mut self, now: Instant) -> usize {
        self.update(now);
        let by_rate = (self.rate.floor() as usize).max(1);
        self.window.available(now).min(by_rate)
    }

    /// Sessions per window this device allows itself now.
    pub fn rate(&mut self, now: Instant) -> f64 {
        self.update(now);
        self.rate
    }

    /// 429s received on session creation since start.
    pub fn rate_limited_total(&self) -> u64 {
        self.limited
    }
}

#[cfg(test)]
mod tests;
