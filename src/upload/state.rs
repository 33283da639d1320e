//! What the uploader is doing and why, in one word and a reason, for the status file,
//! `edgecap status`, `STATUS=`, the summary line and `/metrics`:
//!
//! | state | meaning | reason / time |
//! |---|---|---|
//! | `starting` | nothing asked yet | |
//! | `checking` | asking whether the project/datalake exists and the key is accepted | |
//! | `recovering` | asking about the last run's sessions | |
//! | `idle` | nothing to send | |
//! | `uploading` | frames are being batched and sent | |
//! | `waiting` | a limit of the platform holds the next batch | `session limit`, until |
//! | `backing off` | the platform answered with a transient error | the error, until |
//! | `refused` | the platform refuses the key, the project or a request: an operator must act | the refusal, since |
//! | `offline` | the platform cannot be reached | the error, since |
//!
//! `since` is when this state (with any reason) began, so a refusal retried every
//! minute still shows since when it has lasted. Alongside: the last success, the last error
//! (as the sink wrote it, which masks the secret; cut to 200 characters), and frames and
//! bytes delivered per minute over the last five minutes. Whether the platform answered the
//! last call (the status's `online`) is kept under the same lock as the state and changed
//! with it, so a reader never sees `refused` beside "offline" or `offline` beside "online".

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::frame::unix_ms;
use crate::ops::snapshot::UploaderStatus;

/// How far back the delivery rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(300);
/// The longest error text kept.
const MAX_ERROR_CHARS: usize = 200;

/// The short reason the state shows (the full one is the last error): the HTTP status
/// where there is one — `key or project (403)`, `503`, `429 (rate limited)` — else the
/// reason's first words.
pub fn short_reason(state: &str, reason: &str) -> String {
    let code = reason
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|c| (400..600).contains(c) && reason.contains(&format!("{c} ")));
    match (state, code) {
        ("refused", Some(c @ (401 | 403))) => format!("key or project ({c})"),
        ("refused", Some(404)) => "project or datalake not found (404)".to_string(),
        (_, Some(429)) => "429 (rate limited)".to_string(),
        (_, Some(c)) => c.to_string(),
        _ => {
            let words: Vec<&str> = reason.split_whitespace().take(8).collect();
            words.join(" ")
        }
    }
}

/// The uploader's state, shared with the status writer.
#[derive(Debug, Default)]
pub struct StateCell(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    status: UploaderStatus,
    /// Whether the platform answered the last call (false until it first does). Kept under
    /// the same lock as the state, so a reader never sees `refused` beside "offline".
    online: bool,
    /// Deliveries (time, frames, bytes), the last five minutes.
    recent: VecDeque<(SystemTime, u64, u64)>,
}

impl StateCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters `state` (with `reason`, waiting until `until`). `since` is kept when the
    /// state word does not change.
    pub fn set(&self, state: &str, reason: Option<String>, until: Option<Duration>) {
        self.lock().enter(state, reason, until);
    }

    /// Enters `state` as [`set`](Self::set) does and records, under the same lock, whether
    /// the platform answered, so no reader sees `refused` beside "offline" or `offline`
    /// beside "online". Returns whether the platform had answered before.
    pub fn set_with_link(
        &self,
        state: &str,
        reason: Option<String>,
        until: Option<Duration>,
        online: bool,
    ) -> bool {
        let mut g = self.lock();
        g.enter(state, reason, until);
        std::mem::replace(&mut g.online, online)
    }

    /// Records whether the platform answered, the state unchanged; returns what it was.
    pub fn set_online(&self, online: bool) -> bool {
        std::mem::replace(&mut self.lock().online, online)
    }

    /// Whether the platform answered the last call.
    pub fn online(&self) -> bool {
        self.lock().online
    }

    /// The budgets' figures.
    pub fn budget(&self, today: u64, month: u64, left: Option<u64>) {
        let mut g = self.lock();
        g.status.sent_today_bytes = today;
        g.status.sent_month_bytes = month;
        g.status.budget_left_bytes = left;
    }

    /// The link's figures: the next window's opening (while closed), the configured cap,
    /// the measured goodput.
    pub fn link(&self, next_window: Option<Duration>, cap: Option<u64>, goodput: Option<f64>) {
        let mut g = self.lock();
        g.status.next_window_ms = next_window.map(|d| unix_ms(SystemTime::now() + d));
        g.status.rate_cap_bytes_per_sec = cap;
        g.status.link_bytes_per_sec = goodput;
    }

    /// The session pacer's figures: sessions per window allowed now, 429s since start.
    pub fn pace(&self, sessions_per_window: f64, rate_limited: u64) {
        let mut g = self.lock();
        g.status.session_rate = Some(sessions_per_window);
        g.status.rate_limited = rate_limited;
    }

    /// The current state word.
    pub fn word(&self) -> String {
        self.lock().status.state.clone()
    }

    /// The platform accepted `frames` frames of `bytes` image bytes.
    pub fn delivered(&self, frames: u64, bytes: u64) {
        if frames == 0 {
            return;
        }
        let now = SystemTime::now();
        let mut g = self.lock();
        g.status.last_success_ms = Some(unix_ms(now));
        g.recent.push_back((now, frames, bytes));
        trim(&mut g.recent, now);
    }

    /// An error to show as the last one.
    pub fn error(&self, error: &str) {
        let mut g = self.lock();
        g.status.last_error = Some(clip(error));
        g.status.last_error_ms = Some(unix_ms(SystemTime::now()));
    }

    /// The state now, with the delivery rate.
    pub fn status(&self) -> UploaderStatus {
        self.view().0
    }

    /// The state now and whether the platform answered, read together.
    pub fn view(&self) -> (UploaderStatus, bool) {
        let now = SystemTime::now();
        let mut g = self.lock();
        trim(&mut g.recent, now);
        let (frames, bytes) = g
            .recent
            .iter()
            .fold((0, 0), |(f, b), (_, nf, nb)| (f + nf, b + nb));
        let minutes = RATE_WINDOW.as_secs_f64() / 60.0;
        let status = UploaderStatus {
            frames_per_min: frames as f64 / minutes,
            bytes_per_min: bytes as f64 / minutes,
            ..g.status.clone()
        };
        (status, g.online)
    }
}

impl Inner {
    fn enter(&mut self, state: &str, reason: Option<String>, until: Option<Duration>) {
        let now = SystemTime::now();
        let st = &mut self.status;
        if st.state != state {
            st.state = state.to_string();
            st.since_ms = unix_ms(now);
        }
        st.reason = reason.map(|r| clip(&r));
        st.until_ms = until.map(|d| unix_ms(now + d));
    }
}

fn trim(recent: &mut VecDeque<(SystemTime, u64, u64)>, now: SystemTime) {
    while recent
        .front()
        .is_some_and(|(t, _, _)| now.duration_since(*t).unwrap_or_default() > RATE_WINDOW)
    {
        recent.pop_front();
    }
}

fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_kept_while_the_word_stays_and_the_text_names_reason_and_time() {
        let c = StateCell::default();
        c.set("refused", Some("key or project (403)".into()), None);
        let first = c.status().since_ms;
        std::thread::sleep(Duration::from_millis(5));
        c.set("refused", Some("key or project (403) again".into()), None);
        let st = c.status();
        assert_eq!(st.since_ms, first);
        assert!(
            st.text()
                .starts_with("refused: key or project (403) again since "),
            "{}",
            st.text()
        );
        c.set(
            "waiting",
            Some("session limit".into()),
            Some(Duration::from_secs(90)),
        );
        let st = c.status();
        assert!(st.since_ms >= first);
        assert!(
            st.text().starts_with("waiting: session limit until "),
            "{}",
            st.text()
        );
        c.set("idle", None, None);
        assert_eq!(c.status().text(), "idle");
    }

    #[test]
    fn a_reader_sees_the_state_and_the_link_change_together() {
        let c = std::sync::Arc::new(StateCell::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.set_with_link("refused", None, None, true);
                    c.set_with_link("offline", None, None, false);
                }
            })
        };
        let mut seen = [0u32; 2];
        for _ in 0..200_000 {
            let (st, online) = c.view();
            match st.state.as_str() {
                "refused" => {
                    assert!(online, "refused beside offline");
                    seen[0] += 1;
                }
                "offline" => {
                    assert!(!online, "offline beside online");
                    seen[1] += 1;
                }
                _ => {}
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(seen[0] + seen[1] > 0, "the reader saw no state at all");
    }

    #[test]
    fn short_reasons_name_the_status_code() {
        let r = "checking project proj_x: the secret key is refused: 403 Forbidden ForbiddenError";
        assert_eq!(short_reason("refused", r), "key or project (403)");
        assert_eq!(
            short_reason(
                "backing off",
                "checking project proj_1: 503 Service Unavailable"
            ),
            "503"
        );
        assert_eq!(
            short_reason("backing off", "creating a session: 429 Too Many Requests"),
            "429 (rate limited)"
        );
        assert_eq!(
            short_reason("offline", "checking the project: error sending request"),
            "checking the project: error sending request"
        );
    }

    #[test]
    fn the_rate_counts_the_last_five_minutes() {
        let c = StateCell::default();
        c.delivered(10, 1000);
        c.delivered(5, 500);
        let st = c.status();
        assert_eq!(st.frames_per_min, 3.0);
        assert_eq!(st.bytes_per_min, 300.0);
        assert!(st.last_success_ms.is_some());
    }
}
